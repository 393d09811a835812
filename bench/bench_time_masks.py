#!/usr/bin/env python3
"""HuBERT's time masks for the shipped configs' batches: fairseq's draw against the device's.

fairseq's ``compute_mask_indices`` (a numpy loop over the utterances, each length read back
from the padding mask with ``.item()``, the result copied to the device) against
``fairseq_flea.hubert.time_masks.span_time_mask`` (the same procedure as tensor operations on
the device), alternately, over the frame shapes of ``tapt_base``'s and ``ser_*_base``'s
batches (IEMOCAP-like lengths, as bench_encoder_step.py draws them). Prints per batch:

- host ms: how long the Python calls took before waiting for the device (the CPU time a
  training step spends on them; on CPU the whole time);
- ms: the whole draw, device included;
- waits: operators that make the CPU wait for the device (``.item()``, ``nonzero``);
- masked: masked frames per utterance, mean over the draws (the two should agree).

    python bench/bench_time_masks.py --device cuda
    python bench/bench_time_masks.py --device cpu
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from fairseq.data.data_utils import compute_mask_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder_step import batch_lengths, phase_config, synchronize  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from fairseq_flea.hubert.time_masks import MIN_MASKS, span_time_mask  # noqa: E402

SAMPLES_PER_FRAME = 320  # HuBERT's feature extractor: 16 kHz to 50 frames per second
WAITS = ("aten::_local_scalar_dense", "aten::nonzero")  # .item() and bool() come through the first
PHASES = ("pretraining", "finetuning")


def frame_padding(lengths: List[int], device: str) -> torch.Tensor:
    frames = [length // SAMPLES_PER_FRAME for length in lengths]
    return (torch.arange(max(frames))[None, :] >= torch.tensor(frames)[:, None]).to(device)


def fairseq_draw(padding: torch.Tensor, mask_prob: float, mask_length: int) -> torch.Tensor:
    mask = compute_mask_indices(tuple(padding.shape), padding, mask_prob, mask_length, "static", 0.0,
                                min_masks=MIN_MASKS)
    return torch.from_numpy(mask).to(padding.device)


def device_draw(padding: torch.Tensor, mask_prob: float, mask_length: int) -> torch.Tensor:
    return span_time_mask(tuple(padding.shape), padding, mask_prob, mask_length, MIN_MASKS, padding.device)


DRAWS = {"fairseq": fairseq_draw, "device": device_draw}


def waits(draw, padding: torch.Tensor, mask_prob: float, mask_length: int) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        draw(padding, mask_prob, mask_length)
    return sum(event.count for event in profile.key_averages() if event.key in WAITS)


def run(phase: str, device: str, batches: int, repeats: int) -> Dict[str, Dict[str, float]]:
    model = phase_config(phase, "base").model
    paddings = [frame_padding(lengths, device) for lengths in batch_lengths(phase, "base", batches)]
    times = {name: {"host": [], "total": [], "masked": []} for name in DRAWS}
    for _ in range(repeats):
        for padding in paddings:
            for name, draw in DRAWS.items():  # alternately: the machine's drift hits both
                synchronize(device)
                start = time.perf_counter()
                mask = draw(padding, model.mask_prob, model.mask_length)
                issued = time.perf_counter()
                synchronize(device)
                times[name]["host"].append(issued - start)
                times[name]["total"].append(time.perf_counter() - start)
                times[name]["masked"].append(float(mask.sum()) / len(mask))
    return {name: {"host_ms": 1e3 * statistics.median(t["host"]), "ms": 1e3 * statistics.median(t["total"]),
                   "masked": statistics.mean(t["masked"]),
                   "waits": waits(DRAWS[name], paddings[0], model.mask_prob, model.mask_length)}
            for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=16, help="batch shapes per phase (default: 16)")
    parser.add_argument("--repeats", type=int, default=5, help="draws per batch shape (default: 5)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# time masks, base configs' batch shapes, {machine}, torch {torch.__version__}, "
          f"median of {args.batches} x {args.repeats} draws")
    print("| phase | draw | host ms | ms | waits | masked frames per utterance |")
    print("|---|---|---|---|---|---|")
    for phase in PHASES:
        results = run(phase, args.device, args.batches, args.repeats)
        for name, row in results.items():
            print(f"| {phase} | {name} | {row['host_ms']:.2f} | {row['ms']:.2f} | {row['waits']} | {row['masked']:.1f} |")
        fairseq, ours = results["fairseq"], results["device"]
        print(f"{phase}: the device's draw {fairseq['host_ms'] / ours['host_ms']:.1f}x less host time, "
              f"{fairseq['ms'] / ours['ms']:.1f}x faster in all; masked frames {ours['masked'] / fairseq['masked']:.3f} of fairseq's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
