"""The recipe as a graph of steps: what each step makes, what it waits for, what it needs.

A step's output is a directory; the step is done when its ``.done`` marker exists (written
last, after everything else in it). Launchers (``local_launcher``, ``slurm_launcher``) run a
``Plan``: the selected steps that are not done, in an order their dependencies allow.
"""

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError, FleaStepError

logger = logging.getLogger(__name__)

DONE_MARKER = ".done"
REMOVED_MARKER = ".removed"  # a scratch step's outputs, removed once read


def is_done(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, DONE_MARKER))


def mark_done(directory: str, seconds: Optional[float] = None) -> None:
    """The marker; it also keeps how long the step took, for the cost table."""
    took = "" if seconds is None else f"seconds: {seconds:.1f}\n"
    write_text_atomically(os.path.join(directory, DONE_MARKER), time.strftime("finished: %Y-%m-%d %H:%M:%S\n") + took)


def step_seconds(directory: str) -> Optional[float]:
    """How long the step that made ``directory`` took, if its marker (or what is left of it) says."""
    marker = next((path for path in (os.path.join(directory, name) for name in (DONE_MARKER, REMOVED_MARKER))
                   if os.path.isfile(path)), None)
    if marker is None:
        return None
    for line in open(marker).read().splitlines():
        if line.startswith("seconds: "):
            return float(line.split()[1])
    return None


@dataclass
class Step:
    """One unit of work. ``name`` is its output directory relative to the work directory,
    so names are unique and say where to look. ``action`` must pickle (a ``functools.partial``
    of a module-level function or of a method of a picklable object): launchers run it in
    another process, or on another machine."""

    name: str
    stage: int
    description: str
    output_dir: str
    action: Callable[[], object]
    after: List[str] = field(default_factory=list)  # names of the steps whose outputs it reads
    gpus: int = 0  # GPUs it uses (fairseq's DDP for a training step); 0: CPU work
    trains: bool = False  # a fairseq training run: hours, not minutes
    kind: str = ""  # what sort of work, e.g. "CPT": steps of a kind cost about the same
    # Outputs only its dependants read (layer features): removed once they are all done,
    # and made again only if a dependant is to run.
    scratch: bool = False

    @property
    def title(self) -> str:
        return f"stage {self.stage} {self.description}"

    def done(self) -> bool:
        return is_done(self.output_dir)


def run_step_action(step: Step) -> None:
    """What every launcher runs for a step, wherever it runs: its action, then the marker."""
    os.makedirs(step.output_dir, exist_ok=True)
    start = time.time()
    step.action()
    mark_done(step.output_dir, time.time() - start)


@dataclass
class Plan:
    """The steps to run (not done, selected, needed) and the dependencies among them."""

    steps: List[Step]  # in dependency order
    by_name: Dict[str, Step] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {step.name: step for step in self.steps}

    def dependencies(self, step: Step) -> List[Step]:
        """Those of ``step``'s dependencies that are themselves in the plan."""
        return [self.by_name[name] for name in step.after if name in self.by_name]


def readers_of(steps: Sequence[Step]) -> Dict[str, List[Step]]:
    """For each step's name, the steps that wait for it."""
    readers: Dict[str, List[Step]] = {}
    for step in steps:
        for name in step.after:
            readers.setdefault(name, []).append(step)
    return readers


def check_graph(steps: Sequence[Step]) -> Dict[str, Step]:
    """Steps by name; every dependency names an earlier step (so the list is in dependency order)."""
    by_name: Dict[str, Step] = {}
    for step in steps:
        if step.name in by_name:
            raise ValueError(f"two steps are named {step.name}")
        for name in step.after:
            if name not in by_name:
                raise ValueError(f"step {step.name} waits for {name}, which is not an earlier step")
        by_name[step.name] = step
    return by_name


def plan_steps(steps: Sequence[Step], first_stage: int, last_stage: int) -> Plan:
    """The steps of stages ``first_stage..last_stage`` that are not done and are needed.

    A step outside those stages that a planned step waits for must be done already: it is
    named, with the stage that makes it. A scratch step runs only when a step that reads it
    is planned.
    """
    by_name = check_graph(steps)
    selected = [step for step in steps if first_stage <= step.stage <= last_stage]
    readers = readers_of(steps)
    planned: List[Step] = []
    planned_names = set()
    for step in reversed(selected):  # dependants first, so a scratch step sees whether it is read
        if step.done():
            continue
        if step.scratch and not any(reader.name in planned_names for reader in readers.get(step.name, [])):
            continue
        planned.append(step)
        planned_names.add(step.name)
    planned.reverse()
    for step in planned:
        for name in step.after:
            dependency = by_name[name]
            if name not in planned_names and not dependency.done():
                raise FleaInputError(
                    f"{step.title}: {dependency.output_dir} is missing; stage {dependency.stage} "
                    f"({dependency.description}) makes it, run that first"
                )
    return Plan(planned)


