#!/usr/bin/env python3
"""One-command GPU check: the FLEA recipe (fairseq_flea.demo: its corpus, a HuBERT-base-size
stand-in built once, stages 1-5 with the base configs and few updates) in fp16 and in bf16,
then the dump, training-throughput and prediction benches, and one table: each step's wall
time; for trainings fairseq's last-epoch meters (updates/s, audio s per s) and the seconds
from "done training" to the process's end; peak GPU memory and mean utilisation (nvidia-smi,
once a second). The throughput bench's own table: the work dir's train_throughput.md.
Exits non-zero if any step or bench fails.

    python bench/gpu_check.py [--work-dir DIR] [--precisions fp16 bf16] [--table PATH]
    python bench/gpu_check.py --device cpu --size tiny   # rehearsal without a GPU
"""

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf

from fairseq_flea.demo.flea_demo import DemoConfig, FleaDemo
from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress
from fairseq_flea.recipe.flea_recipe import PRECISION_OVERRIDES

BENCH_DIR = Path(__file__).resolve().parent
STEP_START = re.compile(r"stage (\d) (.*?): running -> (.*?)(?: \(on .*\))?$")
STEP_END = re.compile(r"stage (\d) (.*?): finished in")
DONE_TRAINING = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\].*done training in")


class GpuSampler(threading.Thread):
    """nvidia-smi once a second: (time, utilisation %, memory used MiB) of GPU 0."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: List[Tuple[float, float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                output = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True, text=True, timeout=5,
                ).stdout.split(",")
                self.samples.append((time.time(), float(output[0]), float(output[1])))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self.stopped.wait(1.0)

    def window(self, start: float, end: float) -> Tuple[Optional[float], Optional[float]]:
        """Mean utilisation and peak memory (GiB) between two times; None without samples."""
        inside = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not inside:
            return None, None
        return sum(u for u, _ in inside) / len(inside), max(m for _, m in inside) / 1024


@dataclass
class StepRecord:
    name: str
    directory: str
    start: float
    end: Optional[float] = None
    meters: Dict[str, float] = field(default_factory=dict)


class StepRecorder(logging.Handler):
    """Collects the start and end of every recipe step from its log lines."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.steps: List[StepRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        started, ended = STEP_START.search(message), STEP_END.search(message)
        if started:
            self.steps.append(StepRecord(f"{self.prefix} {started.group(2)}", started.group(3), record.created))
        elif ended:
            for step in reversed(self.steps):
                if step.end is None:
                    step.end = record.created
                    break


def tokens_per_audio_second(save_dir: Path) -> float:
    """What fairseq's words-per-second counts: HuBERT's label frames, the classifier's samples."""
    cfg = OmegaConf.load(save_dir / "hydra" / ".hydra" / "config.yaml")
    return float(cfg.model.label_rate) if "hubert" in cfg.task._name else float(cfg.task.sample_rate)


