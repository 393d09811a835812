#!/usr/bin/env python3
"""What a training run costs before and after its steps, started the recipe's way against
fairseq-hydra-train as a new process.

The recipe runs every training in a step process forked from a server that has torch,
fairseq, the plugin and torch._dynamo imported (fairseq_flea.recipe.processes.hydra_train);
before, each step process started fairseq-hydra-train as a new Python process, which imports
all of them again. Both ways here run the same short TAPT (tapt_<size>, a few updates, its
final validation and checkpoint) on generated audio, alternately, and the bench prints the
median wall time of each, the seconds saved per training run and the ratio. The fork
server is started before the timing, as a recipe's first step starts it once for all.

    python bench/bench_training_start.py --device cuda     # base size
    python bench/bench_training_start.py --device cpu      # tiny size
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_train_throughput import PRECISION_OVERRIDES, phase_overrides, write_corpus, write_stand_in  # noqa: E402

from fairseq_flea.recipe.processes import hydra_train, hydra_train_argv, run_in_own_process  # noqa: E402

WAYS = ("new process (before)", "recipe step process (now)")


def train_in_new_process(config_dir: str, config_name: str, overrides: list, log_path: str) -> None:
    """The recipe's way before: fairseq-hydra-train as a new Python process."""
    argv = hydra_train_argv(config_dir, config_name, overrides)
    command = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
    with open(log_path, "a") as log:
        if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"fairseq-hydra-train failed (see {log_path})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", choices=sorted(PRECISION_OVERRIDES), default="bf16")
    parser.add_argument("--size", choices=["base", "tiny"], help="default: base on cuda, tiny on cpu")
    parser.add_argument("--updates", type=int, default=2, help="updates per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs each way")
    parser.add_argument("--table", help="also write the table here (markdown)")
    args = parser.parse_args()
    args.size = args.size or ("base" if args.device == "cuda" else "tiny")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (--device cpu runs the tiny size)", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="flea_training_start_") as work_dir:
        work = Path(work_dir)
        write_corpus(work / "data", train_utterances=16)
        write_stand_in(work / "stand_in.pt", args.size)
        config_dir, config_name = str(REPO_ROOT / "config" / "pretrain"), f"tapt_{args.size}"
        run_in_own_process(time.time, "fork server start")
        seconds = {way: [] for way in WAYS}
        for repeat in range(args.repeats):
            for way in WAYS:
                run = f"run{repeat}_{WAYS.index(way)}"
                overrides = phase_overrides("pretraining", work / "data", work / "stand_in.pt", work / run,
                                            args.precision, args.device, args.updates)
                log_path = str(work / f"{run}.log")
                started = time.perf_counter()
                if way == WAYS[0]:
                    train_in_new_process(config_dir, config_name, overrides, log_path)
                else:
                    run_in_own_process(partial(hydra_train, config_dir, config_name, overrides, log_path), run)
                seconds[way].append(time.perf_counter() - started)
                if not (work / run / "checkpoint_last.pt").is_file():
                    print(f"error: {way} wrote no checkpoint_last.pt (see {log_path})", file=sys.stderr)
                    return 1
                print(f"{way}: {seconds[way][-1]:.1f} s", flush=True)

    before, now = (statistics.median(seconds[way]) for way in WAYS)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    table = "\n".join([
        f"{device}, torch {torch.__version__}, tapt_{args.size}, {args.precision}, {args.updates} updates per run, "
        f"median of {args.repeats}", "",
        "| way | wall per training run (s) | runs (s) |", "|---|---|---|",
        *[f"| {way} | {statistics.median(seconds[way]):.1f} | {', '.join(f'{s:.1f}' for s in seconds[way])} |"
          for way in WAYS],
        "", f"saved per training run: {before - now:.1f} s ({before / now:.2f}x)",
    ]) + "\n"
    print("\n" + table)
    if args.table:
        Path(args.table).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
