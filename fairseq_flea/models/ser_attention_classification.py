"""Model ``ser_attention_classification``: a HuBERT encoder, utterance pooling and a linear
classifier (FLEA phase 1c with mean pooling, phase 4 with the paper's soft attention).

The encoder comes from ``w2v_path`` (a released, TAPT or CPT HuBERT checkpoint, or an
encoder-only checkpoint from tools/convert_checkpoint.py). Its pretraining config is kept
in ``w2v_args``, so a fine-tuned checkpoint is self-contained, as fairseq's ``hubert_ctc``.
The encoder runs through the padding-safe forward of ``fairseq_flea.hubert.forward``: an
utterance's logits do not depend on what it is batched with.
"""

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Union

import torch
import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II, MISSING, OmegaConf, open_dict

from fairseq_flea.hubert.encoder import (
    HubertEncoderSource,
    build_hubert_encoder,
    check_normalize_matches,
    load_hubert_encoder_source,
)
from fairseq_flea.hubert.fast_path_names import HELP as FAST_PATHS_HELP
from fairseq_flea.hubert.fast_path_names import parse_fast_paths
from fairseq_flea.hubert.fast_paths import use_fast_paths
from fairseq_flea.hubert.forward import hubert_forward
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.models.pooling import build_pooling

logger = logging.getLogger(__name__)

CLASSIFIER_MODEL = "ser_attention_classification"
POOLING_CHOICES = ChoiceEnum(["attention", "mean"])


@dataclass
class SerClassificationConfig(FairseqDataclass):
    w2v_path: str = field(default=MISSING, metadata={"help": "HuBERT checkpoint the encoder starts from"})
    w2v_args: Any = field(default=None, metadata={"help": "the encoder's pretraining config (filled in automatically)"})
    normalize: bool = II("task.normalize")
    pooling: POOLING_CHOICES = field(default="attention", metadata={"help": "attention (paper eq. 2-3) or mean"})  # type: ignore
    final_dropout: float = field(default=0.1, metadata={"help": "dropout on the pooled vector, before the classifier"})
    freeze_encoder_updates: int = field(
        default=0, metadata={"help": "train only pooling and classifier for this many updates"}
    )
    # Settings given to the encoder (its pretraining values are replaced by these).
    feature_grad_mult: float = field(default=0.0, metadata={"help": "0 freezes the CNN feature extractor"})
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.05
    dropout_input: float = 0.0
    apply_mask: bool = field(default=False, metadata={"help": "mask time steps during fine-tuning (augmentation)"})
    mask_prob: float = 0.5
    mask_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_length: int = 10
    fast_paths: str = field(default="all", metadata={"help": FAST_PATHS_HELP})


ENCODER_PREFIX = "encoder."


def classifier_encoder_source(path: str, state: Dict[str, Any]) -> HubertEncoderSource:
    """The HuBERT encoder inside a fine-tuned classifier's checkpoint ``state``: its
    pretraining config (``model.w2v_args``) and its weights, named as in a HuBERT checkpoint."""
    weights = {name[len(ENCODER_PREFIX):]: tensor for name, tensor in state["model"].items()
               if name.startswith(ENCODER_PREFIX)}
    config = state["cfg"]["model"]["w2v_args"]
    if config is None:
        raise FleaInputError(f"{path}: the classifier's checkpoint holds no encoder config (model.w2v_args); "
                             f"fine-tune it again with this version of fairseq_flea")
    return HubertEncoderSource(path=path, config=OmegaConf.create(config), weights=weights)


ENCODER_OVERRIDES = (
    "feature_grad_mult", "dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
    "dropout_input", "mask_prob", "mask_length", "mask_channel_prob", "mask_channel_length",
)


@register_model(CLASSIFIER_MODEL, dataclass=SerClassificationConfig)
class SerAttentionClassificationModel(BaseFairseqModel):
    def __init__(self, cfg: SerClassificationConfig, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.encoder.embedding_dim
        self.pooling = build_pooling(cfg.pooling, dim)
        self.final_dropout = nn.Dropout(cfg.final_dropout)
        self.classifier = nn.Linear(dim, num_classes)
        self.num_updates = 0

    @classmethod
    def build_model(cls, cfg: SerClassificationConfig, task) -> "SerAttentionClassificationModel":
        overrides = {name: cfg[name] for name in ENCODER_OVERRIDES}
        if cfg.w2v_args is None:
            source = load_hubert_encoder_source(cfg.w2v_path)
            with open_dict(cfg):
                cfg.w2v_args = source.config
            encoder = build_hubert_encoder(source.config, overrides)
            source.load_into(encoder)
        else:
            encoder = build_hubert_encoder(cfg.w2v_args, overrides)
        check_normalize_matches(cfg.w2v_path, cfg.w2v_args, cfg.normalize)
        # The training task has checked the value (tasks.training_paths) and applies the
        # paths that concern the whole model.
        use_fast_paths(encoder, parse_fast_paths(cfg.get("fast_paths", "all")))
        return cls(cfg, encoder, len(task.class_names))

    def set_num_updates(self, num_updates: int) -> None:
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def forward(
        self, source: torch.Tensor, lengths: Union[torch.Tensor, Sequence[int]], **kwargs
    ) -> Dict[str, torch.Tensor]:
        encoder_frozen = self.num_updates < self.cfg.freeze_encoder_updates
        with torch.no_grad() if encoder_frozen else contextlib.nullcontext():
            frames, padding_mask = hubert_forward(
                self.encoder, source, lengths, mask=self.cfg.apply_mask and self.training
            )
        pooled, weights = self.pooling(frames, padding_mask)
        return {
            "logits": self.classifier(self.final_dropout(pooled)),
            "frame_weights": weights,
            "padding_mask": padding_mask,
        }
