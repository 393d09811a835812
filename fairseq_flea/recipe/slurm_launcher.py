"""``--launcher slurm``: every planned step a SLURM job, through submitit.

A job waits for the jobs of its dependencies (``afterok``); when one of them fails, SLURM
cancels the jobs that wait for it (``kill-on-invalid-dep``) and the rest go on. Logs and
the job id of each step are under ``slurm/<step>/``. A re-run submits only the steps that
are not done, and leaves a job that is still queued or running in place (it waits for it
instead of submitting a second); what failed or timed out is submitted again.

A training step with several GPUs is one job on one node with that many GPUs, in which
fairseq starts its own DDP processes (``distributed_world_size``).

What SLURM cannot run ends the recipe with one line instead of a traceback or a wait that
never ends (docs/slurm.md):

- before submitting, the partition's nodes are read (``sinfo``): a default that asks for
  more than a node has (8 CPUs, 12 hours) is fitted to it; a request given on the command
  line that is too big is refused at once;
- ``sbatch`` refusing a job names the step, sbatch's own message and the flag to change,
  and cancels the jobs this run submitted before it;
- a job SLURM accepted but will never start (a pending reason such as ``PartitionConfig``
  or ``QOSMaxCpuPerJobLimit``, see ``never_start_reason``) is found while waiting: the
  line names the step, the reason, what the job asks for and what the partition offers,
  and every job the run waits for is cancelled;
- a job that fails on its node names the step, the job id, SLURM's end state and its log.
"""

import contextlib
import dataclasses
import io
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress
from fairseq_flea.recipe.steps import Plan, RunReport, Step, log_step_outcome, remove_finished_scratch, run_step_action

logger = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"}
RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
JOB_ID_FILE = "job_id"
# What the recipe asks for when the command line does not say, before fitting to the partition.
DEFAULT_CPUS_PER_TASK = 8  # data loading of a training step; threads of k-means
DEFAULT_TRAIN_MINUTES = 720  # TAPT/CPT at base size: hours on one GPU
DEFAULT_OTHER_MINUTES = 120
# squeue can fail while slurmctld is busy (a socket time-out): the waiting tolerates that this long.
QUEUE_READ_PATIENCE_S = 300.0
# sacct hears of an ended job from slurmdbd a few seconds after squeue stops listing it.
SACCT_PATIENCE_S = 15.0


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    # None: the DEFAULT_* above, or less where the partition offers less (fit_config).
    train_minutes: Optional[int] = None
    other_minutes: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    cpu_only: bool = False  # request no GPUs
    fit_to_partition: bool = True  # read the partition (sinfo) and fit or refuse before submitting
    poll_seconds: float = 10.0
    status_seconds: float = 60.0  # a line on the queue at least this often while waiting
    # How long a never-start reason must hold before the run gives up: SLURM's first reason
    # for a new job can be a coarse one (PartitionConfig), refined at a later scheduling pass
    # (PartitionTimeLimit), and the line should name the reason that stays.
    never_start_seconds: float = 30.0
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

    def with_defaults(self) -> "SlurmConfig":
        """Every request that was left open, at the recipe's default (no partition read)."""
        return dataclasses.replace(
            self, cpus_per_task=self.cpus_per_task or DEFAULT_CPUS_PER_TASK,
            train_minutes=self.train_minutes or DEFAULT_TRAIN_MINUTES,
            other_minutes=self.other_minutes or DEFAULT_OTHER_MINUTES)


# Reading SLURM ----------------------------------------------------------------------

