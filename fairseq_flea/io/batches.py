"""Length-sorted batches of utterances, torch-free: the padding-safe forward's callers and the
ONNX recogniser, which runs without torch, batch the same way."""

from typing import List, Sequence


def length_sorted_batches(lengths: Sequence[int], max_batch_samples: int) -> List[List[int]]:
    """Group indices into batches of similar length with at most ``max_batch_samples``
    padded samples each (a longer utterance gets a batch of its own)."""
    batches: List[List[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # Sorted ascending, so the newest utterance is the longest of its batch.
        if batches and (len(batches[-1]) + 1) * lengths[index] <= max_batch_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches
