"""Starting HuBERT masked-prediction pretraining from an existing HuBERT checkpoint.

The architecture comes from the checkpoint; training-time settings (masking, dropout,
feature_grad_mult, ...) stay those of the run's own config. Every weight whose name and
shape match is loaded. The label-prediction parameters (label embeddings and the final
projection) are only reused when the run predicts the same labels as the checkpoint did.
"""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from fairseq.data import Dictionary
from omegaconf import DictConfig, open_dict

logger = logging.getLogger(__name__)

# HubertConfig fields that define the network's shape; everything else is training-time.
ARCHITECTURE_FIELDS = (
    "extractor_mode",
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
    "activation_fn",
    "layer_type",
    "final_dim",
    "untie_final_proj",
    "layer_norm_first",
    "conv_feature_layers",
    "conv_bias",
    "target_glu",
    "conv_pos",
    "conv_pos_groups",
    "conv_pos_batch_norm",
    "depthwise_conv_kernel_size",
    "attn_type",
    "pos_enc_type",
)

LABEL_PREDICTION_PREFIXES = ("label_embs_concat", "final_proj.")


def take_architecture(model_cfg: DictConfig, source_model_cfg: DictConfig) -> List[str]:
    """Copy the checkpoint's architecture into ``model_cfg`` in place; return what changed.

    In place, because fairseq saves the run's config object in its checkpoints: the
    result must describe the network that was actually trained.
    """
    changed = []
    with open_dict(model_cfg):
        for name in ARCHITECTURE_FIELDS:
            if name in source_model_cfg and model_cfg.get(name) != source_model_cfg[name]:
                changed.append(f"{name}={source_model_cfg[name]}")
                model_cfg[name] = source_model_cfg[name]
    return changed


def checkpoint_label_sizes(source_weights: Dict[str, torch.Tensor]) -> Optional[int]:
    """Total number of label classes the checkpoint was trained on (None if it has no label embeddings)."""
    embeddings = source_weights.get("label_embs_concat")
    return None if embeddings is None else int(embeddings.shape[0])


def same_labels_as_checkpoint(
    state: Dict[str, Any], dictionaries: Sequence[Dictionary]
) -> Tuple[bool, str]:
    """Whether the run predicts the checkpoint's labels, and why we think so."""
    run_sizes = [len(dictionary) for dictionary in dictionaries]
    source_classes = checkpoint_label_sizes(state["model"])
    if source_classes is None:
        return False, "the checkpoint has no label embeddings"
    source_dictionaries = (state.get("task_state") or {}).get("dictionaries")
    if source_dictionaries:
        same = [d.symbols for d in source_dictionaries] == [d.symbols for d in dictionaries]
        source_sizes = [len(d) for d in source_dictionaries]
        return same, (
            f"label dictionaries {'match' if same else 'differ'} "
            f"(checkpoint {source_sizes} symbols, run {run_sizes})"
        )
    same = source_classes == sum(run_sizes)
    return same, (
        f"the checkpoint stores no dictionary; its label embeddings have {source_classes} "
        f"rows, the run's dictionaries {sum(run_sizes)}"
    )


@dataclass
class WeightTransfer:
    loaded: List[str]
    created: List[str]
    unused: List[str]

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; created {len(self.created)} "
            f"({', '.join(self.created) or 'none'}); not used from the checkpoint: "
            f"{', '.join(self.unused) or 'none'}"
        )


def is_label_prediction_parameter(name: str) -> bool:
    return name.startswith(LABEL_PREDICTION_PREFIXES)


def transfer_weights(
    model: torch.nn.Module,
    source_weights: Dict[str, torch.Tensor],
    reuse_label_prediction: bool,
) -> WeightTransfer:
    """Load every matching weight into ``model``; the rest keep their fresh initialisation."""
    target_weights = model.state_dict()
    loadable = {
        name: tensor
        for name, tensor in source_weights.items()
        if name in target_weights
        and tensor.shape == target_weights[name].shape
        and (reuse_label_prediction or not is_label_prediction_parameter(name))
    }
    model.load_state_dict(loadable, strict=False)
    return WeightTransfer(
        loaded=sorted(loadable),
        created=sorted(name for name in target_weights if name not in loadable),
        unused=sorted(name for name in source_weights if name not in loadable),
    )
