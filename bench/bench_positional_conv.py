#!/usr/bin/env python3
"""HuBERT base's positional convolution by FFT: transforms as long as the padded input (the
FFT path as it first ran) against transforms of the nearest size with prime factors up to 7
(``fast_paths.fast_fft_size``, the path now), alternately, over the frame counts of
``tapt_base``'s and ``ser_attention_base``'s batches (IEMOCAP-like lengths, as
bench_encoder_step.py draws them). Forward and backward of the convolution (768 channels,
kernel 128, 16 groups, weight norm) on bf16 input, as in a training step. Prints per phase:

- awkward: batches whose padded length has a prime factor above 7;
- first pass ms: the first time each shape runs (PyTorch plans each new FFT size: cuFFT's
  plans are made on the CPU), mean per batch;
- ms: the same batches again, median of the passes, mean per batch;
- difference: the largest difference of the two ways' outputs on float32 input, relative to
  the largest output (float32 rounding; in bf16 most of it rounds away).

    python bench/bench_positional_conv.py --device cuda
    python bench/bench_positional_conv.py --device cpu
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from fairseq.models.hubert import HubertConfig
from fairseq.models.wav2vec.wav2vec2 import make_conv_pos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder_step import batch_lengths, synchronize  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from fairseq_flea.hubert.fast_paths import conv1d_by_fft, fast_fft_size, padded_input_length  # noqa: E402

PHASES = ("pretraining", "finetuning")
WAYS: Dict[str, Callable[[int], int]] = {"input length": padded_input_length, "fast sizes": fast_fft_size}


def encoder_frames(samples: int) -> int:
    """Frames HuBERT base's feature extractor makes of ``samples`` (each conv layer: (n - kernel) // stride + 1)."""
    frames = samples
    for _, kernel, stride in eval(HubertConfig().conv_feature_layers):  # fairseq's own format and parsing
        frames = (frames - kernel) // stride + 1
    return frames


def awkward(length: int) -> bool:
    """Whether ``length`` has a prime factor above 7."""
    return fast_fft_size(length) != length


def forward_and_backward(conv: torch.nn.Conv1d, x: torch.Tensor, fft_size: Callable[[int], int]) -> torch.Tensor:
    conv.forward = lambda inputs: conv1d_by_fft(conv, inputs, fft_size=fft_size)
    output = conv(x)
    output.float().sum().backward()
    return output.detach()


def timed_pass(conv, inputs: List[torch.Tensor], fft_size, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    for x in inputs:
        forward_and_backward(conv, x, fft_size)
    synchronize(device)
    return (time.perf_counter() - start) * 1000 / len(inputs)


def measure(phase: str, device: str, batches: int, passes: int) -> Dict:
    torch.manual_seed(0)
    conv = make_conv_pos(768, 128, 16).to(device)
    shapes = [(len(lengths), encoder_frames(max(lengths) if phase == "finetuning" else min(lengths)))
              for lengths in batch_lengths(phase, "base", batches)]
    padding = conv[0].padding[0]
    first, warm = {}, {name: [] for name in WAYS}
    for name, fft_size in WAYS.items():  # a fresh set of inputs per way: each shape is new to that way
        inputs = [torch.randn(size, 768, frames, device=device, dtype=torch.bfloat16) for size, frames in shapes]
        first[name] = timed_pass(conv[0], inputs, fft_size, device)
    inputs = [torch.randn(size, 768, frames, device=device, dtype=torch.bfloat16) for size, frames in shapes]
    for _ in range(passes):
        for name, fft_size in WAYS.items():
            warm[name].append(timed_pass(conv[0], inputs, fft_size, device))
    # In float32, where the two differ by rounding; bf16 output rounds most of that away.
    outputs = [forward_and_backward(conv[0], inputs[0].float(), fft_size) for fft_size in WAYS.values()]
    return {
        "phase": phase, "batches": len(shapes),
        "awkward": sum(awkward(frames + 2 * padding) for _, frames in shapes),
        "first": first, "warm": {name: statistics.median(times) for name, times in warm.items()},
        "difference": float((outputs[0] - outputs[1]).abs().max() / outputs[0].abs().max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--batches", type=int, help="batches per phase (default: 32 on cuda, 8 on cpu)")
    parser.add_argument("--passes", type=int, default=3, help="passes over the batches per way, alternately")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (--device cpu runs on the CPU)", file=sys.stderr)
        return 1
    batches = args.batches or (32 if args.device == "cuda" else 8)
    print(f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; HuBERT base's positional convolution, forward and backward")
    print("| phase | batches | awkward | first pass ms, input length | first pass ms, fast sizes | ms, input length "
          "| ms, fast sizes | faster | difference |\n|---|---|---|---|---|---|---|---|---|")
    for phase in args.phases:
        result = measure(phase, args.device, batches, args.passes)
        first, warm = result["first"], result["warm"]
        print(f"| {phase} | {result['batches']} | {result['awkward']} | {first['input length']:.1f} | "
              f"{first['fast sizes']:.1f} | {warm['input length']:.1f} | {warm['fast sizes']:.1f} | "
              f"{warm['input length'] / warm['fast sizes']:.2f}x | {result['difference']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
