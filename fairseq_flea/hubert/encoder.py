"""A HuBERT encoder (no pretraining heads) built from a pretraining config and checkpoint."""

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from fairseq.dataclass.utils import merge_with_parent
from fairseq.models.hubert import HubertConfig, HubertModel
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fairseq_flea.hubert.checkpoints import hubert_model_config, load_checkpoint_state
from fairseq_flea.hubert.init_from import is_label_prediction_parameter
from fairseq_flea.io.errors import FleaInputError


def build_hubert_encoder(pretraining_cfg: DictConfig, overrides: Mapping[str, Any]) -> HubertModel:
    """A randomly initialised HubertModel of the config's architecture, without the
    label embeddings and final projection that only masked prediction uses."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(pretraining_cfg.model, resolve=True))
    with open_dict(model_cfg):
        model_cfg.update(overrides)
    model_cfg = merge_with_parent(HubertConfig(), model_cfg)
    task_cfg = HubertPretrainingConfig(sample_rate=int(pretraining_cfg.task.get("sample_rate", 16000)))
    encoder = HubertModel(model_cfg, task_cfg, [None])
    encoder.remove_pretraining_modules()
    return encoder


def check_normalize_matches(checkpoint_path: str, checkpoint_cfg: DictConfig, normalize: bool) -> None:
    """A run must feed a checkpoint the waveforms it was trained on (normalised or not)."""
    trained = bool(checkpoint_cfg.task.get("normalize", False))
    if trained != bool(normalize):
        raise FleaInputError(
            f"{checkpoint_path}: the checkpoint was trained with task.normalize={str(trained).lower()}; "
            f"set task.normalize={str(trained).lower()} to feed it the audio it expects"
        )


@dataclass
class HubertEncoderSource:
    path: str
    config: DictConfig  # the checkpoint's whole pretraining config (model and task)
    weights: Dict[str, torch.Tensor]

    def load_into(self, encoder: HubertModel) -> None:
        encoder_weights = {
            name: tensor for name, tensor in self.weights.items() if not is_label_prediction_parameter(name)
        }
        encoder.load_state_dict(encoder_weights, strict=True)


def load_hubert_encoder_source(path: str, state: Optional[Dict[str, Any]] = None) -> HubertEncoderSource:
    """A HuBERT checkpoint's config and weights (``state``: the already loaded checkpoint)."""
    state = state if state is not None else load_checkpoint_state(path)
    hubert_model_config(state, path)
    return HubertEncoderSource(path=path, config=state["cfg"], weights=state["model"])
