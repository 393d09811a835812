"""k-means frame labels in the HuBERT recipe's format (fairseq's examples/hubert/simple_kmeans).

A k-means model is a joblib file holding an estimator with ``cluster_centers_``, which is
all fairseq's ``dump_km_label.py`` reads: models learnt here (scikit-learn or faiss) work in
fairseq's script, and fairseq's models work here. Labels are assigned with fairseq's own
formula and dtype, so both scripts give identical labels.
"""

import logging
import os
from typing import List

import joblib
import numpy as np
import tqdm
from sklearn.cluster import KMeans, MiniBatchKMeans

from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text_lines

logger = logging.getLogger(__name__)


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


def load_features(feat_dir: str, split: str, nshard: int, percent: float = -1.0, seed: int = 0) -> np.ndarray:
    """All frames of all shards, or those of a random ``percent`` of each shard's utterances."""
    if nshard < 1:
        raise FleaInputError(f"nshard must be at least 1, got {nshard}")
    if percent != -1 and not 0 < percent <= 1:
        raise FleaInputError(f"--percent {percent} is not a fraction in (0, 1] (or -1 for all)")
    rng = np.random.default_rng(seed)
    parts = []
    for rank in range(nshard):
        lengths = read_shard_lengths(feat_dir, split, rank, nshard)
        features = open_feature_array(shard_paths(feat_dir, split, rank, nshard)[0])
        if percent < 0:
            parts.append(np.asarray(features))
            continue
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        chosen = rng.choice(len(lengths), int(np.ceil(len(lengths) * percent)), replace=False)
        parts.append(np.concatenate([features[offsets[i] : offsets[i] + lengths[i]] for i in chosen]))
    features = np.concatenate(parts).astype(np.float32, copy=False)
    check_finite_features(features, os.path.join(feat_dir, f"{split}_*_{nshard}.npy"))
    logger.info(f"loaded {features.shape[0]} frames of dimension {features.shape[1]}")
    return features


def check_finite_features(features: np.ndarray, source: str) -> None:
    """NaN or infinite features (from a corrupt shard) would cluster or label silently."""
    non_finite = ~np.isfinite(features).all(axis=1)
    if non_finite.any():
        raise FleaInputError(
            f"{source}: {int(non_finite.sum())} frames hold NaN or infinite values, the first is frame "
            f"{int(np.argmax(non_finite))}"
        )


def check_cluster_count(features: np.ndarray, n_clusters: int, source: str) -> None:
    if n_clusters < 1:
        raise FleaInputError(f"{source}: the number of clusters must be at least 1, got {n_clusters}")
    if n_clusters > len(features):
        raise FleaInputError(f"{source}: {n_clusters} clusters requested but only {len(features)} frames")


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
) -> MiniBatchKMeans:
    """MiniBatchKMeans with the official recipe's settings (its defaults are these defaults)."""
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


def learn_kmeans_faiss(
    features: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    iterations: int = 25,
    restarts: int = 3,
    points_per_cluster: int = 512,
    seeding_points_per_cluster: int = 64,
) -> KMeans:
    """k-means with faiss, returned as a fitted scikit-learn ``KMeans`` so that fairseq's
    dump_km_label.py and ``predict`` use it unchanged.

    As faiss does by default, Lloyd iterations run on a random sample of
    ``points_per_cluster`` frames per cluster, which is what makes it fast. Each of
    ``restarts`` runs starts from k-means++ centres drawn from a smaller sample
    (``seeding_points_per_cluster``; k-means++ costs more per point than an iteration, and
    faiss's own start, random frames, often merges clusters); the run with the lowest
    objective on the sample is kept, as scikit-learn does with ``n_init``.
    """
    import faiss
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    sample_size = min(len(features), points_per_cluster * n_clusters)
    sample = np.ascontiguousarray(features[np.sort(rng.choice(len(features), sample_size, replace=False))], dtype=np.float32)
    best_centers, best_objective = None, np.inf
    seeding_size = min(sample_size, seeding_points_per_cluster * n_clusters)
    for restart in range(restarts):
        seeding_sample = sample[rng.choice(sample_size, seeding_size, replace=False)]
        initial_centers, _ = kmeans_plusplus(seeding_sample, n_clusters, random_state=seed + restart)
        trainer = faiss.Kmeans(
            sample.shape[1], n_clusters, niter=iterations, seed=seed + restart,
            gpu=faiss.get_num_gpus() > 0, max_points_per_centroid=sample_size,
        )
        trainer.train(sample, init_centroids=np.ascontiguousarray(initial_centers, dtype=np.float32))
        objective = float(trainer.obj[-1]) / sample_size
        logger.info(f"faiss k-means run {restart + 1}/{restarts}: inertia per sampled frame {objective:.5f}")
        if objective < best_objective:
            best_centers, best_objective = trainer.centroids.astype(np.float32), objective
    model = KMeans(n_clusters=n_clusters, n_init=restarts, random_state=seed)
    model.cluster_centers_ = best_centers
    model.n_features_in_ = features.shape[1]
    model.n_iter_ = iterations
    model._n_threads = 1
    return model


KMEANS_BACKENDS = {"sklearn": learn_kmeans_sklearn, "faiss": learn_kmeans_faiss}


def learn_kmeans(features: np.ndarray, n_clusters: int, backend: str = "faiss", **options):
    """k-means with the named backend (``KMEANS_BACKENDS``); ``options`` go to its function."""
    if backend not in KMEANS_BACKENDS:
        raise FleaInputError(f"unknown k-means backend {backend!r}; choose one of {sorted(KMEANS_BACKENDS)}")
    return KMEANS_BACKENDS[backend](features, n_clusters, **options)


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


def mean_squared_distance(features: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> float:
    """Inertia per frame: mean squared distance of each frame to its nearest centre."""
    total = 0.0
    centers = centers.astype(np.float32)
    for start in range(0, len(features), chunk):
        distances = squared_distances(np.asarray(features[start : start + chunk], dtype=np.float32), centers)
        total += float(np.maximum(distances.min(axis=1), 0).sum(dtype=np.float64))
    return total / len(features)


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
