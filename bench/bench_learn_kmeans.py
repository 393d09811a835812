#!/usr/bin/env python3
"""learn_kmeans: ours (tools/learn_kmeans.py --backend faiss) against fairseq's installed
learn_kmeans.py, both as command-line scripts on the same generated Gaussian-mixture features
in the HuBERT recipe's format, both models scored by the same inertia (mean squared distance
to the nearest centre); one row per K. Targets at every K: >= 10x faster, inertia <= +0.5 %.

    python bench/bench_learn_kmeans.py [--frames 200000] [--dim 768] [--clusters 50 100 150]
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fairseq_flea.units.kmeans import load_cluster_centers, mean_squared_distance

REPO_ROOT = Path(__file__).resolve().parents[1]
# Located without importing fairseq (and torch), which would only cost this process memory.
FAIRSEQ_ROOT = Path(importlib.util.find_spec("fairseq").submodule_search_locations[0])
FAIRSEQ_LEARN_KMEANS = FAIRSEQ_ROOT / "examples" / "hubert" / "simple_kmeans" / "learn_kmeans.py"


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


def timed(command) -> tuple:
    """Seconds the command took, and the 1-minute load average at its end: both scripts use
    every core, so a load well above the core count means other work shared them."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{command[1]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, os.getloadavg()[0]


def compare_at(work: Path, features: np.ndarray, n_clusters: int) -> dict:
    """Both scripts at one cluster count: seconds, inertia per frame."""
    common = [str(work / "features"), "bench", "2"]
    fairseq_model, ours_model = work / f"fairseq_{n_clusters}.bin", work / f"ours_{n_clusters}.bin"
    fairseq_seconds, fairseq_load = timed([
        sys.executable, str(FAIRSEQ_LEARN_KMEANS), *common, str(fairseq_model), str(n_clusters),
    ])
    ours_seconds, ours_load = timed([
        sys.executable, str(REPO_ROOT / "tools" / "learn_kmeans.py"), *common, str(ours_model), str(n_clusters),
        "--backend", "faiss",
    ])
    return dict(
        clusters=n_clusters, fairseq_seconds=fairseq_seconds, ours_seconds=ours_seconds,
        load=max(fairseq_load, ours_load),
        fairseq_inertia=mean_squared_distance(features, load_cluster_centers(str(fairseq_model))),
        ours_inertia=mean_squared_distance(features, load_cluster_centers(str(ours_model))),
    )


def result_row(result: dict) -> str:
    speedup = result["fairseq_seconds"] / result["ours_seconds"]
    inertia_change = result["ours_inertia"] / result["fairseq_inertia"] - 1
    verdict = "PASS" if speedup >= 10 and inertia_change <= 0.005 else "FAIL"
    return (
        f"{result['clusters']:>4}{result['fairseq_seconds']:>10.1f}{result['ours_seconds']:>8.1f}{speedup:>9.1f}x"
        f"{result['fairseq_inertia']:>12.4f}{result['ours_inertia']:>12.4f}{100 * inertia_change:>+9.2f} %"
        f"{result['load']:>6.1f}  {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, nargs="+", default=[50, 100, 150])
    args = parser.parse_args()

    print(f"features: {args.frames} frames x {args.dim} dims; fairseq = its learn_kmeans.py (sklearn, official "
          f"settings), ours = tools/learn_kmeans.py --backend faiss; targets: >= 10x, inertia <= +0.5 %")
    print(f"{'K':>4}{'fairseq s':>10}{'ours s':>8}{'speed-up':>10}{'fairseq in.':>12}{'ours in.':>12}{'change':>11}"
          f"{'load':>6}  (1-minute load average, {os.cpu_count()} cores)")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        features = write_mixture_features(work / "features", args.frames, args.dim)
        for n_clusters in args.clusters:
            rows.append(result_row(compare_at(work, features, n_clusters)))
            print(rows[-1], flush=True)
    print(f"all K: {'FAIL' if any(row.endswith('FAIL') for row in rows) else 'PASS'}")


if __name__ == "__main__":
    main()