def training_meters(train_log: Path, end: float) -> Dict[str, float]:
    """fairseq's last [train] record (ups, audio seconds per second) and the exit delay."""
    meters: Dict[str, float] = {}
    if not train_log.is_file():
        return meters
    lines = train_log.read_text(errors="replace").splitlines()
    epochs = [json.loads(line[line.index("{"):]) for line in lines if "[train][INFO]" in line and "{" in line]
    if epochs:
        last = epochs[-1]
        per_second = tokens_per_audio_second(train_log.parent)
        meters["updates_per_second"] = float(last["train_ups"])
        meters["audio_seconds_per_second"] = float(last["train_wps"]) / per_second
    done = [DONE_TRAINING.search(line) for line in lines]
    done = [match for match in done if match]
    if done:
        finished = datetime.strptime(done[-1].group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        meters["exit_delay_seconds"] = end - finished
    return meters


def run_demo_at_precision(work_dir: Path, shared_from: Optional[Path], precision: str, args) -> List[StepRecord]:
    """The demo in ``work_dir``; corpus and stand-in linked from ``shared_from`` when given."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if shared_from is not None:
        for name in ("corpus", "stand_in"):
            link = work_dir / name
            if not link.exists():
                link.symlink_to(shared_from / name, target_is_directory=True)
    device_overrides = ["common.cpu=true"] if args.device == "cpu" else ["common.cpu=false"]
    cfg = DemoConfig(
        work_dir=str(work_dir), size=args.size, overrides=[*device_overrides, *PRECISION_OVERRIDES[precision]],
        scratch_updates=args.updates, pretrain_updates=args.updates, finetune_epochs=args.epochs,
        layer=args.layer, unit_clusters=args.clusters, pseudo_clusters=args.clusters,
    )
    recorder = StepRecorder(precision)
    logging.getLogger("fairseq_flea.recipe").addHandler(recorder)
    try:
        FleaDemo(cfg).run()
    finally:
        logging.getLogger("fairseq_flea.recipe").removeHandler(recorder)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the demo's attention plots ran a model in this process
    for step in recorder.steps:
        if step.end is not None:
            step.meters = training_meters(Path(step.directory) / "train.log", step.end)
    return recorder.steps


def run_bench(name: str, script: str, options: Sequence[str], log_dir: Path) -> StepRecord:
    step = StepRecord(f"bench {name}", str(log_dir), time.time())
    result = subprocess.run([sys.executable, str(BENCH_DIR / script), *options], capture_output=True, text=True)
    step.end = time.time()
    (log_dir / f"{Path(script).stem}.txt").write_text(result.stdout + result.stderr)
    print(result.stdout, flush=True)
    if result.returncode != 0:
        raise FleaInputError(f"{script} failed (see {log_dir / Path(script).stem}.txt): {result.stderr.strip()[-300:]}")
    return step


def format_table(steps: Sequence[StepRecord], sampler: GpuSampler, started: float) -> str:
    def cell(value: Optional[float], digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| step | wall (s) | updates/s | audio s per s | exit delay (s) | peak GPU memory (GiB) | mean GPU util (%) |",
             "|---|---|---|---|---|---|---|"]
    for step in [*steps, StepRecord("whole check", "", started, time.time())]:
        end = step.end if step.end is not None else time.time()
        utilisation, memory = sampler.window(step.start, end)
        meters = step.meters
        lines.append(
            f"| {step.name} | {end - step.start:.1f} | {cell(meters.get('updates_per_second'), 2)} | "
            f"{cell(meters.get('audio_seconds_per_second'), 0)} | {cell(meters.get('exit_delay_seconds'), 1)} | "
            f"{cell(memory, 1)} | {cell(utilisation, 0)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="default: a new temporary directory")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISION_OVERRIDES), default=["fp16", "bf16"])
    parser.add_argument("--updates", type=int, default=30, help="stand-in, TAPT and CPT updates")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--layer", type=int, help="layer of the units and pseudo-emotion labels (default 9 base, 1 tiny)")
    parser.add_argument("--clusters", type=int, default=24)
    parser.add_argument("--table", help="also write the table here (markdown)")
    parser.add_argument("--skip-benches", action="store_true")
    args = parser.parse_args()
    args.layer = args.layer or (9 if args.size == "base" else 1)
    log_tool_progress()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; this check is for GPU machines (--device cpu rehearses it)", file=sys.stderr)
        return 1
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="flea_gpu_check_")).resolve()
    sampler = GpuSampler()
    if args.device == "cuda":
        sampler.start()
    started = time.time()
    steps: List[StepRecord] = []
    failure = None
    try:
        first = None
        for precision in args.precisions:
            steps += run_demo_at_precision(work / precision, first, precision, args)
            first = first or work / precision
        if not args.skip_benches:
            on_gpu = args.device == "cuda"
            steps.append(run_bench("dump_feature", "bench_dump_feature.py", [
                "--device", args.device, "--utterances", "96" if on_gpu else "2"], work))
            steps.append(run_bench("train_throughput", "bench_train_throughput.py", [
                "--device", args.device, "--precision", *args.precisions,
                "--table", str(work / "train_throughput.md")], work))
            steps.append(run_bench("predict_rtf", "bench_predict_rtf.py", [
                "--device", args.device, "--utterances", "48" if on_gpu else "2", "--repeats", "2" if on_gpu else "1"],
                work))
    except (FleaInputError, FleaStepError, OSError) as error:
        failure = str(error)
    sampler.stopped.set()
    table = format_table(steps, sampler, started)
    print(f"\nGPU check: {'FAILED' if failure else 'passed'} in {time.time() - started:.0f} s, work dir {work}\n")
    print(table)
    if args.table:
        Path(args.table).write_text(table)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
