"""Loading fairseq checkpoints safely and recognising what kind of model they hold."""

import argparse
import os
from typing import Any, Dict

import torch
from omegaconf import DictConfig

from fairseq_flea.io.errors import FleaInputError


def allow_fairseq_checkpoint_types() -> None:
    """Let torch>=2.6 (``weights_only=True``) unpickle what fairseq stores in checkpoints.

    fairseq checkpoints hold label dictionaries, argparse namespaces (old releases) and
    omegaconf containers besides tensors. Only these types are added to torch's
    allow-list; the safety check itself stays on.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 does not restrict unpickling
        return
    import omegaconf
    from fairseq.data.dictionary import Dictionary

    add_safe_globals(
        [
            Dictionary,
            argparse.Namespace,
            omegaconf.DictConfig,
            omegaconf.ListConfig,
            omegaconf.base.ContainerMetadata,
            omegaconf.base.Metadata,
            omegaconf.nodes.AnyNode,
        ]
    )


def read_checkpoint_file(path: str) -> Dict[str, Any]:
    """fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (a local file, no overrides), with
    the file's tensors memory-mapped instead of read: a TAPT or CPT checkpoint is 1.1 GB, two
    thirds of it optimizer state that continued pretraining, fine-tuning and feature dumps
    never touch (BENCHMARKS.md: 1.1-2.6 s against 0.2 s for HuBERT base). The mapping is
    private: changing a tensor never changes the file."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    try:
        state = torch.load(path, map_location="cpu", mmap=True)
    except (RuntimeError, OSError):  # saved in torch's legacy (pre-1.6) format, or cannot be mapped
        state = torch.load(path, map_location="cpu")
    if isinstance(state, dict) and state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})  # as fairseq's (omegaconf >= 2.2)
    return checkpoint_utils._upgrade_state_dict(state) if isinstance(state, dict) else state


def load_checkpoint_state(path: str) -> Dict[str, Any]:
    """Load a fairseq checkpoint onto the CPU; a missing or foreign file is a clear error."""
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: checkpoint not found")
    try:
        state = read_checkpoint_file(path)
    except Exception as error:  # torch raises a different type for each way a file is foreign
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in first_line:  # torch's advice to turn safe loading off is not for this file
            first_line = "it holds objects that are not part of a fairseq checkpoint"
        raise FleaInputError(f"{path}: not a readable fairseq checkpoint ({first_line})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise FleaInputError(f"{path}: not a fairseq checkpoint (it has no 'model' weights)")
    return state


def checkpoint_model_name(state: Dict[str, Any]) -> str:
    """The registered fairseq model name a checkpoint was trained with ('' if unknown)."""
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        return str(cfg.model.get("_name", "") or "")
    args = state.get("args")
    if args is not None:
        return str(getattr(args, "arch", "") or "")
    return ""


def hubert_model_config(state: Dict[str, Any], path: str) -> DictConfig:
    """The HuBERT model config of a pretraining checkpoint, or a clear error if it is not one."""
    model_name = checkpoint_model_name(state)
    has_hubert_weights = any(key.startswith("feature_extractor.") for key in state["model"])
    if model_name != "hubert" or not has_hubert_weights:
        raise FleaInputError(
            f"{path}: not a HuBERT pretraining checkpoint (its model is "
            f"{model_name or 'unknown'!r}; expected 'hubert')"
        )
    return state["cfg"].model
