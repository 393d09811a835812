"""Datasets that fairseq's trainer does not read outside the data loader.

Before every epoch and every validation, fairseq's trainer reads and collates the first
batch once more, in the training process (``Trainer.get_train_iterator`` and
``get_valid_iterator`` call ``EpochBatchIterator.first_batch``), to hold as the stand-in a
data-parallel rank trains on when it runs out of batches before the others. Meanwhile the GPU
waits: 20-28 ms for a ``tapt_base`` batch and 46-49 ms for a ``ser_attention_base`` one on the
development CPU; on an H200, 24-35 ms at each TAPT epoch's start and 220-265 ms at each
fine-tuning epoch's, where a checkpoint write was running beside it.

A run of one process never needs that stand-in: it never runs out of batches before another
rank. There a dataset says it cannot be read outside its loader, which makes fairseq take the
first batch a step prepares as the stand-in instead (fairseq's own path for such datasets).
Runs of several processes keep fairseq's reading: a rank whose first batch of a validation is
empty (a validation set of fewer batches than GPUs) needs a stand-in read beforehand.
Without the ``dummy-batch-from-step`` fast path every run reads it, as fairseq does.
"""

import torch
from fairseq.data.audio.hubert_dataset import HubertDataset

from fairseq_flea.tasks.classification_data import EmotionClassificationDataset


class HubertDatasetReadByLoaderOnly(HubertDataset):
    supports_fetch_outside_dataloader = False


class EmotionClassificationDatasetReadByLoaderOnly(EmotionClassificationDataset):
    supports_fetch_outside_dataloader = False


# Named classes, not made on the fly: loader workers started by spawn unpickle the dataset.
READ_BY_LOADER_ONLY = {
    HubertDataset: HubertDatasetReadByLoaderOnly,
    EmotionClassificationDataset: EmotionClassificationDatasetReadByLoaderOnly,
}


def training_processes() -> int:
    """How many processes train together: fairseq has set up their process group by the
    time a task loads its datasets."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def read_by_loader_only_in_one_process(dataset):
    """The same dataset object, marked as read by its data loader only where the run is one
    process (see the module)."""
    if training_processes() == 1:
        dataset.__class__ = READ_BY_LOADER_ONLY[type(dataset)]
    return dataset
