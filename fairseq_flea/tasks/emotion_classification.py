"""Task ``emotion_classification``: one emotion label per utterance (FLEA phases 1c and 4)."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Tuple

from fairseq.data import Dictionary
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from fairseq_flea.optim.master_weights import ForeachMasterWeightsTask
from fairseq_flea.tasks.classification_data import class_names, load_classification_split, load_label_dictionary
from fairseq_flea.tasks.dummy_batches import read_by_loader_only_in_one_process
from fairseq_flea.tasks.step_bookkeeping import switch_train_mode_only_when_changed

logger = logging.getLogger(__name__)


@dataclass
class EmotionClassificationConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "directory with {split}.tsv, {split}.{labels}, dict.{labels}.txt"})
    labels: str = field(default="emo", metadata={"help": "extension of the utterance label files"})
    sample_rate: int = field(default=16_000, metadata={"help": "audio sample rate; other rates are an error"})
    normalize: bool = field(
        default=False, metadata={"help": "zero-mean unit-variance waveforms; must match the encoder's pretraining"}
    )
    train_subset: str = II("dataset.train_subset")
    max_sample_size: Optional[int] = field(
        default=None,
        metadata={"help": "training crops longer utterances at a random offset to this many samples; "
                  "validation and evaluation always see full utterances"},
    )
    # Read by fairseq's get_batch_iterator; the shipped configs with workers keep them
    # (fairseq_flea.tasks.loader_workers ends them when training ends).
    persistent_workers: bool = field(default=False, metadata={"help": "keep data-loading workers between epochs"})
    background_checkpoint_writes: bool = field(
        default=True,
        metadata={"help": "write checkpoints on a thread while training goes on (fairseq_flea.tasks.checkpoint_writes)"},
    )
    read_dummy_batch: bool = field(
        default=False,
        metadata={"help": "read the first batch again before each epoch and validation, as fairseq does, as the "
                  "stand-in for a rank's missing batches; off: a run of one process takes the first batch a "
                  "step prepares (fairseq_flea.tasks.dummy_batches)"},
    )


@register_task("emotion_classification", dataclass=EmotionClassificationConfig)
class EmotionClassificationTask(ForeachMasterWeightsTask, FairseqTask):
    cfg: EmotionClassificationConfig

    def __init__(self, cfg: EmotionClassificationConfig):
        super().__init__(cfg)
        # Restored from a checkpoint's task_state when there is one: a fine-tuned model
        # loads without its training data.
        self.state.add_factory("target_dictionary", self.load_target_dictionary)

    @classmethod
    def setup_task(cls, cfg: EmotionClassificationConfig, **kwargs) -> "EmotionClassificationTask":
        return cls(cfg)

    def build_model(self, cfg, from_checkpoint: bool = False):
        return switch_train_mode_only_when_changed(super().build_model(cfg, from_checkpoint))

    def load_target_dictionary(self) -> Dictionary:
        return load_label_dictionary(os.path.join(self.cfg.data, f"dict.{self.cfg.labels}.txt"))

    @property
    def target_dictionary(self) -> Dictionary:
        return self.state.target_dictionary

    @property
    def source_dictionary(self) -> None:
        return None

    @property
    def class_names(self):
        return class_names(self.target_dictionary)

    def load_dataset(self, split: str, **kwargs) -> None:
        is_training = split == self.cfg.train_subset
        self.datasets[split] = load_classification_split(
            self.cfg.data,
            split,
            self.cfg.labels,
            self.target_dictionary,
            self.cfg.sample_rate,
            self.cfg.normalize,
            self.cfg.max_sample_size if is_training else None,
        )
        if not self.cfg.read_dummy_batch:
            read_by_loader_only_in_one_process(self.datasets[split])
        logger.info(f"{split}: {len(self.datasets[split])} utterances, classes {self.class_names}")

    def max_positions(self) -> Tuple[int, int]:
        return (sys.maxsize, sys.maxsize)
