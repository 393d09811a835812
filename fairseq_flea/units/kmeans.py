"""k-means frame labels in the HuBERT recipe's format (fairseq's examples/hubert/simple_kmeans).

A k-means model is a joblib file holding an estimator with ``cluster_centers_``, which is
all fairseq's ``dump_km_label.py`` reads: models learnt here (faiss, ``DEFAULT_KMEANS_BACKEND``,
or scikit-learn's MiniBatchKMeans as fairseq's ``learn_kmeans.py`` runs it) work in
fairseq's script, and fairseq's models work here. Labels are assigned with fairseq's own
formula and dtype, so both scripts give identical labels.
"""

import logging
import os
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

import joblib
import numpy as np
import tqdm

from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text_lines

if TYPE_CHECKING:  # scikit-learn (3 s to import here) only where a model is learnt: the recipe and --help start without it
    from sklearn.cluster import KMeans, MiniBatchKMeans

logger = logging.getLogger(__name__)

# The backend of tools/learn_kmeans.py and of the recipe unless they are told another
# (KMEANS_BACKENDS): over 10x faster than fairseq's MiniBatchKMeans, inertia within +0.5 %
# (bench/bench_learn_kmeans.py, BENCHMARKS.md).
DEFAULT_KMEANS_BACKEND = "faiss"


def shard_paths(feat_dir: str, split: str, rank: int, nshard: int) -> tuple:
    stem = os.path.join(feat_dir, f"{split}_{rank}_{nshard}")
    return f"{stem}.npy", f"{stem}.len"