def remove_finished_scratch(steps: Sequence[Step]) -> List[str]:
    """Delete the outputs of done scratch steps whose readers are all done; returns their
    names. The marker stays, renamed ``.removed``: the step is no longer done, and its time
    still counts in the cost table."""
    readers = readers_of(steps)
    removed = []
    for step in steps:
        if step.scratch and step.done() and readers.get(step.name) \
                and all(reader.done() for reader in readers[step.name]):
            for entry in os.scandir(step.output_dir):
                if entry.name != DONE_MARKER:
                    shutil.rmtree(entry.path) if entry.is_dir() else os.remove(entry.path)
            os.replace(os.path.join(step.output_dir, DONE_MARKER), os.path.join(step.output_dir, REMOVED_MARKER))
            removed.append(step.name)
    return removed


def format_plan(steps: Sequence[Step], plan: Plan, work_dir: str) -> str:
    """``--dry-run``: one line per step of the graph: state, resources, name, dependencies."""
    planned = {step.name for step in plan.steps}
    lines = [f"{'state':<9}{'stage':<7}{'GPUs':<6}step (under {work_dir})  <- waits for"]
    for step in steps:
        removed = os.path.isfile(os.path.join(step.output_dir, REMOVED_MARKER))
        state = "run" if step.name in planned else ("done" if step.done() else ("removed" if removed else "-"))
        waits = f"  <- {', '.join(step.after)}" if step.after else ""
        lines.append(f"{state:<9}{step.stage:<7}{step.gpus:<6}{step.name}{waits}")
    gpu_steps = sum(1 for step in plan.steps if step.gpus)
    lines.append(f"{len(plan.steps)} of {len(steps)} steps would run ({gpu_steps} on GPUs); "
                 f"{sum(1 for step in steps if step.done())} are done")
    return "\n".join(lines)


def format_stage_costs(steps: Sequence[Step]) -> str:
    """Per stage and kind of step: how many there are, how many have a measured time, their
    hours, and the GPU-hours of all of them at the measured mean (a GPU step that ran on a
    CPU counts as GPU time: the table says what ran where it ran)."""
    lines = ["| stage | kind | steps | measured | mean (s) | GPU-h measured | GPU-h, all at that mean |",
             "|---|---|---|---|---|---|---|"]
    groups: Dict[tuple, List[Step]] = {}
    for step in steps:
        groups.setdefault((step.stage, step.kind or f"stage {step.stage}"), []).append(step)
    for (stage, kind), members in sorted(groups.items(), key=lambda item: item[0][0]):
        timed = [(step, step_seconds(step.output_dir)) for step in members]
        timed = [(step, seconds) for step, seconds in timed if seconds is not None]
        mean = sum(seconds for _, seconds in timed) / len(timed) if timed else None
        measured = sum(seconds * step.gpus for step, seconds in timed) / 3600
        if not any(step.gpus for step in members):
            projected = "-"
        elif mean is None:
            projected = "not measured"
        else:
            projected = f"{sum(mean * step.gpus for step in members) / 3600:.2f}"
        lines.append(f"| {stage} | {kind} | {len(members)} | {len(timed)} | "
                     f"{'-' if mean is None else f'{mean:.0f}'} | {measured:.2f} | {projected} |")
    return "\n".join(lines)


@dataclass
class RunReport:
    finished: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # name: one-line reason
    not_run: List[str] = field(default_factory=list)  # waited for a failed step

    def raise_if_failed(self) -> None:
        if not self.failed:
            return
        first, reason = next(iter(self.failed.items()))
        raise FleaStepError(
            f"{len(self.failed)} step(s) failed, {len(self.not_run)} waiting for them did not run "
            f"(each is logged above); the first: {first}: {reason}"
        )


def log_step_outcome(step: Step, seconds: Optional[float], error: Optional[str]) -> None:
    if error is None:
        logger.info(f"{step.title}: finished in {seconds:.0f} s")
    else:
        logger.error(f"{step.title}: failed: {error}")

