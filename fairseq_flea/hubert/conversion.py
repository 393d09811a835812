"""Converting checkpoints between FLEA's phases and from HuggingFace's HuBERT format.

Every output is a fairseq checkpoint (``cfg`` + ``model`` + the fields fairseq's loader
expects) without optimizer state:

- encoder-only HuBERT (from a pretraining checkpoint, or from a HuggingFace ``HubertModel``
  directory): a starting point for ``task.init_from``, ``model.w2v_path`` and
  ``tools/dump_feature.py``; no label embeddings or final projection;
(The fine-tuned classifier's inference conversion is ``fairseq_flea.inference.conversion``.)
"""

import json
import os
import re
from typing import Any, Dict, Mapping, Optional

import torch
from omegaconf import OmegaConf

from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.hubert.checkpoints import hubert_model_config, load_checkpoint_state
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.hubert.init_from import is_label_prediction_parameter


def as_container(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Plain dicts and lists all the way down, as fairseq saves configs (torch's safe
    loader would refuse omegaconf objects nested in them)."""
    return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)


def save_fairseq_checkpoint(
    path: str, cfg: Mapping[str, Any], weights: Mapping[str, torch.Tensor], task_state: Optional[dict] = None
) -> None:
    """A checkpoint fairseq's ``load_checkpoint_to_cpu`` accepts, with no optimizer state."""
    state = {
        "args": None,
        "cfg": as_container(cfg),
        "model": dict(weights),
        "criterion": None,
        "optimizer_history": [
            {"criterion_name": "none", "optimizer_name": "none", "lr_scheduler_state": {}, "num_updates": 0}
        ],
        "task_state": task_state or {},
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    with atomic_outputs(path) as (partial,):
        torch.save(state, partial)


def pretraining_to_encoder(source_path: str, output_path: str) -> None:
    """Keep a HuBERT pretraining checkpoint's encoder and config; drop labels and optimizer."""
    state = load_checkpoint_state(source_path)
    hubert_model_config(state, source_path)
    weights = {name: t for name, t in state["model"].items() if not is_label_prediction_parameter(name)}
    save_fairseq_checkpoint(output_path, {"model": state["cfg"].model, "task": state["cfg"].task}, weights)


# HuggingFace HubertModel parameter names -> fairseq HubertModel names.
HUGGINGFACE_RENAMES = [
    (r"^masked_spec_embed$", "mask_emb"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
]


def huggingface_parameter_name(name: str, extractor_mode: str) -> str:
    name = re.sub(r"^hubert\.", "", name)
    if extractor_mode == "default":  # one GroupNorm, after the first convolution
        name = re.sub(r"^feature_extractor\.conv_layers\.0\.layer_norm\.", "feature_extractor.conv_layers.0.2.", name)
    else:  # a LayerNorm after every convolution, inside fairseq's TransposeLast sandwich
        name = re.sub(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.2.1.", name)
    for pattern, replacement in HUGGINGFACE_RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def huggingface_hubert_config(hf: Mapping[str, Any], normalize: bool) -> Dict[str, Any]:
    """fairseq model and task config for a HuggingFace ``HubertConfig`` (config.json)."""
    if hf.get("model_type") != "hubert":
        raise FleaInputError(f"config.json describes a {hf.get('model_type')!r} model, not 'hubert'")
    layers = ", ".join(f"({d},{k},{s})" for d, k, s in zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"]))
    extractor_mode = "default" if hf.get("feat_extract_norm", "group") == "group" else "layer_norm"
    model = {
        "_name": "hubert",
        "label_rate": 50.0,
        "extractor_mode": extractor_mode,
        "conv_feature_layers": f"[{layers}]",
        "conv_bias": bool(hf.get("conv_bias", False)),
        "encoder_layers": hf["num_hidden_layers"],
        "encoder_embed_dim": hf["hidden_size"],
        "encoder_ffn_embed_dim": hf["intermediate_size"],
        "encoder_attention_heads": hf["num_attention_heads"],
        "activation_fn": hf.get("hidden_act", "gelu"),
        "conv_pos": hf["num_conv_pos_embeddings"],
        "conv_pos_groups": hf["num_conv_pos_embedding_groups"],
        "layer_norm_first": bool(hf.get("do_stable_layer_norm", False)),
    }
    task = {"_name": "hubert_pretraining", "sample_rate": 16000, "normalize": normalize, "label_rate": 50.0}
    return {"model": model, "task": task}


def read_huggingface_weights(directory: str) -> Dict[str, torch.Tensor]:
    safetensors_path = os.path.join(directory, "model.safetensors")
    bin_path = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file

        return load_file(safetensors_path)
    if os.path.isfile(bin_path):
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise FleaInputError(f"{directory}: neither model.safetensors nor pytorch_model.bin found")


def huggingface_to_fairseq(directory: str, output_path: str) -> None:
    """Convert a HuggingFace ``HubertModel`` directory (e.g. facebook/hubert-base-ls960)."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FleaInputError(f"{config_path}: not found (expected a HuggingFace model directory)")
    with open(config_path) as config_file:
        hf_config = json.load(config_file)
    preprocessor_path = os.path.join(directory, "preprocessor_config.json")
    normalize = hf_config.get("feat_extract_norm") == "layer"
    if os.path.isfile(preprocessor_path):
        with open(preprocessor_path) as preprocessor_file:
            normalize = bool(json.load(preprocessor_file).get("do_normalize", normalize))
    cfg = huggingface_hubert_config(hf_config, normalize)
    weights = {
        huggingface_parameter_name(name, cfg["model"]["extractor_mode"]): tensor
        for name, tensor in read_huggingface_weights(directory).items()
    }
    from fairseq_flea.hubert.encoder import build_hubert_encoder

    encoder = build_hubert_encoder(OmegaConf.create(cfg), {})
    # HuggingFace leaves the mask embedding out when its config masks nothing; it only
    # matters for masking, so the fresh one stands in.
    weights.setdefault("mask_emb", encoder.mask_emb.detach().clone())
    # Loading once makes a name or shape the mapping got wrong fail here, not later.
    encoder.load_state_dict(weights, strict=True)
    save_fairseq_checkpoint(output_path, cfg, weights)