def open_feature_array(npy_path: str) -> np.ndarray:
    """A shard's (frames, dim) feature array, memory-mapped; a clear error if it is not one."""
    try:
        features = np.load(npy_path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise FleaInputError(f"{npy_path}: not a readable .npy array ({error})") from None
    if features.ndim != 2:
        raise FleaInputError(f"{npy_path}: features must be (frames, dim), this array has shape {features.shape}")
    return features


def read_shard_lengths(feat_dir: str, split: str, rank: int, nshard: int) -> List[int]:
    """Frames per utterance of one feature shard, checked against its .npy."""
    npy_path, len_path = shard_paths(feat_dir, split, rank, nshard)
    for path in (npy_path, len_path):
        if not os.path.isfile(path):
            raise FleaInputError(f"{path}: feature file not found (dump features for shard {rank} of {nshard} first)")
    lengths = []
    for line_number, line in enumerate(read_text_lines(len_path), start=1):
        if not line.strip().isdigit():
            raise FleaInputError(f"{len_path}, line {line_number}: {line!r} is not a frame count")
        lengths.append(int(line))
    rows = open_feature_array(npy_path).shape[0]
    if rows != sum(lengths):
        raise FleaInputError(f"{npy_path} has {rows} frames but {len_path} adds up to {sum(lengths)}")
    return lengths


def check_shard_selection(nshard: int, percent: float) -> None:
    if nshard < 1:
        raise FleaInputError(f"nshard must be at least 1, got {nshard}")
    if percent != -1 and not 0 < percent <= 1:
        raise FleaInputError(f"--percent {percent} is not a fraction in (0, 1] (or -1 for all)")


def choose_utterances(n_utterances: int, percent: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``percent`` of a shard's utterances, in the order drawn."""
    return rng.choice(n_utterances, int(np.ceil(n_utterances * percent)), replace=False)


def load_features(feat_dir: str, split: str, nshard: int, percent: float = -1.0, seed: int = 0) -> np.ndarray:
    """All frames of all shards, or those of a random ``percent`` of each shard's utterances."""
    check_shard_selection(nshard, percent)
    rng = np.random.default_rng(seed)
    parts = []
    for rank in range(nshard):
        lengths = read_shard_lengths(feat_dir, split, rank, nshard)
        features = open_feature_array(shard_paths(feat_dir, split, rank, nshard)[0])
        if percent < 0:
            parts.append(np.asarray(features))
            continue
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        chosen = choose_utterances(len(lengths), percent, rng)
        parts.append(np.concatenate([features[offsets[i] : offsets[i] + lengths[i]] for i in chosen]))
    features = np.concatenate(parts).astype(np.float32, copy=False)
    check_finite_features(features, feature_glob(feat_dir, split, nshard))
    logger.info(f"loaded {features.shape[0]} frames of dimension {features.shape[1]}")
    return features


def feature_glob(feat_dir: str, split: str, nshard: int) -> str:
    return os.path.join(feat_dir, f"{split}_*_{nshard}.npy")


def candidate_rows(
    feat_dir: str, split: str, nshard: int, percent: float = -1.0, seed: int = 0
) -> Tuple[List[np.ndarray], np.random.Generator]:
    """Per shard, the sorted rows ``load_features`` would load with these arguments (the same
    utterances, drawn with the same generator calls), after checking every shard; the
    generator is returned too so that a sample drawn next depends on ``seed`` alone."""
    check_shard_selection(nshard, percent)
    rng = np.random.default_rng(seed)
    rows = []
    for rank in range(nshard):
        lengths = np.asarray(read_shard_lengths(feat_dir, split, rank, nshard), dtype=np.int64)
        if percent < 0:
            rows.append(np.arange(lengths.sum()))
            continue
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        chosen = np.sort(choose_utterances(len(lengths), percent, rng))
        empty = np.zeros(0, dtype=np.int64)  # a shard whose .len lists no utterance
        rows.append(np.concatenate([empty] + [np.arange(offsets[i], offsets[i] + lengths[i]) for i in chosen]))
    return rows, rng


def read_rows_sample(
    feat_dir: str, split: str, nshard: int, rows: List[np.ndarray], max_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``max_frames`` of the shards' ``rows``, drawn at random without replacement and
    read from the memory-mapped shards in file order: only those rows leave the disk."""
    sizes = [len(shard_rows) for shard_rows in rows]
    total = sum(sizes)
    picked = np.sort(rng.choice(total, min(max_frames, total), replace=False))
    bounds = np.cumsum([0] + sizes)
    parts = []
    for rank, shard_rows in enumerate(rows):
        local = picked[(picked >= bounds[rank]) & (picked < bounds[rank + 1])] - bounds[rank]
        npy_path = shard_paths(feat_dir, split, rank, nshard)[0]
        part = np.asarray(open_feature_array(npy_path)[shard_rows[local]], dtype=np.float32)
        check_finite_features(part, npy_path, shard_rows[local])
        parts.append(part)
    sample = np.concatenate(parts)
    logger.info(f"sampled {sample.shape[0]} of {total} frames of dimension {sample.shape[1]}")
    return sample


def check_finite_features(features: np.ndarray, source: str, rows: Optional[np.ndarray] = None) -> None:
    """NaN or infinite features (from a corrupt shard) would cluster or label silently.
    ``rows``: the file rows of ``features`` when they are a sample, for the message."""
    non_finite = ~np.isfinite(features).all(axis=1)
    if non_finite.any():
        first = int(np.argmax(non_finite))
        raise FleaInputError(
            f"{source}: {int(non_finite.sum())} frames hold NaN or infinite values, the first is frame "
            f"{first if rows is None else int(rows[first])}"
        )


def check_cluster_count(features: np.ndarray, n_clusters: int, source: str) -> None:
    check_cluster_count_of_frames(len(features), n_clusters, source)


def check_cluster_count_of_frames(frames: int, n_clusters: int, source: str) -> None:
    if n_clusters < 1:
        raise FleaInputError(f"{source}: the number of clusters must be at least 1, got {n_clusters}")
    if n_clusters > frames:
        raise FleaInputError(f"{source}: {n_clusters} clusters requested but only {frames} frames")


def learn_kmeans_sklearn(
    features: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    init: str = "k-means++",
    max_iter: int = 100,
    batch_size: int = 10000,
    tol: float = 0.0,
    max_no_improvement: int = 100,
    n_init: int = 20,
    reassignment_ratio: float = 0.0,
) -> "MiniBatchKMeans":
    """MiniBatchKMeans with the official recipe's settings (its defaults are these defaults)."""
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        n_clusters=n_clusters,
        init=init,
        max_iter=max_iter,
        batch_size=batch_size,
        verbose=1,
        compute_labels=False,
        tol=tol,
        max_no_improvement=max_no_improvement,
        init_size=None,
        n_init=n_init,
        reassignment_ratio=reassignment_ratio,
        random_state=seed,
    )
    return model.fit(features)


# The faiss backend's defaults (tools/learn_kmeans.py's too), chosen with bench/bench_learn_kmeans.py
# (200,000 x 768 frames, K = 50, 100, 150): a third restart left the inertia unchanged (K = 50, 150) but would
# cost the 10x speed-up at K = 150; 20 iterations instead of 10 lowered it by 0.02 % at most (runs
# on the sample converge in 8-24); 256 or 384 points per cluster cost up to +0.4 % and +0.3 %.
FAISS_ITERATIONS = 10
FAISS_RESTARTS = 2
FAISS_POINTS_PER_CLUSTER = 512
FAISS_SEEDING_POINTS_PER_CLUSTER = 64


def run_faiss_lloyd(
    sample: np.ndarray, initial_centers: np.ndarray, iterations: int, seed: int
) -> Tuple[np.ndarray, float]:
    """At most ``iterations`` of faiss's Lloyd iterations on ``sample`` from ``initial_centers``:
    the centres, and the inertia per sampled frame of the last assignment."""
    import faiss

    trainer = faiss.Kmeans(
        sample.shape[1], len(initial_centers), niter=iterations, seed=seed,
        gpu=faiss.get_num_gpus() > 0, max_points_per_centroid=len(sample),
    )
    trainer.train(sample, init_centroids=np.ascontiguousarray(initial_centers, dtype=np.float32))
    return trainer.centroids.astype(np.float32), float(trainer.obj[-1]) / len(sample)


def learn_kmeans_faiss(
    features: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    iterations: int = FAISS_ITERATIONS,
    restarts: int = FAISS_RESTARTS,
    points_per_cluster: int = FAISS_POINTS_PER_CLUSTER,
    seeding_points_per_cluster: int = FAISS_SEEDING_POINTS_PER_CLUSTER,
) -> "KMeans":
    """k-means with faiss, returned as a fitted scikit-learn ``KMeans`` so that fairseq's
    dump_km_label.py and ``predict`` use it unchanged.

    As faiss does by default, Lloyd iterations run on a random sample of
    ``points_per_cluster`` frames per cluster, which is what makes it fast. Each of
    ``restarts`` runs starts from k-means++ centres drawn from a smaller sample
    (``seeding_points_per_cluster``; k-means++ costs more per point than an iteration, and
    faiss's own start, random frames, often merges clusters); the run with the lowest
    objective on the sample is kept, as scikit-learn does with ``n_init``. ``iterations``
    is a cap: recent faiss stops a run once its objective no longer changes. (Keeping only
    the best start after a few iterations picked a worse run at K = 100.)
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    rng = np.random.default_rng(seed)
    sample_size = min(len(features), points_per_cluster * n_clusters)
    if sample_size < len(features):
        features = features[np.sort(rng.choice(len(features), sample_size, replace=False))]
    sample = np.ascontiguousarray(features, dtype=np.float32)  # already the sample (read_rows_sample)
    seeding_size = min(sample_size, seeding_points_per_cluster * n_clusters)
    best_centers, best_objective = None, np.inf
    for restart in range(restarts):
        # In float64: scikit-learn's k-means++ upcasts float32 distances chunk by chunk, 3-4x slower.
        seeding_sample = sample[rng.choice(sample_size, seeding_size, replace=False)].astype(np.float64)
        initial_centers, _ = kmeans_plusplus(seeding_sample, n_clusters, random_state=seed + restart)
        centers, objective = run_faiss_lloyd(sample, initial_centers, iterations, seed + restart)
        logger.info(f"faiss k-means run {restart + 1}/{restarts}: inertia per sampled frame {objective:.5f}")
        if objective < best_objective:
            best_centers, best_objective = centers, objective
    model = KMeans(n_clusters=n_clusters, n_init=restarts, random_state=seed)
    model.cluster_centers_ = best_centers
    model.n_features_in_ = features.shape[1]
    model.n_iter_ = iterations
    model._n_threads = 1
    return model


KMEANS_BACKENDS = {"sklearn": learn_kmeans_sklearn, "faiss": learn_kmeans_faiss}


def learn_kmeans(features: np.ndarray, n_clusters: int, backend: str = DEFAULT_KMEANS_BACKEND, **options):
    """k-means with the named backend (``KMEANS_BACKENDS``); ``options`` go to its function."""
    if backend not in KMEANS_BACKENDS:
        raise FleaInputError(f"unknown k-means backend {backend!r}; choose one of {sorted(KMEANS_BACKENDS)}")
    return KMEANS_BACKENDS[backend](features, n_clusters, **options)


def learn_kmeans_from_shards(
    feat_dir: str,
    split: str,
    nshard: int,
    n_clusters: int,
    backend: str = DEFAULT_KMEANS_BACKEND,
    percent: float = -1.0,
    seed: int = 0,
    **options,
) -> Union["KMeans", "MiniBatchKMeans"]:
    """k-means on the shards' frames (all, or those of a random ``percent`` of utterances).

    The faiss backend only ever uses ``points_per_cluster * n_clusters`` frames, so only
    those are read from the memory-mapped shards; scikit-learn's gets every frame."""
    if backend not in KMEANS_BACKENDS:
        raise FleaInputError(f"unknown k-means backend {backend!r}; choose one of {sorted(KMEANS_BACKENDS)}")
    if backend == "faiss":
        rows, rng = candidate_rows(feat_dir, split, nshard, percent, seed)
        check_cluster_count_of_frames(sum(map(len, rows)), n_clusters, feat_dir)
        points_per_cluster = options.get("points_per_cluster", FAISS_POINTS_PER_CLUSTER)
        features = read_rows_sample(feat_dir, split, nshard, rows, points_per_cluster * n_clusters, rng)
    else:
        features = load_features(feat_dir, split, nshard, percent, seed)
        check_cluster_count(features, n_clusters, feat_dir)
    return learn_kmeans(features, n_clusters, backend, seed=seed, **options)


def save_kmeans(model, km_path: str) -> None:
    with atomic_outputs(km_path) as (partial,):
        joblib.dump(model, partial)


def load_cluster_centers(km_path: str) -> np.ndarray:
    """(clusters, dim) centres of a k-means model saved by us or by fairseq's learn_kmeans.py."""
    if not os.path.isfile(km_path):
        raise FleaInputError(f"{km_path}: k-means model not found")
    try:
        model = joblib.load(km_path)
    except Exception as error:  # joblib raises whatever the unpickler met
        raise FleaInputError(f"{km_path}: not a k-means model saved with joblib ({error})") from None
    centers = getattr(model, "cluster_centers_", None)
    if centers is None:
        raise FleaInputError(f"{km_path}: the saved object has no cluster_centers_ ({type(model).__name__})")
    return np.asarray(centers)


def squared_distances(features: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """fairseq's ApplyKmeans arithmetic, in its order and dtype, so argmins (ties too) agree."""
    centers_t = centers.transpose()
    return (features**2).sum(1, keepdims=True) - 2 * np.matmul(features, centers_t) + (centers_t**2).sum(0, keepdims=True)


def assign_clusters(features: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return np.argmin(squared_distances(features, centers), axis=1)


def squared_distance_sum(features: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> float:
    """Sum over frames of the squared distance to the nearest centre, ``chunk`` frames at a
    time, so that a memory-mapped array is never read into memory whole."""
    total = 0.0
    centers = centers.astype(np.float32)
    for start in range(0, len(features), chunk):
        distances = squared_distances(np.asarray(features[start : start + chunk], dtype=np.float32), centers)
        total += float(np.maximum(distances.min(axis=1), 0).sum(dtype=np.float64))
    return total


def mean_squared_distance(features: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> float:
    """Inertia per frame: mean squared distance of each frame to its nearest centre."""
    return squared_distance_sum(features, centers, chunk) / len(features)


def shards_mean_squared_distance(feat_dir: str, split: str, nshard: int, centers: np.ndarray) -> float:
    """Inertia per frame over every frame of every shard, read chunk by chunk from the
    memory-mapped shards (never all in memory at once)."""
    total, frames = 0.0, 0
    for rank in range(nshard):
        features = open_feature_array(shard_paths(feat_dir, split, rank, nshard)[0])
        total += squared_distance_sum(features, centers)
        frames += len(features)
    return total / frames


def dump_km_labels(feat_dir: str, split: str, km_path: str, nshard: int, rank: int, lab_dir: str) -> None:
    """Write ``{lab_dir}/{split}_{rank}_{nshard}.km``: one line of cluster ids per utterance."""
    centers = load_cluster_centers(km_path)
    lengths = read_shard_lengths(feat_dir, split, rank, nshard)
    features = open_feature_array(shard_paths(feat_dir, split, rank, nshard)[0])
    if features.shape[1] != centers.shape[1]:
        raise FleaInputError(
            f"{km_path}: centres have dimension {centers.shape[1]}, the features in {feat_dir} {features.shape[1]}"
        )
    offset = 0
    with atomic_outputs(os.path.join(lab_dir, f"{split}_{rank}_{nshard}.km")) as (partial,):
        with open(partial, "w") as labels:
            for length in tqdm.tqdm(lengths, desc="k-means labels", unit="utt"):
                utterance = np.asarray(features[offset : offset + length])
                check_finite_features(utterance, shard_paths(feat_dir, split, rank, nshard)[0])
                ids = assign_clusters(utterance, centers)
                labels.write(" ".join(map(str, ids.tolist())) + "\n")
                offset += length


def check_label_line(line: str, n_clusters: int, where: str) -> None:
    """Cluster ids of one utterance: integers in 0..n_clusters-1."""
    for token in line.split():
        if not token.isdigit() or int(token) >= n_clusters:
            raise FleaInputError(f"{where}: label {token!r} is not a cluster id of 0..{n_clusters - 1}")


def merge_km_labels(lab_dir: str, split: str, nshard: int, km_path: str, name: str = "km") -> None:
    """Concatenate the shards into ``{split}.{name}`` and write ``dict.{name}.txt``
    (every cluster id with count 1, as the official recipe's shell loop does)."""
    if nshard < 1:
        raise FleaInputError(f"nshard must be at least 1, got {nshard}")
    n_clusters = len(load_cluster_centers(km_path))
    shard_files = [os.path.join(lab_dir, f"{split}_{rank}_{nshard}.km") for rank in range(nshard)]
    for path in shard_files:
        if not os.path.isfile(path):
            raise FleaInputError(f"{path}: label shard not found")
    merged, dictionary = os.path.join(lab_dir, f"{split}.{name}"), os.path.join(lab_dir, f"dict.{name}.txt")
    with atomic_outputs(merged, dictionary) as (merged_partial, dictionary_partial):
        with open(merged_partial, "w") as output:
            for path in shard_files:
                for line_number, line in enumerate(read_text_lines(path), start=1):
                    check_label_line(line, n_clusters, f"{path}:{line_number}")
                    output.write(line + "\n")
        with open(dictionary_partial, "w") as output:
            output.writelines(f"{cluster} 1\n" for cluster in range(n_clusters))
    logger.info(f"wrote {merged} and {dictionary} ({n_clusters} clusters)")
