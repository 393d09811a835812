"""Task ``emotion_classification``: one emotion label per utterance (FLEA phases 1c and 4)."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Tuple

from fairseq.data import Dictionary
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, open_dict

from fairseq_flea.tasks.classification_data import class_names, load_classification_split, load_label_dictionary
from fairseq_flea.tasks.training_paths import FastPathsTask, fast_paths_of, model_with_fast_paths

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
    # Read by fairseq's get_batch_iterator, which keeps workers when a task has no such field.
    persistent_workers: bool = field(
        default=True,
        metadata={"help": "keep data-loading workers between epochs (fairseq's own default; "
                  "fairseq_flea.tasks.loader_workers ends them when training ends)"},
    )


@register_task("emotion_classification", dataclass=EmotionClassificationConfig)
class EmotionClassificationTask(FastPathsTask, FairseqTask):
    """The training process's fast paths are those of the model it trains (``model.fast_paths``):
    fairseq builds the model before it loads data or trains."""

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
        self.fast_paths = fast_paths_of(cfg.get("fast_paths", "all"), "model.fast_paths")
        model = super().build_model(cfg, from_checkpoint)
        # fairseq builds the model from a copy of ``cfg`` and saves ``cfg`` itself in checkpoints:
        # the encoder's pretraining config the model filled in must reach it, or a fine-tuned
        # checkpoint would need its w2v_path to load.
        if cfg.get("w2v_args", None) is None and getattr(model.cfg, "w2v_args", None) is not None:
            with open_dict(cfg):
                cfg.w2v_args = model.cfg.w2v_args
        return model_with_fast_paths(model, self.fast_paths)

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
        self.dataset_with_fast_paths(self.datasets[split])
        logger.info(f"{split}: {len(self.datasets[split])} utterances, classes {self.class_names}")

    def max_positions(self) -> Tuple[int, int]:
        return (sys.maxsize, sys.maxsize)
