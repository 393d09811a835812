#!/usr/bin/env python3
"""dump_feature: batched extraction against one-utterance-at-a-time, on this CPU, side by side.

A randomly initialised HuBERT-base-size model (12 layers, 768 dims, GroupNorm first conv)
extracts layer 9 of generated utterances with IEMOCAP-like lengths (2-8 s), once alone
(--batch-seconds 0, the official script's way) and once in length-sorted batches (the
default, 100 s of padded audio per batch). Prints both times, the speed-up and the
largest absolute difference between the two feature sets (target: < 1e-4).

    python bench/bench_dump_feature.py [--utterances 24] [--batch-seconds 100]
"""

import argparse
import time

import numpy as np
import torch
from fairseq.models.hubert import HubertConfig, HubertModel
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

from fairseq_flea.feature_dump import FeatureModel, LayerFeatureExtractor

LAYER = 9
SAMPLE_RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--batch-seconds", type=float, default=100.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(label_rate=50.0), HubertPretrainingConfig(), [None]).eval()
    model = FeatureModel("random HuBERT base", hubert, SAMPLE_RATE, normalize=False, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    waveforms = [
        torch.from_numpy(0.1 * rng.standard_normal(int(rng.uniform(2, 8) * SAMPLE_RATE)).astype(np.float32))
        for _ in range(args.utterances)
    ]
    audio_seconds = sum(len(w) for w in waveforms) / SAMPLE_RATE

    timings, outputs = {}, {}
    for name, batch_seconds in (("alone", 0.0), ("batched", args.batch_seconds)):
        extractor = LayerFeatureExtractor(model, LAYER, batch_seconds=batch_seconds)
        start = time.perf_counter()
        outputs[name] = extractor.features(waveforms)
        timings[name] = time.perf_counter() - start

    difference = max((a - b).abs().max().item() for a, b in zip(outputs["alone"], outputs["batched"]))
    print(f"{args.utterances} utterances, {audio_seconds:.0f} s of audio, layer {LAYER}, {torch.get_num_threads()} threads")
    for name in ("alone", "batched"):
        print(f"{name:<8}{timings[name]:>8.1f} s   real-time factor {timings[name] / audio_seconds:.3f}")
    print(f"speed-up of batched over alone: {timings['alone'] / timings['batched']:.2f}x")
    print(f"max abs difference batched vs alone: {difference:.2e} (target < 1e-4): {'PASS' if difference < 1e-4 else 'FAIL'}")


if __name__ == "__main__":
    main()