def slurm_output(command: Sequence[str]) -> str:
    """stdout of a SLURM client command; its failure is one line naming the command."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise FleaStepError(f"{command[0]} is not on PATH: --launcher slurm needs SLURM's client commands") from None
    except subprocess.TimeoutExpired:
        raise FleaStepError(f"{' '.join(command)} did not answer within 120 s (is slurmctld up?)") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise FleaStepError(f"{' '.join(command)} failed: {message}")
    return done.stdout


def parse_minutes(text: str) -> Optional[int]:
    """A SLURM time (``infinite``, ``30``, ``5:00``, ``1:00:00``, ``2-12:00:00``) in whole
    minutes, rounded up; None where there is no limit."""
    text = text.strip()
    if text.upper() in ("", "INFINITE", "UNLIMITED", "NOT_SET", "N/A", "NONE"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if len(parts) == 1:  # minutes, or hours after days
        seconds = parts[0] * (3600 if days else 60)
    elif len(parts) == 2:  # minutes:seconds, or hours:minutes with days
        seconds = parts[0] * 3600 + parts[1] * 60 if days else parts[0] * 60 + parts[1]
    else:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    seconds += int(days or 0) * 86400
    return -(-seconds // 60)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def format_minutes(minutes: Optional[int]) -> str:
    return "no time limit" if minutes is None else f"a time limit of {minutes} min"


def gpu_count(gres: str) -> int:
    """GPUs in a gres or TRES string (``gpu:4``, ``gpu:a100:2(S:0-1),shard:8``, ``gres:gpu:1``,
    ``gres/gpu=2``); 0 for ``(null)`` or ``N/A``."""
    return sum(int(count) for count in re.findall(r"gpu(?::[\w.-]+)*[:=](\d+)", gres))


@dataclass(frozen=True)
class PartitionOffer:
    """What one job on one node of a partition can get: its biggest node's CPUs (capped by
    the partition's MaxCPUsPerNode), memory and GPUs, and the partition's time limit."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_minutes: Optional[int]

    def describe(self) -> str:
        gpus = plural(self.gpus, "GPU") if self.gpus else "no GPUs"
        return (f"partition {self.name} offers nodes of {plural(self.cpus, 'CPU')}, {self.memory_mb} MB, {gpus}, "
                f"{format_minutes(self.time_limit_minutes)}")


SINFO_FORMAT = "%P|%c|%m|%G|%l|%B"


def parse_sinfo(text: str) -> Tuple[Dict[str, PartitionOffer], Optional[str]]:
    """``sinfo --format=SINFO_FORMAT`` output: each partition's offer, and the default
    partition's name (marked ``*``). A partition with nodes of several kinds has a line per
    kind: the largest of each counts, as a job that asks for it can go to that node."""
    offers: Dict[str, PartitionOffer] = {}
    default = None
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, cpus, memory, gres, limit, max_cpus = fields
        if name.endswith("*"):
            name = name[:-1]
            default = name
        node_cpus = int(re.sub(r"\D", "", cpus) or 0)
        if max_cpus.strip().isdigit():
            node_cpus = min(node_cpus, int(max_cpus))
        offer = PartitionOffer(name, node_cpus, int(re.sub(r"\D", "", memory) or 0), gpu_count(gres),
                               parse_minutes(limit))
        earlier = offers.get(name)
        if earlier is not None:
            offer = dataclasses.replace(offer, cpus=max(offer.cpus, earlier.cpus),
                                        memory_mb=max(offer.memory_mb, earlier.memory_mb),
                                        gpus=max(offer.gpus, earlier.gpus))
        offers[name] = offer
    return offers, default


def read_partitions() -> Tuple[Dict[str, PartitionOffer], Optional[str]]:
    # --all: a hidden partition a user names on the command line is still found.
    return parse_sinfo(slurm_output(["sinfo", "--all", "--noheader", f"--format={SINFO_FORMAT}"]))


def choose_partition(offers: Dict[str, PartitionOffer], default: Optional[str], name: Optional[str]) -> PartitionOffer:
    """The offer of partition ``name`` (None: the cluster's default; ``a,b``: sbatch's choice
    of either, so the larger of each), or one line saying why not."""
    known = ", ".join(sorted(offers)) or "none"
    if name is None:
        if default is None:
            raise FleaInputError(f"the cluster has no default partition: give --slurm-partition (one of {known})")
        return offers[default]
    names = [part.strip() for part in name.split(",") if part.strip()]
    unknown = [part for part in names if part not in offers]
    if unknown or not names:
        raise FleaInputError(f"--slurm-partition {name}: no such partition {', '.join(unknown)} (sinfo lists {known})")
    chosen = [offers[part] for part in names]
    limits = [offer.time_limit_minutes for offer in chosen]
    return PartitionOffer(name, max(offer.cpus for offer in chosen), max(offer.memory_mb for offer in chosen),
                          max(offer.gpus for offer in chosen), None if None in limits else max(limits))


# Fitting the requests to the partition -----------------------------------------------

