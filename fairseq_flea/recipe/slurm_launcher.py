"""``--launcher slurm``: every planned step a SLURM job, through submitit.

A job waits for the jobs of its dependencies (``afterok``); when one of them fails, SLURM
cancels the jobs that wait for it (``kill-on-invalid-dep``) and the rest go on. Logs and
the job id of each step are under ``slurm/<step>/``. A re-run submits only the steps that
are not done, and leaves a job that is still queued or running in place (it waits for it
instead of submitting a second); what failed or timed out is submitted again.

A training step with several GPUs is one job on one node with that many GPUs, in which
fairseq starts its own DDP processes (``distributed_world_size``).
"""

import dataclasses
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Sequence

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress
from fairseq_flea.recipe.steps import Plan, RunReport, Step, log_step_outcome, remove_finished_scratch, run_step_action

logger = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
JOB_ID_FILE = "job_id"



@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    train_minutes: int = 720  # TAPT/CPT at base size: hours on one GPU
    other_minutes: int = 120
    cpus_per_task: int = 8  # data loading of a training step; threads of k-means
    mem_gb: Optional[int] = None
    cpu_only: bool = False  # request no GPUs
    poll_seconds: float = 10.0
    additional: Dict[str, str] = field(default_factory=dict)  # any other sbatch option

    @classmethod
    def keys(cls) -> List[str]:
        return [item.name for item in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(cls, path: str) -> "SlurmConfig":
        import yaml

        from fairseq_flea.io.text import read_text

        try:
            values = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as error:
            raise FleaInputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        unknown = sorted(set(values) - set(cls.keys())) if isinstance(values, dict) else ["(not a mapping)"]
        if unknown:
            raise FleaInputError(f"{path}: unknown SLURM settings {', '.join(map(str, unknown))}; "
                                 f"known: {', '.join(cls.keys())}")
        return cls(**values)

    def with_overrides(self, **values) -> "SlurmConfig":
        """This config with each value that is not None replacing its own (the command line)."""
        return dataclasses.replace(self, **{key: value for key, value in values.items() if value is not None})


def run_step_in_job(step: Step) -> None:
    """What a SLURM job runs: the step, logging to the job's log."""
    log_tool_progress()
    run_step_action(step)


class SlurmLauncher:
    def __init__(self, config: SlurmConfig, job_dir: str):
        self.config = config
        self.job_dir = job_dir

    def step_dir(self, step: Step) -> str:
        return os.path.join(self.job_dir, step.name)

    def parameters(self, step: Step, dependencies: Sequence[str]) -> dict:
        """submitit SlurmExecutor parameters of one step's job."""
        gpus = 0 if self.config.cpu_only else step.gpus
        parameters = dict(
            job_name=f"flea:{step.name}", nodes=1, ntasks_per_node=1, cpus_per_task=self.config.cpus_per_task,
            time=self.config.train_minutes if step.trains else self.config.other_minutes,
            additional_parameters={"kill-on-invalid-dep": "yes", **self.config.additional},
        )
        if gpus:
            parameters["gpus_per_node"] = gpus
        if dependencies:
            parameters["dependency"] = "afterok:" + ":".join(dependencies)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self.config, key):
                parameters[key] = getattr(self.config, key)
        if self.config.mem_gb:
            parameters["mem"] = f"{self.config.mem_gb}GB"
        return parameters

    def earlier_job(self, step: Step) -> Optional[str]:
        """The id of the step's job from an earlier run, if there was one."""
        id_file = os.path.join(self.step_dir(step), JOB_ID_FILE)
        return open(id_file).read().strip() if os.path.isfile(id_file) else None

    def submit(self, step: Step, dependencies: Sequence[str]) -> str:
        import submitit

        executor = submitit.SlurmExecutor(folder=self.step_dir(step), max_num_timeout=0)
        executor.update_parameters(**self.parameters(step, dependencies))
        job = executor.submit(partial(run_step_in_job, step))
        write_text_atomically(os.path.join(self.step_dir(step), JOB_ID_FILE), f"{job.job_id}\n")
        return str(job.job_id)

    def run(self, graph: Sequence[Step], plan: Plan) -> RunReport:
        job_ids: Dict[str, str] = {}
        queued = active_jobs()
        submitted = 0
        for step in plan.steps:
            earlier = self.earlier_job(step)
            if earlier in queued:
                logger.info(f"{step.title}: SLURM job {earlier} of an earlier run is still {queued[earlier]}; "
                            "waiting for it")
                job_ids[step.name] = earlier
                continue
            job_ids[step.name] = self.submit(step, [job_ids[dependency.name] for dependency in plan.dependencies(step)])
            submitted += 1
            logger.info(f"{step.title}: submitted as SLURM job {job_ids[step.name]} (log in {self.step_dir(step)})")
        logger.info(f"submitted {submitted} SLURM jobs; waiting for {len(job_ids)}")
        try:
            return self.wait(graph, plan, job_ids)
        except KeyboardInterrupt:
            logger.warning("the SLURM jobs go on without this process: run the recipe again to wait for them, "
                           f"or scancel them (ids in {self.job_dir}/*/{JOB_ID_FILE})")
            raise

    def wait(self, graph: Sequence[Step], plan: Plan, job_ids: Dict[str, str]) -> RunReport:
        """Until every job has left the queue: its step is done, failed, or was not run
        because a step it waits for failed (SLURM cancelled it)."""
        report = RunReport()
        started = time.time()
        pending = list(plan.steps)
        while pending:
            queued = active_jobs()
            for step in list(pending):  # dependency order: a failure is known before its dependants
                job_id = job_ids[step.name]
                if job_id in queued:
                    continue
                if step.done():
                    report.finished.append(step.name)
                    log_step_outcome(step, time.time() - started, None)
                elif any(name in report.failed or name in report.not_run for name in step.after):
                    report.not_run.append(step.name)
                    logger.error(f"{step.title}: not run, a step it waits for failed")
                else:
                    report.failed[step.name] = self.failure(step, job_id)
                    log_step_outcome(step, None, report.failed[step.name])
                pending.remove(step)
            if pending:
                time.sleep(self.config.poll_seconds)
        remove_finished_scratch(graph)
        return report

    def failure(self, step: Step, job_id: str) -> str:
        """One line: the last line of the step's error, or SLURM's state of its job."""
        from submitit.core.utils import JobPaths, pickle_load

        paths = JobPaths(self.step_dir(step), job_id=job_id, task_id=0)
        reason = f"ended as {job_state(job_id)} without a result (time limit, cancelled or killed)"
        if paths.result_pickle.exists():
            outcome, value = pickle_load(paths.result_pickle)
            if outcome == "error":
                reason = str(value).strip().splitlines()[-1]
        return f"SLURM job {job_id}: {reason} (log {paths.stderr})"


def active_jobs() -> Dict[str, str]:
    """State of each of this user's jobs that SLURM still has queued or running."""
    listed = subprocess.run(["squeue", "--me", "--noheader", "--format=%i|%T"], capture_output=True, text=True)
    if listed.returncode != 0:
        raise FleaStepError(f"squeue failed: {listed.stderr.strip()}")
    states = dict(line.split("|", 1) for line in listed.stdout.split())
    return {job_id: state for job_id, state in states.items() if state in ACTIVE_STATES}


def job_state(job_id: str) -> str:
    """SLURM's accounting record of an ended job ("unknown" where there is no accounting)."""
    accounted = subprocess.run(["sacct", "--noheader", "--allocations", "--parsable2", "--format=State", "-j", job_id],
                               capture_output=True, text=True)
    states = accounted.stdout.split()
    return states[0] if accounted.returncode == 0 and states else "unknown"
