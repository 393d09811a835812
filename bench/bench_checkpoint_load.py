#!/usr/bin/env python3
"""Loading a pretraining checkpoint: fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``
(reads the whole file) against ``fairseq_flea.hubert.checkpoints.load_checkpoint_state``
(memory-maps it), alternately, median of N. Every CPT, fine-tuning and feature dump starts by
loading a TAPT or CPT ``checkpoint_last.pt``: the model's weights and the optimizer's two
moments, 1.1 GB at base size, of which they use the weights only. Both ways here end with the
model's weights copied out of the loaded state, as building a model does, and the bench
checks that they are the same.

    python bench/bench_checkpoint_load.py               # base size, 1.1 GB
    python bench/bench_checkpoint_load.py --size tiny   # smoke test
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_train_throughput import write_stand_in  # noqa: E402
from fairseq import checkpoint_utils  # noqa: E402

from fairseq_flea.hubert.checkpoints import load_checkpoint_state  # noqa: E402


def write_pretraining_checkpoint(path: Path, size: str) -> int:
    """A stand-in of the size with an optimizer state as AdamW leaves it (two fp32 moments per
    weight), as TAPT's checkpoint_last.pt holds; returns the file's size in bytes."""
    write_stand_in(path, size)
    state = torch.load(path, map_location="cpu")
    weights = [weight.float() for weight in state["model"].values() if torch.is_floating_point(weight)]
    state["last_optimizer_state"] = {
        "state": {index: {"step": torch.tensor(20000.0), "exp_avg": torch.randn_like(weight),
                          "exp_avg_sq": torch.rand_like(weight)} for index, weight in enumerate(weights)},
        "param_groups": [{"lr": 5e-4, "params": list(range(len(weights)))}],
    }
    torch.save(state, path)
    return path.stat().st_size


def model_weights(load: Callable[[str], Dict], path: str) -> Dict[str, torch.Tensor]:
    return {name: weight.clone() for name, weight in load(path)["model"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--repeats", type=int, default=3, help="loads per way (default: 3)")
    args = parser.parse_args()
    ways = {"fairseq (load_checkpoint_to_cpu)": checkpoint_utils.load_checkpoint_to_cpu,
            "memory-mapped (load_checkpoint_state)": load_checkpoint_state}
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "checkpoint_last.pt"
        size = write_pretraining_checkpoint(path, args.size)
        seconds = {name: [] for name in ways}
        loaded = {}
        for _ in range(args.repeats):
            for name, load in ways.items():
                start = time.perf_counter()
                loaded[name] = model_weights(load, str(path))
                seconds[name].append(time.perf_counter() - start)
    (fairseq_name, fairseqs), (our_name, ours) = loaded.items()
    assert fairseqs.keys() == ours.keys() and all(torch.equal(fairseqs[k], ours[k]) for k in fairseqs), "weights differ"
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"# {args.size} pretraining checkpoint, {size / 2**30:.2f} GiB, torch {torch.__version__}, "
          f"median of {args.repeats} (file in the page cache after the first load)")
    print("| way | seconds | all loads |")
    print("|---|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {medians[name]:.3f} | {', '.join(f'{value:.2f}' for value in values)} |")
    print(f"memory-mapped against fairseq: {medians[fairseq_name] / medians[our_name]:.1f}x faster, "
          f"{medians[fairseq_name] - medians[our_name]:.2f} s saved per load; the same weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
