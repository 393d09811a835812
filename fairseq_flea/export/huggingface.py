"""``tools/export_model.py huggingface``: a fine-tuned FLEA classifier as a transformers directory.

The directory loads offline with ``AutoModelForAudioClassification.from_pretrained(DIR,
trust_remote_code=True)`` and ``pipeline("audio-classification", model=DIR,
trust_remote_code=True)``. The model is ``modeling_flea_hubert.FleaHubertForAudioClassification``
(copied beside the weights): transformers' own ``HubertModel`` for the weights, our masked
GroupNorm in the feature encoder and our pooling. Stock ``HubertForSequenceClassification`` is
exact only for mean pooling on a layer-norm feature encoder (no GroupNorm over time); that case
is written without custom code (its projector set to the identity).
"""

import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional

import torch

from fairseq_flea.hubert.checkpoints import load_checkpoint_state
from fairseq_flea.hubert.conversion import huggingface_parameter_name
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.frames import parse_conv_layers

MODELING_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modeling_flea_hubert.py")


def import_transformers():
    """transformers, told that torchaudio is absent: the torchaudio fairseq pulls in cannot load
    its C library beside this torch, and transformers imports it whenever it is installed."""
    try:
        import transformers
        import transformers.utils.import_utils as import_utils
    except ImportError:
        raise FleaInputError("the huggingface export needs transformers: pip install transformers") from None
    import_utils.is_torchaudio_available = lambda: False
    transformers.utils.is_torchaudio_available = lambda: False
    return transformers


