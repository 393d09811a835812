"""``--launcher local``: the plan's steps on this machine, side by side where they can be.

A step starts when every step it waits for has finished and its resources are free: a step
that uses GPUs takes that many of the free devices (and sees only them, through
``CUDA_VISIBLE_DEVICES``); a CPU step, or any step on a machine without GPUs, takes one of
``cpu_jobs`` slots. A failed step stops the steps that wait for it; the others go on.
Each step runs in a child process of its own, its output in ``logs/<step name>.log``.
"""

import logging
import multiprocessing.connection
import os
import time
from functools import partial
from typing import Dict, List, Optional, Sequence

from fairseq_flea.io.errors import FleaInputError, FleaStepError
from fairseq_flea.recipe.processes import StepProcess, start_in_own_process
from fairseq_flea.recipe.steps import Plan, RunReport, Step, log_step_outcome, remove_finished_scratch, run_step_action

logger = logging.getLogger(__name__)


def visible_devices() -> List[str]:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip() and device.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def step_log_path(log_dir: str, step: Step) -> str:
    """``logs/<step name>.log``: the log tree mirrors the work tree."""
    path = os.path.join(log_dir, step.name + ".log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


class LocalLauncher:
    def __init__(self, devices: Sequence[str], cpu_jobs: int, log_dir: str):
        if cpu_jobs < 1:
            raise FleaInputError(f"--cpu-jobs must be at least 1, got {cpu_jobs}")
        self.devices = list(devices)
        self.cpu_jobs = cpu_jobs
        self.log_dir = log_dir

    def uses_gpu(self, step: Step) -> bool:
        return step.gpus > 0 and bool(self.devices)

    def check_fits(self, plan: Plan) -> None:
        for step in plan.steps:
            if self.uses_gpu(step) and step.gpus > len(self.devices):
                raise FleaInputError(f"{step.title} needs {step.gpus} GPUs; this machine lends it "
                                     f"{len(self.devices)} ({', '.join(self.devices)})")

    def run(self, graph: Sequence[Step], plan: Plan) -> RunReport:
        """Run ``plan``; scratch outputs of ``graph`` are removed as soon as their readers are done."""
        self.check_fits(plan)
        os.makedirs(self.log_dir, exist_ok=True)
        report = RunReport()
        waiting: List[Step] = list(plan.steps)
        finished = set()
        running: Dict[int, tuple] = {}  # sentinel: (step, process, devices, start time)
        free_devices, free_cpu_slots = list(self.devices), self.cpu_jobs
        try:
            while waiting or running:
                for step in list(waiting):
                    if any(name in report.failed or name in report.not_run for name in step.after):
                        waiting.remove(step)
                        report.not_run.append(step.name)
                        logger.error(f"{step.title}: not run, a step it waits for failed")
                        continue
                    if any(dependency.name not in finished for dependency in plan.dependencies(step)):
                        continue
                    if self.uses_gpu(step):
                        if len(free_devices) < step.gpus:
                            continue
                        devices, free_devices = free_devices[:step.gpus], free_devices[step.gpus:]
                    elif free_cpu_slots > 0:
                        devices, free_cpu_slots = None, free_cpu_slots - 1
                    else:
                        continue
                    waiting.remove(step)
                    process = self.start(step, devices)
                    running[process.sentinel] = (step, process, devices, time.time())
                if not running:
                    break
                ready = multiprocessing.connection.wait(
                    [entry[1].sentinel for entry in running.values()] + [entry[1].connection for entry in running.values()])
                for sentinel in {self.sentinel_of(running, item) for item in ready}:
                    step, process, devices, started = running.pop(sentinel)
                    if devices is None:
                        free_cpu_slots += 1
                    else:
                        free_devices += devices
                    error = self.outcome(process)
                    log_step_outcome(step, time.time() - started, error)
                    if error is None:
                        finished.add(step.name)
                        report.finished.append(step.name)
                        remove_finished_scratch(graph)
                    else:
                        report.failed[step.name] = error
        finally:
            for _, process, _, _ in running.values():
                process.stop()
        return report

    @staticmethod
    def sentinel_of(running: Dict[int, tuple], ready) -> int:
        for sentinel, entry in running.items():
            if ready == sentinel or ready is entry[1].connection:
                return sentinel
        raise KeyError(ready)

    def start(self, step: Step, devices: Optional[List[str]]) -> StepProcess:
        env = {} if devices is None else {"CUDA_VISIBLE_DEVICES": ",".join(devices)}
        placement = "on CPU" if devices is None else f"on GPU {','.join(devices)}"
        log_path = step_log_path(self.log_dir, step)
        logger.info(f"{step.title}: running -> {step.output_dir} ({placement}, log {log_path})")
        return start_in_own_process(partial(run_step_action, step), step.title, env, log_path)

    @staticmethod
    def outcome(process: StepProcess) -> Optional[str]:
        try:
            process.result()
        except (FleaInputError, FleaStepError) as error:
            return str(error)
        finally:
            process.stop()
        return None