def fit_config(config: SlurmConfig, steps: Sequence[Step], offer: PartitionOffer,
               gpu_partitions: Sequence[str] = ()) -> Tuple[SlurmConfig, List[str]]:
    """``config`` with each request left open set to the recipe's default, or to what a node
    of ``offer`` has where that is less; and notes saying what was fitted. A request given
    explicitly that exceeds what the partition offers is refused (FleaInputError): fitting
    it silently would run something other than what was asked for."""
    fitted, notes = {}, []
    where = f"partition {offer.name}"
    if config.cpus_per_task is None:
        fitted["cpus_per_task"] = min(DEFAULT_CPUS_PER_TASK, offer.cpus)
        if fitted["cpus_per_task"] < DEFAULT_CPUS_PER_TASK:
            notes.append(f"{fitted['cpus_per_task']} CPUs per job, not {DEFAULT_CPUS_PER_TASK}: "
                         f"the nodes of {where} have {offer.cpus}")
    elif config.cpus_per_task > offer.cpus:
        raise FleaInputError(f"--slurm-cpus-per-task {config.cpus_per_task} asks for more CPUs than a node of {where} "
                             f"has ({offer.cpus}): give --slurm-cpus-per-task {offer.cpus} or fewer, "
                             "or another --slurm-partition")
    limit = offer.time_limit_minutes
    for key, default, flag, used in (
            ("train_minutes", DEFAULT_TRAIN_MINUTES, "--slurm-train-minutes", any(step.trains for step in steps)),
            ("other_minutes", DEFAULT_OTHER_MINUTES, "--slurm-other-minutes", any(not step.trains for step in steps))):
        value = getattr(config, key)
        if value is None:
            fitted[key] = default if limit is None else min(default, limit)
            if fitted[key] < default and used:
                notes.append(f"{flag} {fitted[key]}, not {default}: {where} has {format_minutes(limit)}"
                             + (" (a pretraining that runs out resumes from checkpoint_last.pt when the recipe "
                                "is run again)" if key == "train_minutes" else ""))
        elif used and limit is not None and value > limit:
            raise FleaInputError(f"{flag} {value} exceeds the time limit of {where} ({limit} min): "
                                 f"give {flag} {limit} or less, or another --slurm-partition")
    if config.mem_gb and config.mem_gb * 1024 > offer.memory_mb:
        raise FleaInputError(f"--slurm-mem-gb {config.mem_gb} asks for more memory than a node of {where} has "
                             f"({offer.memory_mb} MB): give --slurm-mem-gb {offer.memory_mb // 1024} or less, "
                             "or another --slurm-partition")
    gpu_steps = [] if config.cpu_only else [step for step in steps if step.gpus]
    if gpu_steps:
        if offer.gpus == 0:
            others = [name for name in gpu_partitions if name != offer.name]
            choice = f" (these have GPUs: {', '.join(others)})" if others else " (sinfo lists none)"
            first = gpu_steps[0]
            raise FleaInputError(f"step {first.name} asks for {plural(first.gpus, 'GPU')}, but {where} has no GPUs "
                                 "(no gpu gres on its nodes): add --slurm-cpu-only to run every step on CPUs, "
                                 f"or give a --slurm-partition with GPUs{choice}")
        largest = max(gpu_steps, key=lambda step: step.gpus)
        if largest.gpus > offer.gpus:
            raise FleaInputError(f"step {largest.name} asks for {largest.gpus} GPUs, but a node of {where} has "
                                 f"{offer.gpus}: give --gpus-per-step {offer.gpus} or fewer, or a --slurm-partition "
                                 "with bigger nodes")
    return dataclasses.replace(config, **fitted), notes


# sbatch refusing a job ----------------------------------------------------------------

class SbatchRefused(Exception):
    """sbatch did not take a job; the message is sbatch's own, on one line."""


def sbatch_message(text: str) -> str:
    """sbatch's error lines (``sbatch: error: ...``), without the prefix, on one line."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\s*sbatch:\s*(error:\s*)?", "", line).strip()
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or "no message"


# sbatch on GPUs: "Invalid generic resource (gres) specification", "Invalid --gpus-per-node ...".
GPU_MESSAGE = r"gres|generic resource|--gpu|gpus? (count|spec)"
# First match wins: "Invalid account or account/partition combination" is about the account.
REFUSAL_HINTS = (
    (GPU_MESSAGE, "add --slurm-cpu-only to run every step without GPUs, or give a --slurm-partition "
                                   "whose nodes have them (sinfo -o '%P %G' lists each partition's gres)"),
    (r"account", "give --slurm-account one you may use (sacctmgr show assoc user=$USER format=account)"),
    (r"qos", "give --slurm-qos one you may use (sacctmgr show assoc user=$USER format=qos)"),
    (r"feature|constraint", "give --slurm-constraint a feature the nodes have (sinfo -o '%P %f')"),
    (r"memory", "give --slurm-mem-gb at most a node's memory (sinfo -o '%P %m' in MB)"),
    (r"cpu", "give --slurm-cpus-per-task at most a node's CPUs (sinfo -o '%P %c')"),
    (r"time limit", "give --slurm-train-minutes / --slurm-other-minutes within the partition's limit "
                    "(sinfo -o '%P %l')"),
    (r"node name|nodelist|node count", "the nodes named in --slurm-config's additional must exist (sinfo -N)"),
    (r"partition", "give --slurm-partition one that sinfo lists"),
    (r"node configuration", "ask for less (--slurm-cpus-per-task, --slurm-mem-gb, --gpus-per-step) or give another "
                            "--slurm-partition"),
)


def refusal_hint(message: str, config: SlurmConfig) -> str:
    if config.cpu_only and re.search(GPU_MESSAGE, message, re.IGNORECASE):
        # --slurm-cpu-only asks for no GPUs: what sbatch refused came from an option passed through.
        return ("the GPUs come from additional in --slurm-config (--slurm-cpu-only asks for none): remove them, "
                "or give a --slurm-partition whose nodes have them (sinfo -o '%P %G')")
    for pattern, hint in REFUSAL_HINTS:
        if re.search(pattern, message, re.IGNORECASE):
            return hint
    return "fix the option sbatch names (the recipe's --slurm-* flags, or additional in --slurm-config)"


def cancel_jobs(job_ids: Sequence[str]) -> None:
    """scancel ``job_ids``; a job that has ended meanwhile is no error."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=120)


