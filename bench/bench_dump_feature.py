#!/usr/bin/env python3
"""dump_feature: batched layer-9 extraction against one utterance at a time (the official
script's way, --batch-seconds 0) with a random HuBERT-base-size model on generated 2-8 s
utterances: both times, the speed-up and the largest difference (target < 1e-4). On a GPU
also both with TF32 allowed (the extractor switches it off): the price of exactness.

    python bench/bench_dump_feature.py [--device cpu|cuda] [--utterances 24] [--batch-seconds 100]
"""

import argparse
import time

import numpy as np
import torch
from fairseq.models.hubert import HubertConfig, HubertModel
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

from fairseq_flea.units.layer_features import FeatureModel, LayerFeatureExtractor

LAYER = 9
SAMPLE_RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--batch-seconds", type=float, default=100.0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(label_rate=50.0), HubertPretrainingConfig(), [None]).eval().to(device)
    model = FeatureModel("random HuBERT base", hubert, SAMPLE_RATE, normalize=False, device=device)
    rng = np.random.default_rng(0)
    waveforms = [
        torch.from_numpy(0.1 * rng.standard_normal(int(rng.uniform(2, 8) * SAMPLE_RATE)).astype(np.float32)).to(device)
        for _ in range(args.utterances)
    ]
    audio_seconds = sum(len(w) for w in waveforms) / SAMPLE_RATE

    runs = {"alone": (0.0, False), "batched": (args.batch_seconds, False)}
    if device.type == "cuda":
        runs.update({"alone, TF32": (0.0, True), "batched, TF32": (args.batch_seconds, True)})
        LayerFeatureExtractor(model, LAYER, batch_seconds=args.batch_seconds).features(waveforms[:4])  # warm-up
    timings, outputs = {}, {}
    for name, (batch_seconds, allow_tf32) in runs.items():
        extractor = LayerFeatureExtractor(model, LAYER, batch_seconds=batch_seconds, allow_tf32=allow_tf32)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs[name] = extractor.features(waveforms)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - start

    def difference(a: str, b: str) -> float:
        return max((x - y).abs().max().item() for x, y in zip(outputs[a], outputs[b]))

    print(f"{args.utterances} utterances, {audio_seconds:.0f} s of audio, layer {LAYER}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"))
    for name in runs:
        print(f"{name:<15}{timings[name]:>8.2f} s   real-time factor {timings[name] / audio_seconds:.4f}"
              f"   {audio_seconds / timings[name]:,.0f}x real time")
    print(f"speed-up of batched over alone: {timings['alone'] / timings['batched']:.2f}x")
    exact = difference("alone", "batched")
    print(f"max abs difference batched vs alone: {exact:.2e} (target < 1e-4): {'PASS' if exact < 1e-4 else 'FAIL'}")
    if device.type == "cuda":
        print(f"with TF32 allowed: difference {difference('alone, TF32', 'batched, TF32'):.2e}; batched in full "
              f"float32 takes {timings['batched'] / timings['batched, TF32']:.2f}x the time of batched with TF32")

if __name__ == "__main__":
    main()
