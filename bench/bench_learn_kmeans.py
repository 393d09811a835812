#!/usr/bin/env python3
"""learn_kmeans: ours (--backend faiss) against fairseq's installed learn_kmeans.py, side by side.

Both run as the command-line scripts users run, on the same features written in the HuBERT
recipe's format, and both models are scored with the same inertia (mean squared distance of
every frame to its nearest centre). The features are a generated Gaussian mixture of
overlapping clusters (this machine has no real HuBERT features of this size): by default
200,000 frames x 768 dims, 100 clusters (FLEA uses 50-150). Targets: >= 10x faster, inertia
no more than 0.5 % worse.

    python bench/bench_learn_kmeans.py [--frames 200000] [--dim 768] [--clusters 100]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fairseq
import numpy as np

from fairseq_flea.units.kmeans import load_cluster_centers, mean_squared_distance

REPO_ROOT = Path(__file__).resolve().parents[1]
FAIRSEQ_LEARN_KMEANS = Path(fairseq.__file__).parent / "examples" / "hubert" / "simple_kmeans" / "learn_kmeans.py"


def write_mixture_features(feat_dir: Path, frames: int, dim: int, seed: int = 0) -> np.ndarray:
    """Frames drawn around 4x as many latent centres as clusters asked for, in two shards."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((400, dim)).astype(np.float32)
    features = centres[rng.integers(len(centres), size=frames)] + 0.75 * rng.standard_normal((frames, dim), dtype=np.float32)
    feat_dir.mkdir(parents=True, exist_ok=True)
    for rank, shard in enumerate(np.array_split(features, 2)):
        np.save(feat_dir / f"bench_{rank}_2.npy", shard)
        lengths = [200] * (len(shard) // 200) + ([len(shard) % 200] if len(shard) % 200 else [])
        (feat_dir / f"bench_{rank}_2.len").write_text("".join(f"{n}\n" for n in lengths))
    return features


def timed(command) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{command[1]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        features = write_mixture_features(work / "features", args.frames, args.dim)
        common = [str(work / "features"), "bench", "2"]
        fairseq_seconds = timed([sys.executable, str(FAIRSEQ_LEARN_KMEANS), *common, str(work / "fairseq.bin"), str(args.clusters)])
        ours_seconds = timed([
            sys.executable, str(REPO_ROOT / "tools" / "learn_kmeans.py"), *common, str(work / "ours.bin"),
            str(args.clusters), "--backend", "faiss",
        ])
        fairseq_inertia = mean_squared_distance(features, load_cluster_centers(str(work / "fairseq.bin")))
        ours_inertia = mean_squared_distance(features, load_cluster_centers(str(work / "ours.bin")))

    speedup = fairseq_seconds / ours_seconds
    inertia_change = ours_inertia / fairseq_inertia - 1
    print(f"features: {args.frames} frames x {args.dim} dims, {args.clusters} clusters")
    print(f"{'script':<36}{'seconds':>10}{'inertia/frame':>16}")
    print(f"{'fairseq learn_kmeans.py (sklearn)':<36}{fairseq_seconds:>10.1f}{fairseq_inertia:>16.4f}")
    print(f"{'ours learn_kmeans.py --backend faiss':<36}{ours_seconds:>10.1f}{ours_inertia:>16.4f}")
    print(f"speed-up: {speedup:.1f}x (target >= 10x): {'PASS' if speedup >= 10 else 'FAIL'}")
    print(f"inertia change: {100 * inertia_change:+.2f} % (target <= +0.5 %): {'PASS' if inertia_change <= 0.005 else 'FAIL'}")


if __name__ == "__main__":
    main()
