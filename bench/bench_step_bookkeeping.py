#!/usr/bin/env python3
"""The CPU time of what fairseq's trainer does before every training step, fairseq's way
against fairseq_flea.tasks.step_bookkeeping's, alternately, median of N steps:

- seeding: ``Trainer._set_seed``'s call, fairseq's ``utils.set_torch_seed`` (``torch.manual_seed``
  and ``torch.cuda.manual_seed``) against ``step_bookkeeping.SetTorchSeed``, called as deep
  in the stack as in fairseq-hydra-train (18 frames) and checked to leave the same generator
  state;
- the mode switch: ``model.train()`` three times (twice by the trainer, once by the task) on
  HuBERT base's modules, against the model's ``train`` that returns when nothing changes.

    python bench/bench_step_bookkeeping.py            # CUDA's generators too where there is a GPU
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_encoder_step import build_model  # noqa: E402
from fairseq_flea.tasks.step_bookkeeping import (  # noqa: E402
    FAIRSEQ_SET_TORCH_SEED,
    SetTorchSeed,
    switch_train_mode_only_when_changed,
)

TRAINER_STACK_DEPTH = 18  # frames above Trainer._set_seed in fairseq-hydra-train
MODE_SWITCHES_PER_STEP = 3


def at_depth(depth: int, call: Callable[[], None]) -> None:
    if depth <= 1:
        call()
    else:
        at_depth(depth - 1, call)


def generator_states():
    return [torch.get_rng_state()] + (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def median_ms(ways: dict, steps: int) -> dict:
    """Each way's median time over ``steps`` calls, the ways alternating."""
    times = {name: [] for name in ways}
    for step in range(steps):
        for name, way in ways.items():
            start = time.perf_counter()
            way(step)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps timed per way (default: 200)")
    args = parser.parse_args()
    if torch.cuda.is_available():
        torch.cuda.init()  # as in training: the trainer has moved the model to the GPU

    for seed in (1, 12345):
        FAIRSEQ_SET_TORCH_SEED(seed)
        expected = generator_states()
        SetTorchSeed(seed)
        assert all(torch.equal(a, b) for a, b in zip(generator_states(), expected)), "different generator state"
    seeding = median_ms({
        "fairseq": lambda step: at_depth(TRAINER_STACK_DEPTH, lambda: FAIRSEQ_SET_TORCH_SEED(1337 + step)),
        "step_bookkeeping": lambda step: at_depth(TRAINER_STACK_DEPTH, lambda: SetTorchSeed(1337 + step)),
    }, args.steps)

    fairseqs = build_model("pretraining", "base").train()
    ours = switch_train_mode_only_when_changed(build_model("pretraining", "base")).train()
    assert "train" in vars(ours), "the model has a module with its own train(): nothing to time"
    modules = sum(1 for _ in fairseqs.modules())

    def switch(model: nn.Module):
        def three_switches(step: int) -> None:
            for _ in range(MODE_SWITCHES_PER_STEP):
                model.train()
        return three_switches

    switching = median_ms({"fairseq": switch(fairseqs), "step_bookkeeping": switch(ours)}, args.steps)
    ours.eval()
    assert not any(module.training for module in ours.modules())
    ours.train()
    assert all(module.training for module in ours.modules())

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"# before each training step, CPU ms, median of {args.steps}; torch {torch.__version__}, {device}")
    print("| what | fairseq | step_bookkeeping | saved per step |")
    print("|---|---|---|---|")
    print(f"| seeding ({TRAINER_STACK_DEPTH} frames deep; same generator state) | {seeding['fairseq']:.3f} "
          f"| {seeding['step_bookkeeping']:.3f} | {seeding['fairseq'] - seeding['step_bookkeeping']:.3f} |")
    print(f"| model.train() x{MODE_SWITCHES_PER_STEP}, HuBERT base ({modules} modules) | {switching['fairseq']:.3f} "
          f"| {switching['step_bookkeeping']:.3f} | {switching['fairseq'] - switching['step_bookkeeping']:.3f} |")
    total = seeding["fairseq"] + switching["fairseq"] - seeding["step_bookkeeping"] - switching["step_bookkeeping"]
    print(f"saved per training step: {total:.2f} ms of CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