def load_modeling_module():
    """modeling_flea_hubert, imported from this package's copy."""
    import importlib.util

    import_transformers()
    spec = importlib.util.spec_from_file_location("modeling_flea_hubert", MODELING_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("modeling_flea_hubert", module)
    spec.loader.exec_module(module)
    return module


def hubert_config_kwargs(encoder_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """transformers ``HubertConfig`` arguments for a fairseq HuBERT model config (``w2v_args.model``)."""
    layers = parse_conv_layers(encoder_cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
    return dict(
        hidden_size=encoder_cfg.get("encoder_embed_dim", 768),
        num_hidden_layers=encoder_cfg.get("encoder_layers", 12),
        num_attention_heads=encoder_cfg.get("encoder_attention_heads", 12),
        intermediate_size=encoder_cfg.get("encoder_ffn_embed_dim", 3072),
        hidden_act=encoder_cfg.get("activation_fn", "gelu"),
        conv_dim=[d for d, _, _ in layers], conv_kernel=[k for _, k, _ in layers], conv_stride=[s for _, _, s in layers],
        conv_bias=bool(encoder_cfg.get("conv_bias", False)),
        feat_extract_norm="group" if encoder_cfg.get("extractor_mode", "default") == "default" else "layer",
        feat_extract_activation="gelu",
        num_conv_pos_embeddings=encoder_cfg.get("conv_pos", 128),
        num_conv_pos_embedding_groups=encoder_cfg.get("conv_pos_groups", 16),
        do_stable_layer_norm=bool(encoder_cfg.get("layer_norm_first", False)),
        feat_proj_layer_norm=True,
        mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
    )


def huggingface_weights(hf_names: List[str], fairseq_state: Dict[str, torch.Tensor], extractor_mode: str,
                        head: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """The HF model's weights by name, read from the fairseq classifier through
    ``hubert.conversion``'s mapping (run forwards on each HF name); ``head``: HF name -> ours."""
    weights = {}
    for name in hf_names:
        if name in head:
            weights[name] = fairseq_state[head[name]]
            continue
        ours = "encoder." + huggingface_parameter_name(name, extractor_mode)
        if ours in fairseq_state:
            weights[name] = fairseq_state[ours]
        elif name.endswith("feature_projection.projection.weight"):  # fairseq has no projection when dims agree
            weights[name] = torch.eye(len(fairseq_state["classifier.weight"][0]))
        elif name.endswith("feature_projection.projection.bias"):
            weights[name] = torch.zeros(len(fairseq_state["classifier.weight"][0]))
        else:
            raise FleaInputError(f"the classifier has no weight for {name} (fairseq name {ours})")
    return weights


def find_results(checkpoint_path: str) -> Optional[Dict[str, Any]]:
    """The results.json of tools/evaluate.py beside the checkpoint (or in eval_test/ there), if any."""
    directory = os.path.dirname(os.path.abspath(checkpoint_path))
    for candidate in (os.path.join(directory, "results.json"), os.path.join(directory, "eval_test", "results.json")):
        if os.path.isfile(candidate):
            try:
                with open(candidate) as results_file:
                    return json.load(results_file)
            except (OSError, ValueError):
                return None
    return None


def model_card(checkpoint_path: str, class_names: List[str], pooling: str, task_cfg: Dict[str, Any],
               stock: bool, command: str) -> str:
    lines = [
        "---", "library_name: transformers", "pipeline_tag: audio-classification", "tags: [speech-emotion-recognition, hubert, flea]", "---", "",
        "# FLEA speech emotion classifier", "",
        f"HuBERT encoder, {pooling} pooling over frames and a linear head, fine-tuned with fairseq-flea",
        f"(exported from `{os.path.basename(checkpoint_path)}`).", "",
        f"Classes: {', '.join(class_names)}.", "",
    ]
    if task_cfg.get("data"):
        lines += [f"Training data (the checkpoint's `task.data`): `{task_cfg['data']}`.", ""]
    results = find_results(checkpoint_path)
    if results:
        shown = {key: results[key] for key in ("split", "n", "ua", "wa") if key in results}
        lines += ["Evaluation (results.json beside the checkpoint): "
                  + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in shown.items()), ""]
    sample_rate = int(task_cfg.get("sample_rate", 16000))
    lines += [f"Input: mono {sample_rate} Hz audio; normalisation of the waveform: {bool(task_cfg.get('normalize', False))}.", ""]
    if stock:
        lines += ["This model is transformers' own `HubertForSequenceClassification` (mean pooling on a layer-norm",
                  "feature encoder is exact without custom code); `trust_remote_code` is not needed.", ""]
    else:
        lines += ["The model class is in `modeling_flea_hubert.py` (transformers' `HubertModel`, a feature encoder",
                  "whose GroupNorm ignores padding, so a file gets the same result alone or in a padded batch);",
                  "load it with `trust_remote_code=True`:", "",
                  "```python", "from transformers import pipeline",
                  "classify = pipeline(\"audio-classification\", model=\"DIR\", trust_remote_code=True)",
                  "classify(\"speech.wav\")", "```", ""]
    lines += ["Made with:", "", "```", command, "```", ""]
    return "\n".join(lines)


def load_classifier(checkpoint_path: str):
    """The fine-tuned classifier as EmotionRecognizer loads it (one error line for anything else)."""
    from fairseq_flea.inference.recognizer import EmotionRecognizer

    return EmotionRecognizer.load(checkpoint_path, device=torch.device("cpu"))


def build_huggingface_model(recognizer, stock_allowed: bool = True):
    """The transformers model holding the classifier's weights, in eval mode; and whether it is
    stock ``HubertForSequenceClassification`` (else ``FleaHubertForAudioClassification``)."""
    model = recognizer.model
    encoder_cfg = dict(model.cfg.w2v_args["model"])
    pooling = recognizer.pooling
    transformers = import_transformers()
    kwargs = hubert_config_kwargs(encoder_cfg)
    labels = dict(num_labels=len(recognizer.class_names),
                  id2label={i: name for i, name in enumerate(recognizer.class_names)},
                  label2id={name: i for i, name in enumerate(recognizer.class_names)})
    stock = stock_allowed and pooling == "mean" and kwargs["feat_extract_norm"] == "layer"
    fairseq_state = model.state_dict()
    if stock:
        config = transformers.HubertConfig(**kwargs, **labels, classifier_proj_size=kwargs["hidden_size"],
                                           use_weighted_layer_sum=False)
        hf_model = transformers.HubertForSequenceClassification(config)
        head = {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
        extra = {"projector.weight": torch.eye(kwargs["hidden_size"]), "projector.bias": torch.zeros(kwargs["hidden_size"])}
    else:
        modeling = load_modeling_module()
        modeling.FleaHubertConfig.register_for_auto_class()
        modeling.FleaHubertForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
        config = modeling.FleaHubertConfig(pooling=pooling, **kwargs, **labels)
        hf_model = modeling.FleaHubertForAudioClassification(config)
        head = {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
        if pooling == "attention":
            head["pooling_score.weight"] = "pooling.score.weight"
        extra = {}
    names = [name for name in hf_model.state_dict() if name not in extra]
    weights = {**huggingface_weights(names, fairseq_state, encoder_cfg.get("extractor_mode", "default"), head), **extra}
    hf_model.load_state_dict(weights, strict=True)
    return hf_model.eval(), stock


def export_huggingface(checkpoint_path: str, output_dir: str, command: Optional[str] = None) -> str:
    """Write the transformers directory; returns 'custom' or 'stock' (what the model class is)."""
    if os.path.exists(output_dir):
        raise FleaInputError(f"{output_dir}: already exists; give a new directory")
    recognizer = load_classifier(checkpoint_path)
    task_cfg = dict(load_checkpoint_state(checkpoint_path)["cfg"]["task"])
    pooling = recognizer.pooling
    hf_model, stock = build_huggingface_model(recognizer)
    transformers = import_transformers()
    feature_extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=recognizer.sample_rate, padding_value=0.0,
        do_normalize=recognizer.normalize, return_attention_mask=True,
    )
    command = command or " ".join(["python", "tools/export_model.py", "huggingface", checkpoint_path, output_dir])
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        hf_model.save_pretrained(partial, safe_serialization=True)
        feature_extractor.save_pretrained(partial)
        config_path = os.path.join(partial, "config.json")  # transformers leaves num_labels implicit in id2label
        with open(config_path) as config_file:
            saved = json.load(config_file)
        with open(config_path, "w") as config_file:
            json.dump({**saved, "num_labels": len(recognizer.class_names)}, config_file, indent=2, sort_keys=True)
        if not stock and not os.path.isfile(os.path.join(partial, "modeling_flea_hubert.py")):
            shutil.copy(MODELING_FILE, partial)
        with open(os.path.join(partial, "README.md"), "w") as card:
            card.write(model_card(checkpoint_path, recognizer.class_names, pooling, task_cfg, stock, command))
        os.replace(partial, output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return "stock" if stock else "custom"