def cancelled_note(job_ids: Sequence[str], whose: str) -> str:
    """``whose``: "this run had submitted", "the run waited for"."""
    if not job_ids:
        return f"no other job to cancel ({whose} none)"
    return f"cancelled the {plural(len(job_ids), 'job')} {whose} ({' '.join(job_ids)})"


# The queue ---------------------------------------------------------------------------

@dataclass(frozen=True)
class QueuedJob:
    """One job as squeue lists it (pending, running, or ended within SLURM's MinJobAge)."""

    job_id: str
    state: str
    reason: str
    partition: str = ""
    cpus: str = ""
    nodes: str = ""
    time_limit: str = ""
    min_memory: str = ""
    tres_per_node: str = ""
    qos: str = ""
    account: str = ""
    required_nodes: str = ""

    @property
    def reason_code(self) -> str:
        """``ReqNodeNotAvail, UnavailableNodes:n1`` -> ``ReqNodeNotAvail``."""
        return self.reason.split(",")[0].split("(")[0].strip()

    def describe_request(self) -> str:
        gpus = gpu_count(self.tres_per_node)
        memory = "" if self.min_memory in ("", "0") else f", {self.min_memory} memory"
        limit = parse_minutes(self.time_limit) if re.fullmatch(r"[\d:-]+", self.time_limit) else None
        cpus = plural(int(self.cpus), "CPU") if self.cpus.isdigit() else f"{self.cpus} CPUs"
        nodes = plural(int(self.nodes), "node") if self.nodes.isdigit() else f"{self.nodes} nodes"
        return (f"it asks for {cpus} on {nodes}, {plural(gpus, 'GPU') if gpus else 'no GPUs'}{memory}, "
                f"{format_minutes(limit)}")


SQUEUE_FORMAT = "%i|%T|%r|%P|%C|%D|%l|%m|%b|%q|%a|%n"


def parse_squeue(text: str) -> Dict[str, QueuedJob]:
    jobs = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 12:
            jobs[fields[0]] = QueuedJob(*fields)
    return jobs


