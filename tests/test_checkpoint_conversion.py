"""tools/convert_checkpoint.py: encoder-only, HuggingFace -> fairseq, classifier -> inference;
one encoder whichever checkpoint kind it arrives in; loading a classifier changes nothing
process-wide."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401
from conftest import REPO_ROOT, run_python_tool
from fairseq_flea.hubert.conversion import save_fairseq_checkpoint
from fairseq_flea.units.layer_features import LayerFeatureExtractor, load_feature_model
from fairseq_flea.hubert.forward import hubert_forward
from fairseq_flea.inference.recognizer import EmotionRecognizer
from test_pretraining import build_model_at_update_zero


def converted(kind, source, output):
    result = run_python_tool("convert_checkpoint.py", kind, source, output)
    assert result.returncode == 0, result.stderr[-2000:]
    return output


@pytest.fixture(scope="module")
def encoder_only(scratch_run, tmp_path_factory):
    return converted("encoder", scratch_run[0], tmp_path_factory.mktemp("encoder") / "encoder.pt")


def test_encoder_only_checkpoint_is_small_and_has_no_label_parts(encoder_only, scratch_run):
    state = torch.load(encoder_only, map_location="cpu")
    assert not any(name.startswith(("label_embs", "final_proj")) for name in state["model"])
    assert state["last_optimizer_state"] is None
    assert encoder_only.stat().st_size < 0.5 * scratch_run[0].stat().st_size


def test_encoder_only_checkpoint_starts_pretraining(encoder_only, scratch_run, tone_corpus):
    _, model = build_model_at_update_zero(
        "flea_cpt_tiny",
        **{
            "task.data": str(tone_corpus / "data"),
            "task.label_dir": str(tone_corpus / "labels5"),
            "task.init_from": str(encoder_only),
        },
    )
    source = torch.load(scratch_run[0], map_location="cpu")["model"]
    for name, tensor in model.state_dict().items():
        if name.startswith(("feature_extractor.", "encoder.")):
            assert torch.equal(tensor, source[name]), name


def test_encoder_only_checkpoint_gives_the_same_features(encoder_only, scratch_run):
    original, converted_model = load_feature_model(str(scratch_run[0])), load_feature_model(str(encoder_only))
    wave = torch.randn(1, 20000) * 0.1
    lengths = torch.tensor([20000])
    with torch.no_grad():
        a, _ = hubert_forward(original.hubert, wave, lengths, output_layer=2)
        b, _ = hubert_forward(converted_model.hubert, wave, lengths, output_layer=2)
    assert torch.equal(a, b)


def test_a_classifiers_layer_gives_the_features_of_the_same_weights_as_a_hubert_checkpoint(attention_finetune, tmp_path):
    """tools/dump_feature.py builds both kinds the same way: the classifier's encoder, saved as a
    plain HuBERT checkpoint, gives bit for bit the same features of each layer."""
    state = torch.load(attention_finetune[0], map_location="cpu", weights_only=False)
    w2v_args = state["cfg"]["model"]["w2v_args"]
    as_hubert = tmp_path / "hubert.pt"
    save_fairseq_checkpoint(str(as_hubert), {"model": w2v_args["model"], "task": w2v_args["task"]},
                            {name[len("encoder."):]: t for name, t in state["model"].items() if name.startswith("encoder.")})
    classifier, hubert = load_feature_model(str(attention_finetune[0])), load_feature_model(str(as_hubert))
    waves = [torch.randn(20000) * 0.1, torch.randn(13000) * 0.1]
    for layer in (1, 2):
        ours = LayerFeatureExtractor(classifier, layer, batch_seconds=10).features(waves)
        theirs = LayerFeatureExtractor(hubert, layer, batch_seconds=10).features(waves)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), layer
    assert not hasattr(classifier.hubert, "empty_mask_check")  # no fast path: fairseq's own modules


def test_a_fine_tuned_checkpoint_loads_without_its_pretraining_checkpoint(attention_finetune, emotion_corpus, tmp_path):
    state = torch.load(attention_finetune[0], map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == "hubert"
    state["cfg"]["model"]["w2v_path"] = str(tmp_path / "moved_away.pt")
    torch.save(state, tmp_path / "classifier.pt")
    wav = str(next((emotion_corpus / "wav").glob("test_*.wav")))
    moved = EmotionRecognizer.load(str(tmp_path / "classifier.pt")).predict_files([wav])[0]
    original = EmotionRecognizer.load(str(attention_finetune[0])).predict_files([wav])[0]
    assert np.array_equal(moved.probabilities, original.probabilities)


def test_inference_checkpoint_predicts_like_the_fine_tuned_one(attention_finetune, emotion_corpus, tmp_path):
    checkpoint, _ = attention_finetune
    inference = converted("inference", checkpoint, tmp_path / "inference.pt")
    # The fine-tuning configs already save weights only; the conversion adds nothing to them.
    assert "last_optimizer_state" not in torch.load(checkpoint, map_location="cpu")
    assert torch.load(inference, map_location="cpu").get("last_optimizer_state") is None
    assert inference.stat().st_size <= checkpoint.stat().st_size
    wav = str(next((emotion_corpus / "wav").glob("test_*.wav")))
    a = EmotionRecognizer.load(str(checkpoint)).predict_files([wav])[0]
    b = EmotionRecognizer.load(str(inference)).predict_files([wav])[0]
    assert a.probabilities.argmax() == b.probabilities.argmax()
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-6
    state = torch.load(inference, map_location="cpu")
    assert state["task_state"]["target_dictionary"].symbols[-4:] == ["ang", "hap", "neu", "sad"]


def test_inference_conversion_refuses_a_pretraining_checkpoint(scratch_run, tmp_path):
    result = run_python_tool("convert_checkpoint.py", "inference", scratch_run[0], tmp_path / "x.pt")
    assert result.returncode == 1
    assert "not a fine-tuned emotion classifier" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.pt").exists()


def import_transformers_hubert():
    """transformers imports torchaudio whenever it is installed, and the torchaudio that
    fairseq pulls in cannot load its C library beside this torch: tell transformers it is absent."""
    transformers = pytest.importorskip("transformers")
    import transformers.utils.import_utils as import_utils

    import_utils.is_torchaudio_available = lambda: False
    transformers.utils.is_torchaudio_available = lambda: False
    from transformers import HubertConfig, HubertModel

    return HubertConfig, HubertModel


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_huggingface_hubert_converts_layer_for_layer(weights_file, tmp_path):
    HubertConfig, HubertModel = import_transformers_hubert()
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128,
        conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group",
    )
    hf_model = HubertModel(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    if weights_file == "pytorch_model.bin":  # the older form, as facebook/hubert-base-ls960 ships
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(hf_model.state_dict(), tmp_path / "hf" / weights_file)
    assert (tmp_path / "hf" / weights_file).exists()

    output = converted("huggingface", tmp_path / "hf", tmp_path / "fairseq.pt")
    model = load_feature_model(str(output))
    assert isinstance(model.hubert.feature_extractor.conv_layers[0][2], torch.nn.GroupNorm)
    wave = torch.randn(1, 24000) * 0.1
    with torch.no_grad():
        hidden_states = hf_model(wave, output_hidden_states=True).hidden_states
        for layer in range(1, config.num_hidden_layers + 1):
            ours, _ = hubert_forward(model.hubert, wave, torch.tensor([24000]), output_layer=layer)
            assert ours.shape == hidden_states[layer].shape
            assert (ours - hidden_states[layer]).abs().max() < 1e-4, layer
    assert OmegaConf.create(torch.load(output, map_location="cpu")["cfg"]).model.encoder_layers == 3


PROBE = """
import json, sys
import torch
from torch.utils.data import dataloader
from fairseq import checkpoint_utils, utils


