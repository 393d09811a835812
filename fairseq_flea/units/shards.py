"""Feature shards in the HuBERT recipe's format, whatever computes the features.

``{split}_{rank}_{nshard}.npy`` (all frames stacked, float32, written with npy-append-array)
and ``.len`` (frames per utterance), as fairseq's ``examples/hubert/simple_kmeans`` writes
them; shards split a manifest as the official scripts do, so shard files match.
"""

import logging
import os
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
import tqdm
from npy_append_array import NpyAppendArray

from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.manifest import read_manifest

logger = logging.getLogger(__name__)

# Utterances read, extracted and written together: bounds memory, keeps manifest order.
UTTERANCES_PER_WINDOW = 256


def shard_range(total: int, nshard: int, rank: int) -> Tuple[int, int]:
    """Utterances [start, end) of shard ``rank``: the official recipe's split, so shards match."""
    if not 0 <= rank < nshard:
        raise FleaInputError(f"rank {rank} is not in 0..{nshard - 1} (nshard={nshard})")
    start, end = round(total / nshard * rank), round(total / nshard * (rank + 1))
    if start >= end:
        raise FleaInputError(f"shard {rank} of {nshard} is empty: only {total} utterances")
    return start, end


def windows(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


UtteranceFeatures = Callable[[Sequence[str], Sequence[int]], List[np.ndarray]]


def write_feature_shard(
    tsv_dir: str,
    split: str,
    nshard: int,
    rank: int,
    feat_dir: str,
    load_utterance_features: Callable[[], UtteranceFeatures],
    description: str,
) -> None:
    """Write ``{split}_{rank}_{nshard}.npy`` and ``.len`` for one shard of a manifest.

    ``load_utterance_features`` is called once the manifest has been checked (so a bad
    manifest fails before a model is loaded) and returns the function mapping a window of
    audio paths (and their manifest lengths) to per-utterance (frames, dim) features.
    """
    manifest = read_manifest(os.path.join(tsv_dir, f"{split}.tsv"))
    start, end = shard_range(len(manifest), nshard, rank)
    utterance_features = load_utterance_features()
    utterances = [
        (os.path.join(manifest.root, name), samples)
        for name, samples in zip(manifest.names[start:end], manifest.num_samples[start:end])
    ]
    stem = os.path.join(feat_dir, f"{split}_{rank}_{nshard}")
    with atomic_outputs(f"{stem}.npy", f"{stem}.len") as (npy_partial, len_partial):
        with NpyAppendArray(npy_partial, delete_if_exists=True) as npy, open(len_partial, "w") as lengths:
            with tqdm.tqdm(total=len(utterances), desc=description, unit="utt") as progress:
                for window in windows(utterances, UTTERANCES_PER_WINDOW):
                    paths, expected = zip(*window)
                    for features in utterance_features(paths, expected):
                        npy.append(np.ascontiguousarray(features))
                        lengths.write(f"{len(features)}\n")
                    progress.update(len(window))
    logger.info(f"wrote {stem}.npy and {stem}.len ({len(utterances)} utterances)")