def read_queue() -> Dict[str, QueuedJob]:
    """This user's jobs; ``--states all`` keeps an ended job's end state (FAILED, TIMEOUT,
    OUT_OF_MEMORY) for MinJobAge after it ends, sooner than sacct has it."""
    return parse_squeue(slurm_output(["squeue", "--me", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"]))


# Pending reasons that clear only when someone changes the job or the cluster's configuration:
# the job alone asks for more than its partition, QOS or association ever allows. Against
# them stand reasons about what others use now (Priority, Resources, QOSGrp*, *PerUser*,
# AssocMaxJobsLimit...) or the job's own wait (Dependency, BeginTime, JobHeld*), which clear.
# DependencyNeverSatisfied is not among them: the run's jobs carry kill-on-invalid-dep, so
# SLURM cancels such a job itself at its next pass, and it counts as "not run", not as the
# reason to cancel every other job.
NEVER_START_REASONS = {
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS",
    "AccountNotAllowed", "QOSNotAllowed", "QOSTimeLimit", "AssociationTimeLimit", "MaxMemPerLimit",
    "ReservationDeleted", "JobHoldMaxRequeue",
}
# QOSMaxCpuPerJobLimit, AssocMaxWallDurationPerJobLimit, QOSMaxGRESPerNode, QOSMinCpuNotSatisfied, ...
PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)(Max\w*Per(Job|Node)(Limit)?|Min\w*)")


def never_start_reason(code: str) -> bool:
    """Whether a pending reason code, by its name alone, means the job will never start."""
    return code in NEVER_START_REASONS or PER_JOB_LIMIT.fullmatch(code) is not None


def expand_hostlist(hostlist: str) -> List[str]:
    hostlist = hostlist.strip()
    if hostlist in ("", "(null)", "N/A"):
        return []
    return slurm_output(["scontrol", "show", "hostnames", hostlist]).split()


def missing_nodes(job: QueuedJob) -> List[str]:
    """Nodes a ReqNodeNotAvail job needs that the cluster does not have (unknown to sinfo,
    or FUTURE: configured but not there). A node that is down or drained comes back, so
    such a job waits."""
    match = re.search(r"UnavailableNodes:(\S+)", job.reason)
    needed = set(expand_hostlist(match.group(1) if match else "")) | set(expand_hostlist(job.required_nodes))
    if not needed:
        return []
    states = dict(line.split("|", 1) for line in
                  slurm_output(["sinfo", "--all", "--Node", "--noheader", "--format=%N|%T"]).split() if "|" in line)
    return sorted(node for node in needed if node not in states or states[node].upper().startswith("FUTURE"))


def limits_note(job: QueuedJob, code: str) -> str:
    """For a QOS or association reason, the limits sacctmgr has for them (best effort: the
    accounting database may not be readable)."""
    if code.startswith("QOS") and job.qos:
        command = ["sacctmgr", "--noheader", "--parsable2", "show", "qos", job.qos,
                   "format=MaxTRESPerJob,MaxTRESPerNode,MaxWallDurationPerJob,MinTRESPerJob"]
        names, what = ("MaxTRESPerJob", "MaxTRESPerNode", "MaxWall", "MinTRESPerJob"), f"QOS {job.qos}"
    elif code.startswith("Assoc") and job.account:
        command = ["sacctmgr", "--noheader", "--parsable2", "show", "assoc", f"account={job.account}",
                   f"user={os.environ.get('USER', '')}", "format=MaxTRES,MaxTRESPerNode,MaxWallDurationPerJob"]
        names, what = ("MaxTRES", "MaxTRESPerNode", "MaxWall"), f"account {job.account}"
    else:
        return ""
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        listed = []
    values = listed[0].split("|") if listed else []
    limits = [f"{name} {value}" for name, value in zip(names, values) if value]
    return f"; {what} allows {', '.join(limits)}" if limits else f"; see the limits of {what} (sacctmgr)"


def request_fixes(job: QueuedJob, offer: PartitionOffer) -> List[str]:
    """The flags that bring what ``job`` asks for within what ``offer`` has."""
    fixes = []
    if job.cpus.isdigit() and int(job.cpus) > offer.cpus:
        fixes.append(f"--slurm-cpus-per-task {offer.cpus} or fewer")
    gpus = gpu_count(job.tres_per_node)
    if gpus > offer.gpus:
        fixes.append("--slurm-cpu-only" if offer.gpus == 0 else f"--gpus-per-step {offer.gpus} or fewer")
    if job.nodes.isdigit() and int(job.nodes) > 1:
        fixes.append("one node per job (a nodes or ntasks option in --slurm-config's additional?)")
    limit = parse_minutes(job.time_limit) if re.fullmatch(r"[\d:-]+", job.time_limit) else None
    if offer.time_limit_minutes is not None and (limit is None or limit > offer.time_limit_minutes):
        fixes.append(f"--slurm-train-minutes / --slurm-other-minutes {offer.time_limit_minutes} or less")
    return fixes


def never_start_hint(code: str, job: QueuedJob, offer: Optional[PartitionOffer]) -> str:
    """The flag that fits: what the job asks for beyond what the partition offers."""
    if code in ("PartitionConfig", "PartitionTimeLimit") and offer is not None:
        return ", ".join(request_fixes(job, offer)) or "another --slurm-partition"
    if code in ("PartitionTimeLimit", "QOSTimeLimit", "AssociationTimeLimit") or "WallDuration" in code:
        return "--slurm-train-minutes / --slurm-other-minutes within the limit, or another --slurm-partition"
    if code == "PartitionNodeLimit":
        return f"another --slurm-partition (scontrol show partition {job.partition} has its node limits)"
    if code == "BadConstraints":
        return "--slurm-constraint with features the partition's nodes have (sinfo -o '%P %f')"
    if code in ("InvalidAccount", "AccountNotAllowed"):
        return "--slurm-account with an account you may use on this partition"
    if code in ("InvalidQOS", "QOSNotAllowed"):
        return "--slurm-qos with a QOS you may use on this partition"
    if code.startswith("QOS"):
        return "another --slurm-qos, or ask for less (--slurm-cpus-per-task, --slurm-mem-gb, --gpus-per-step)"
    if code.startswith("Assoc"):
        return "another --slurm-account, or ask for less (--slurm-cpus-per-task, --slurm-mem-gb, --gpus-per-step)"
    if code == "ReqNodeNotAvail":
        return "name nodes that exist in --slurm-config's additional (nodelist, exclude; sinfo -N lists them)"
    return f"scontrol show job {job.job_id} says more"


def job_end_state(job_id: str, queue: Dict[str, QueuedJob]) -> str:
    """SLURM's end state of a job no longer active: squeue's while it still lists the job,
    else sacct's (which may lag behind: asked again for a few seconds), else "unknown"."""
    if job_id in queue and queue[job_id].state not in ACTIVE_STATES:
        return queue[job_id].state
    deadline = time.monotonic() + SACCT_PATIENCE_S
    while True:
        accounted = subprocess.run(["sacct", "--noheader", "--allocations", "--parsable2", "--format=State",
                                    "-j", job_id], capture_output=True, text=True, timeout=120)
        states = accounted.stdout.split()
        state = states[0] if accounted.returncode == 0 and states else ""
        if (state and state not in ACTIVE_STATES) or time.monotonic() > deadline:
            return state or "unknown"
        time.sleep(1.0)


END_STATE_NOTES = {
    "TIMEOUT": "it ran out of its time limit (--slurm-train-minutes / --slurm-other-minutes; a pretraining resumes "
               "from checkpoint_last.pt when the recipe is run again)",
    "OUT_OF_MEMORY": "it used more memory than it was given (--slurm-mem-gb)",
    "NODE_FAIL": "its node failed; run the recipe again",
    "BOOT_FAIL": "its node did not boot; run the recipe again",
    "PREEMPTED": "SLURM preempted it; run the recipe again",
    "DEADLINE": "it missed its deadline",
    "CANCELLED": "it was cancelled (scancel, or an administrator)",
    "COMPLETED": "it ended without writing the step's .done marker (is the work directory shared with the nodes?)",
}


# The launcher ------------------------------------------------------------------------

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
        config = self.config.with_defaults()
        gpus = 0 if config.cpu_only else step.gpus
        parameters = dict(
            job_name=f"flea:{step.name}", nodes=1, ntasks_per_node=1, cpus_per_task=config.cpus_per_task,
            time=config.train_minutes if step.trains else config.other_minutes,
            additional_parameters={"kill-on-invalid-dep": "yes", **config.additional},
        )
        if gpus:
            parameters["gpus_per_node"] = gpus
        if dependencies:
            parameters["dependency"] = "afterok:" + ":".join(dependencies)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(config, key):
                parameters[key] = getattr(config, key)
        if config.mem_gb:
            parameters["mem"] = f"{config.mem_gb}GB"
        return parameters

    def earlier_job(self, step: Step) -> Optional[str]:
        """The id of the step's job from an earlier run, if there was one."""
        id_file = os.path.join(self.step_dir(step), JOB_ID_FILE)
        return open(id_file).read().strip() if os.path.isfile(id_file) else None

    def submit(self, step: Step, dependencies: Sequence[str]) -> str:
        """Submit the step's job; SbatchRefused with sbatch's message if sbatch does not take it."""
        import submitit
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        executor = submitit.SlurmExecutor(folder=self.step_dir(step), max_num_timeout=0)
        executor.update_parameters(**self.parameters(step, dependencies))
        # submitit prints sbatch's stderr itself before it raises: kept here, it is said once, in the error line.
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                job = executor.submit(partial(run_step_in_job, step))
            except (FailedJobError, FailedSubmissionError) as error:
                raise SbatchRefused(sbatch_message(str(error))) from None
        write_text_atomically(os.path.join(self.step_dir(step), JOB_ID_FILE), f"{job.job_id}\n")
        return str(job.job_id)

    def fitted_config(self, plan: Plan) -> SlurmConfig:
        """The config with its open requests fitted to the partition, or one line refusing it."""
        try:
            offers, default = read_partitions()
        except FleaStepError as error:
            raise FleaStepError(f"{error} (fit_to_partition: false in --slurm-config submits without reading "
                                "the partition)") from None
        offer = choose_partition(offers, default, self.config.partition)
        gpu_partitions = sorted(name for name, other in offers.items() if other.gpus)
        config, notes = fit_config(self.config, plan.steps, offer, gpu_partitions)
        logger.info(f"SLURM: {offer.describe()}; each job asks for {config.cpus_per_task} CPUs"
                    + ("" if config.cpu_only else ", and the GPUs of its step"))
        for note in notes:
            logger.warning(f"SLURM: {note}")
        return config

    def submit_plan(self, plan: Plan) -> Tuple[Dict[str, str], List[str]]:
        """Every planned step's job id (an earlier run's job still queued is kept), and the
        ids this run submitted. A refusal cancels those and ends the run with one line."""
        job_ids: Dict[str, str] = {}
        submitted: List[str] = []
        queued = {job_id for job_id, job in read_queue().items() if job.state in ACTIVE_STATES}
        for step in plan.steps:
            earlier = self.earlier_job(step)
            if earlier in queued:
                logger.info(f"{step.title}: SLURM job {earlier} of an earlier run is still queued; waiting for it")
                job_ids[step.name] = earlier
                continue
            dependencies = [job_ids[dependency.name] for dependency in plan.dependencies(step)]
            try:
                job_ids[step.name] = self.submit(step, dependencies)
            except SbatchRefused as refusal:
                cancel_jobs(submitted)
                hint = refusal_hint(str(refusal), self.config)
                raise FleaInputError(f"step {step.name}: sbatch refused the job: {refusal}; {hint}; "
                                     f"{cancelled_note(submitted, 'this run had submitted')}") from None
            submitted.append(job_ids[step.name])
            logger.info(f"{step.title}: submitted as SLURM job {job_ids[step.name]} (log in {self.step_dir(step)})")
        return job_ids, submitted

    def run(self, graph: Sequence[Step], plan: Plan) -> RunReport:
        if self.config.fit_to_partition:
            self.config = self.fitted_config(plan)
        job_ids, submitted = self.submit_plan(plan)
        logger.info(f"submitted {len(submitted)} SLURM jobs; waiting for {len(job_ids)}")
        try:
            return self.wait(graph, plan, job_ids)
        except KeyboardInterrupt:
            logger.warning("the SLURM jobs go on without this process: run the recipe again to wait for them, "
                           f"or scancel them (ids in {self.job_dir}/*/{JOB_ID_FILE})")
            raise

    def wait(self, graph: Sequence[Step], plan: Plan, job_ids: Dict[str, str]) -> RunReport:
        """Until every job has left the queue: its step is done, failed, or was not run
        because a step it waits for failed (SLURM cancelled it). A job SLURM will never
        start ends the wait (and the run) once its reason has held for never_start_seconds."""
        report = RunReport()
        started = time.time()
        pending = list(plan.steps)
        suspects: Dict[str, float] = {}  # job id: since when polls have seen a never-start reason
        first_pending: Dict[str, float] = {}  # job id: when a poll first saw it pending
        last_status = 0.0
        queue_failing_since: Optional[float] = None
        while pending:
            try:
                queue = read_queue()
                queue_failing_since = None
            except FleaStepError as error:
                # slurmctld busy or restarting: try again, for a while.
                queue_failing_since = queue_failing_since or time.time()
                if time.time() - queue_failing_since > QUEUE_READ_PATIENCE_S:
                    raise
                logger.warning(f"SLURM: {error}; trying again")
                time.sleep(self.config.poll_seconds)
                continue
            waiting = {step.name: job_ids[step.name] for step in pending
                       if job_ids[step.name] in queue and queue[job_ids[step.name]].state in ACTIVE_STATES}
            suspects = self.check_never_starting(plan, waiting, queue, suspects)
            for step in list(pending):  # dependency order: a failure is known before its dependants
                job_id = job_ids[step.name]
                if step.name in waiting:
                    if queue[job_id].state == "PENDING":
                        first_pending.setdefault(job_id, time.time())
                    continue
                if step.done():
                    report.finished.append(step.name)
                    log_step_outcome(step, time.time() - started, None)
                elif any(name in report.failed or name in report.not_run for name in step.after):
                    report.not_run.append(step.name)
                    logger.error(f"{step.title}: not run, a step it waits for failed")
                else:
                    report.failed[step.name] = self.failure(step, job_id, job_end_state(job_id, queue))
                    log_step_outcome(step, None, report.failed[step.name])
                pending.remove(step)
            if pending and time.time() - last_status >= self.config.status_seconds:
                logger.info(format_status(plan, job_ids, waiting, queue, report, first_pending))
                last_status = time.time()
            if pending:
                time.sleep(self.config.poll_seconds)
        remove_finished_scratch(graph)
        return report

    def check_never_starting(self, plan: Plan, waiting: Dict[str, str], queue: Dict[str, QueuedJob],
                             suspects: Dict[str, float]) -> Dict[str, float]:
        """The waiting jobs whose pending reason says they will never start, with since
        when the polls have seen that; one that has said so for ``never_start_seconds``
        cancels every job the run waits for and ends the run with one line."""
        now = time.time()
        seen: Dict[str, float] = {}
        for name, job_id in waiting.items():
            reason = self.never_start(queue[job_id])
            if reason is None:
                continue
            if job_id not in suspects:
                logger.warning(f"SLURM: job {job_id} ({name}) is pending for {reason}, which does not clear on its "
                               f"own; giving up in {self.config.never_start_seconds:.0f} s unless it does")
            seen[job_id] = suspects.get(job_id, now)
            if now - seen[job_id] >= self.config.never_start_seconds:
                self.give_up(plan.by_name[name], queue[job_id], reason, list(waiting.values()))
        return seen

    @staticmethod
    def never_start(job: QueuedJob) -> Optional[str]:
        """The reason a pending job will never start, or None if it may."""
        if job.state != "PENDING":
            return None
        if job.reason_code == "ReqNodeNotAvail":
            try:
                absent = missing_nodes(job)
            except FleaStepError:  # sinfo did not answer this time: the next poll asks again
                return None
            return f"ReqNodeNotAvail: node {', '.join(absent)} does not exist" if absent else None
        return job.reason_code if never_start_reason(job.reason_code) else None

    def give_up(self, step: Step, job: QueuedJob, reason: str, waiting: Sequence[str]) -> None:
        cancel_jobs(waiting)
        code = job.reason_code
        try:
            offers, _ = read_partitions()
            offer = offers.get(job.partition.split(",")[0])
        except FleaStepError:
            offer = None
        offered = f"; {offer.describe()}" if offer is not None else ""
        raise FleaInputError(
            f"step {step.name}: SLURM will never start job {job.job_id} ({reason}): {job.describe_request()}"
            f"{offered}{limits_note(job, code)}; {cancelled_note(list(waiting), 'the run waited for')}; "
            f"fix: {never_start_hint(code, job, offer)}")

    def failure(self, step: Step, job_id: str, state: str) -> str:
        """One line: SLURM's end state of the job, the last line of the step's error (or
        what the state means), and the job's log."""
        from submitit.core.utils import JobPaths, pickle_load

        paths = JobPaths(self.step_dir(step), job_id=job_id, task_id=0)
        state = state.split()[0] if state.split() else "unknown"  # "CANCELLED by 0"
        if state != "TIMEOUT" and stopped_at_time_limit(str(paths.stderr)):
            # submitit's signal comes 90 s before the limit and ends the job itself: SLURM
            # records FAILED, but what happened is the time limit.
            return f"SLURM job {job_id} TIMEOUT (SLURM says {state}): {END_STATE_NOTES['TIMEOUT']} (log {paths.stderr})"
        detail = END_STATE_NOTES.get(state, "it ended without a result")
        if paths.result_pickle.exists():
            try:
                outcome, value = pickle_load(paths.result_pickle)
            except Exception:  # a result written in part by a job that was killed: the state says enough
                outcome, value = None, None
            if outcome == "error":
                detail = str(value).strip().splitlines()[-1]
        return f"SLURM job {job_id} {state}: {detail} (log {paths.stderr})"


# What submitit logs when SLURM's signal (sbatch --signal=USR2@90) says the time is up; or, when
# the signal reaches the step's own subprocess first (SLURM signals the whole job), the error that
# its death by that signal raises.
TIME_LIMIT_MARKS = ("this job is timed-out", "died with <Signals.SIGUSR2")


def stopped_at_time_limit(log_path: str) -> bool:
    """Whether a job's stderr log says submitit stopped it at its time limit."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - (1 << 20)))  # the last MiB: the signal is among the last lines
            tail = log.read()
            return any(mark.encode() in tail for mark in TIME_LIMIT_MARKS)
    except OSError:
        return False


def format_status(plan: Plan, job_ids: Dict[str, str], waiting: Dict[str, str], queue: Dict[str, QueuedJob],
                  report: RunReport, first_pending: Dict[str, float]) -> str:
    """One line on the run's jobs: how many are queued, running, done, failed; the reason
    of the one that has been pending longest."""
    states = {name: queue[job_id].state for name, job_id in waiting.items()}
    running = sum(1 for state in states.values() if state in RUNNING_STATES)
    queued = len(states) - running
    line = (f"SLURM: {queued} queued, {running} running, {len(report.finished)} done, "
            f"{len(report.failed) + len(report.not_run)} failed or not run, of {len(plan.steps)} jobs")
    pending = [(first_pending.get(job_id, time.time()), name, job_id) for name, job_id in waiting.items()
               if states[name] == "PENDING"]
    if pending:
        since, name, job_id = min(pending)
        waited = time.time() - since
        line += (f"; oldest pending: {name} (job {job_id}, {queue[job_id].reason}, "
                 f"{f'{waited:.0f} s' if waited < 120 else f'{waited / 60:.0f} min'})")
    return line