def state():
    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    return {
        "sdp": [cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
                cuda.math_sdp_enabled()],
        "tf32": [cudnn.allow_tf32, cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()],
        "cudnn": [cudnn.enabled, cudnn.benchmark, cudnn.deterministic],
        "threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "defaults": [str(torch.get_default_dtype()), torch.is_grad_enabled()],
        "fairseq": [checkpoint_utils.save_checkpoint.__module__, utils.set_torch_seed.__module__],
        "loader": dataloader._MultiProcessingDataLoaderIter.__init__.__module__,
    }


before = state()
import fairseq_flea  # noqa: F401
from fairseq_flea.inference.recognizer import EmotionRecognizer

imported = state()
recognizer = EmotionRecognizer.load(sys.argv[1], device=torch.device("cpu"))
loaded = state()
recognizer.predict_waveforms([torch.randn(16000), torch.randn(24000)])
print(json.dumps({"before": before, "imported": imported, "loaded": loaded, "predicted": state()}))
"""


def test_loading_and_predicting_leave_torch_and_fairseq_as_they_were(attention_finetune):
    result = subprocess.run([sys.executable, "-c", PROBE, str(attention_finetune[0])], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    states = json.loads(result.stdout.splitlines()[-1])
    assert states["before"]["fairseq"] == ["fairseq.checkpoint_utils", "fairseq.utils"]
    for moment in ("imported", "loaded", "predicted"):
        assert states[moment] == states["before"], moment
