#!/usr/bin/env python3
"""Prediction speed: real-time factor (processing s / audio s) of a random HuBERT-base-size
ser_attention_classification model predicting generated 2-8 s utterances through
EmotionRecognizer.predict_waveforms (as tools/predict.py), one at a time and in length-sorted
batches, and batched's speed-up over alone. Target: RTF <= 0.1 both ways (weights do not
change the arithmetic).

    python bench/bench_predict_rtf.py [--device cpu|cuda] [--utterances 12] [--threads 2] [--batch-seconds 60] [--repeats 2]
"""

import argparse
import os
import platform
import time
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401  (registers the model)
from fairseq_flea.inference.recognizer import EmotionRecognizer
from fairseq_flea.models.ser_attention_classification import (
    SerAttentionClassificationModel,
    SerClassificationConfig,
)

SAMPLE_RATE = 16000
CLASS_NAMES = ["ang", "hap", "neu", "sad"]
TARGET_RTF = 0.1


def hubert_base_classifier() -> SerAttentionClassificationModel:
    """The fine-tuned model's architecture with random weights (HubertConfig's defaults are base)."""
    encoder_config = OmegaConf.create(
        {"model": {"_name": "hubert", "label_rate": 50.0}, "task": {"sample_rate": SAMPLE_RATE, "normalize": False}}
    )
    cfg = OmegaConf.structured(SerClassificationConfig(w2v_path="random", normalize=False, pooling="attention"))
    cfg.w2v_args = encoder_config
    return SerAttentionClassificationModel.build_model(cfg, SimpleNamespace(class_names=CLASS_NAMES))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def generated_utterances(count: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [
        (0.1 * rng.standard_normal(int(rng.uniform(2, 8) * SAMPLE_RATE))).astype(np.float32) for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    recognizer = EmotionRecognizer(hubert_base_classifier(), CLASS_NAMES, SAMPLE_RATE, False, device)
    parameters = sum(p.numel() for p in recognizer.model.parameters())
    waveforms = generated_utterances(args.utterances)
    audio_seconds = sum(len(w) for w in waveforms) / SAMPLE_RATE
    recognizer.predict_waveforms(waveforms[:1])  # first call allocates; not what a user waits for per file

    runs = {
        "alone": lambda: [recognizer.predict_waveforms([w])[0] for w in waveforms],
        "batched": lambda: recognizer.predict_waveforms(waveforms, batch_seconds=args.batch_seconds),
    }
    timings, predictions = {name: [] for name in runs}, {}
    # Interleaved repeats, best kept: on a shared machine another process's burst then
    # slows one repeat, not one way of predicting.
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            predictions[name] = run()
            timings[name].append(time.perf_counter() - start)

    difference = max(
        np.abs(a.probabilities - b.probabilities).max() for a, b in zip(predictions["alone"], predictions["batched"])
    )
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs visible, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; 1-minute load average {load_before:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end (this bench alone brings it to about its thread count; "
          f"more means other processes competed for the CPU)")
    print(f"model: HuBERT base size, {parameters / 1e6:.1f} M parameters, random weights")
    print(f"{args.utterances} utterances of 2-8 s, {audio_seconds:.0f} s of audio, batches of {args.batch_seconds:g} s, "
          f"best of {args.repeats}")
    for name in runs:
        best = min(timings[name])
        rtf = best / audio_seconds
        every = ", ".join(f"{t:.1f}" for t in timings[name])
        print(f"{name:<8}{best:>7.1f} s ({every})   RTF {rtf:.3f} (target <= {TARGET_RTF}): "
              f"{'PASS' if rtf <= TARGET_RTF else 'FAIL'}")
    print(f"speed-up of batched over alone: {min(timings['alone']) / min(timings['batched']):.2f}x")
    print(f"max abs probability difference batched vs alone: {difference:.1e}")


if __name__ == "__main__":
    main()
