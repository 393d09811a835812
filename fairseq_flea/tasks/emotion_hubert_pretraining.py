"""Task ``emotion_hubert_pretraining``: HuBERT masked prediction, continued from a checkpoint.

FLEA's phases 1b (TAPT on the released 500 units) and 3 (CPT on K pseudo-emotion clusters).
Everything that trains is fairseq's own: ``HubertDataset``, ``HubertModel`` and the
``hubert`` criterion. This task adds what FLEA needs on top: ``init_from`` (start from a
HuBERT checkpoint, re-creating the label embeddings when the labels changed) and input
checks that fail with one clear line where fairseq would warn, guess or crash deep inside.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask

from fairseq_flea.hubert.checkpoints import hubert_model_config, load_checkpoint_state
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.hubert.encoder import check_normalize_matches
from fairseq_flea.hubert.fast_path_names import HELP as FAST_PATHS_HELP
from fairseq_flea.hubert.fast_paths import batches_never_padded
from fairseq_flea.hubert.init_from import (
    same_labels_as_checkpoint,
    take_architecture,
    transfer_weights,
)
from fairseq_flea.io.manifest import check_frame_labels, read_manifest
from fairseq_flea.tasks.training_paths import FastPathsTask, fast_paths_of, model_with_fast_paths

logger = logging.getLogger(__name__)

LABEL_EMBEDDING_CHOICES = ChoiceEnum(["auto", "load", "reset"])


@dataclass
class EmotionHubertPretrainingConfig(HubertPretrainingConfig):
    init_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "HuBERT checkpoint to start from (released, TAPT or CPT); its "
            "architecture replaces the model config's. Unset: train from scratch"
        },
    )
    label_embeddings: LABEL_EMBEDDING_CHOICES = field(  # type: ignore
        default="auto",
        metadata={
            "help": "label embeddings and final projection of init_from: 'auto' reuses "
            "them when its label dictionary is the run's, 'load' always (error if the "
            "sizes differ), 'reset' never (new clusters, e.g. CPT)"
        },
    )
    label_tolerance_seconds: float = field(
        default=0.1,
        metadata={"help": "largest allowed difference between audio and label duration"},
    )
    # Read by fairseq's get_batch_iterator, which keeps workers when a task has no such field.
    persistent_workers: bool = field(
        default=True,
        metadata={"help": "keep data-loading workers between epochs (fairseq's own default; "
                  "fairseq_flea.tasks.loader_workers ends them when training ends)"},
    )
    fast_paths: str = field(default="all", metadata={"help": FAST_PATHS_HELP})


@register_task("emotion_hubert_pretraining", dataclass=EmotionHubertPretrainingConfig)
class EmotionHubertPretrainingTask(FastPathsTask, HubertPretrainingTask):
    cfg: EmotionHubertPretrainingConfig

    def __init__(self, cfg: EmotionHubertPretrainingConfig) -> None:
        self.fast_paths = fast_paths_of(cfg.fast_paths, "task.fast_paths")
        super().__init__(cfg)

    def load_dictionaries(self) -> List[Dictionary]:
        for label in self.cfg.labels:
            path = os.path.join(self.get_label_dir(), f"dict.{label}.txt")
            if not os.path.isfile(path):
                raise FleaInputError(
                    f"{path}: label dictionary not found (task.labels={list(self.cfg.labels)} "
                    f"needs dict.<label>.txt in task.label_dir)"
                )
        return super().load_dictionaries()

    def load_dataset(self, split: str, **kwargs) -> None:
        manifest = read_manifest(os.path.join(self.cfg.data, f"{split}.tsv"))
        dictionaries = [self.target_dictionary] if self.cfg.fine_tuning else self.dictionaries
        if self.cfg.label_rate > 0:
            for label, dictionary in zip(self.cfg.labels, dictionaries):
                check_frame_labels(
                    manifest,
                    os.path.join(self.get_label_dir(), f"{split}.{label}"),
                    label_rate=self.cfg.label_rate,
                    sample_rate=self.cfg.sample_rate,
                    tolerance_seconds=self.cfg.label_tolerance_seconds,
                    known_symbols=dictionary.indices,
                )
        super().load_dataset(split, **kwargs)
        self.dataset_with_fast_paths(self.datasets[split])

    def build_model(self, cfg, from_checkpoint: bool = False):
        # A model restored from one of our own checkpoints already has its weights and
        # architecture; init_from only seeds a new training run.
        if self.cfg.init_from is None or from_checkpoint:
            model = super().build_model(cfg, from_checkpoint)
        else:
            model = self.build_model_from(self.cfg.init_from, cfg)
        self.encoder_with_fast_paths(model)
        if not self.cfg.pad_audio and "padding-known-on-host" in self.fast_paths:
            batches_never_padded(model)
        return model_with_fast_paths(model, self.fast_paths)

    def build_model_from(self, source_path: str, cfg):
        """fairseq's HuBERT with the architecture and weights of the checkpoint at ``source_path``."""
        state = load_checkpoint_state(source_path)
        source_model_cfg = hubert_model_config(state, source_path)
        check_normalize_matches(source_path, state["cfg"], self.cfg.normalize)

        changed = take_architecture(cfg, source_model_cfg)
        if changed:
            logger.info(f"architecture from {source_path}: {', '.join(changed)}")
        model = super().build_model(cfg)

        same_labels, reason = same_labels_as_checkpoint(state, self.dictionaries)
        reuse = {"auto": same_labels, "load": True, "reset": False}[self.cfg.label_embeddings]
        transfer = transfer_weights(model, state["model"], reuse_label_prediction=reuse)
        if reuse and "label_embs_concat" in transfer.created:
            raise FleaInputError(
                f"{source_path}: task.label_embeddings=load, but {reason}; use auto or reset"
            )
        logger.info(
            f"init_from {source_path}: {reason}, so label embeddings and final projection "
            f"are {'loaded' if reuse else 're-created'} (task.label_embeddings="
            f"{self.cfg.label_embeddings})"
        )
        logger.info(f"init_from {source_path}: {transfer.summary()}")
        return model
