"""tools/export_model.py: the classifier outside fairseq, with fairseq's probabilities."""

import json

import numpy as np
import pytest
import torch

import fairseq_flea  # noqa: F401
from conftest import run_python_tool
from fairseq_flea.inference.recognizer import EmotionRecognizer

pytest.importorskip("transformers")


def held_out_waveforms():
    """Two tone-like utterances of different lengths, not in any training split."""
    rng = np.random.default_rng(7)
    t1, t2 = np.arange(16000) / 16000, np.arange(27200) / 16000
    return [
        (0.3 * np.sin(2 * np.pi * 220 * t1) + 0.01 * rng.standard_normal(t1.size)).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 440 * t2) + 0.01 * rng.standard_normal(t2.size)).astype(np.float32),
    ]


def fairseq_probabilities(checkpoint, waveforms):
    recognizer = EmotionRecognizer.load(str(checkpoint), device=torch.device("cpu"))
    return recognizer, [p.probabilities for p in recognizer.predict_waveforms(waveforms)]


@pytest.fixture(scope="module", params=["attention", "mean"])
def exported(request, tmp_path_factory):
    checkpoint = request.getfixturevalue(f"{request.param}_finetune")[0]
    out_dir = tmp_path_factory.mktemp(f"hf_{request.param}") / "model"
    result = run_python_tool("export_model.py", "huggingface", checkpoint, out_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, checkpoint, out_dir


def test_huggingface_export_writes_an_offline_transformers_directory(exported):
    pooling, checkpoint, out_dir = exported
    recognizer = EmotionRecognizer.load(str(checkpoint), device=torch.device("cpu"))
    config = json.loads((out_dir / "config.json").read_text())
    assert config["num_labels"] == len(recognizer.class_names)
    assert [config["id2label"][str(i)] for i in range(config["num_labels"])] == recognizer.class_names
    assert config["label2id"] == {name: i for i, name in enumerate(recognizer.class_names)}
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_flea_hubert.FleaHubertForAudioClassification"
    assert config["pooling"] == pooling
    preprocessor = json.loads((out_dir / "preprocessor_config.json").read_text())
    assert preprocessor["do_normalize"] is recognizer.normalize and preprocessor["return_attention_mask"] is True
    assert (out_dir / "model.safetensors").exists() and (out_dir / "modeling_flea_hubert.py").exists()
    card = (out_dir / "README.md").read_text()
    assert all(name in card for name in recognizer.class_names) and "tools/export_model.py huggingface" in card


def test_huggingface_model_gives_fairseqs_probabilities_alone_and_padded(exported):
    from fairseq_flea.export.huggingface import import_transformers

    pooling, checkpoint, out_dir = exported
    transformers = import_transformers()
    waveforms = held_out_waveforms()
    _, expected = fairseq_probabilities(checkpoint, waveforms)
    model = transformers.AutoModelForAudioClassification.from_pretrained(str(out_dir), trust_remote_code=True).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(out_dir))
    with torch.no_grad():
        for waveform, probabilities in zip(waveforms, expected):  # alone
            inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")
            alone = torch.softmax(model(**inputs).logits, -1)[0].numpy()
            assert np.abs(alone - probabilities).max() < 1e-4
        batch = extractor(waveforms, sampling_rate=16000, return_tensors="pt", padding=True)
        assert batch["attention_mask"].shape == (2, 27200)
        output = model(**batch)
        padded = torch.softmax(output.logits, -1).numpy()
    assert np.abs(padded - np.stack(expected)).max() < 1e-4
    # the frame view: logits are the pooling-weighted sum of the frame logits
    summed = torch.einsum("bt,btc->bc", output.frame_weights, output.frame_logits)
    assert (summed - output.logits).abs().max() < 1e-4

    classify = transformers.pipeline("audio-classification", model=str(out_dir), trust_remote_code=True)
    scores = {row["label"]: row["score"] for row in classify(waveforms[1], top_k=None)}
    recognizer_names = json.loads((out_dir / "config.json").read_text())["id2label"]
    for index, probability in enumerate(expected[1]):
        assert abs(scores[recognizer_names[str(index)]] - probability) < 1e-4


def test_export_refuses_a_checkpoint_that_is_not_a_classifier_and_an_existing_output(scratch_run, attention_finetune, tmp_path):
    result = run_python_tool("export_model.py", "huggingface", scratch_run[0], tmp_path / "out")
    assert result.returncode == 1 and "not an emotion classifier" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    result = run_python_tool("export_model.py", "huggingface", attention_finetune[0], tmp_path / "taken")
    assert result.returncode == 1 and "already exists" in result.stderr and "Traceback" not in result.stderr


def test_mean_pooling_on_a_layer_norm_encoder_is_stock_transformers_and_exact(mean_finetune, tmp_path):
    """No GroupNorm over time, mean pooling: HubertForSequenceClassification, no custom code."""
    from omegaconf import OmegaConf

    from fairseq_flea.export.huggingface import import_transformers
    from fairseq_flea.hubert.checkpoints import load_checkpoint_state
    from fairseq_flea.hubert.encoder import build_hubert_encoder

    state = load_checkpoint_state(str(mean_finetune[0]))
    cfg = OmegaConf.create(OmegaConf.to_container(state["cfg"]))
    cfg.model.w2v_args.model.extractor_mode = "layer_norm"
    torch.manual_seed(0)
    encoder = build_hubert_encoder(cfg.model.w2v_args, {})
    for parameter in encoder.parameters():  # layer norms away from the identity
        if parameter.dim() == 1:
            parameter.data += 0.1 * torch.randn_like(parameter)
    state["model"] = {**{k: v for k, v in state["model"].items() if not k.startswith("encoder.")},
                      **{"encoder." + k: v for k, v in encoder.state_dict().items()}}
    state["cfg"] = OmegaConf.to_container(cfg)
    torch.save(state, tmp_path / "layer_norm_mean.pt")
    result = run_python_tool("export_model.py", "huggingface", tmp_path / "layer_norm_mean.pt", tmp_path / "hf")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["HubertForSequenceClassification"] and "auto_map" not in config
    assert not (tmp_path / "hf" / "modeling_flea_hubert.py").exists()
    transformers = import_transformers()
    waveforms = held_out_waveforms()
    _, expected = fairseq_probabilities(tmp_path / "layer_norm_mean.pt", waveforms)
    model = transformers.AutoModelForAudioClassification.from_pretrained(str(tmp_path / "hf")).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(tmp_path / "hf"))
    with torch.no_grad():
        for waveform, probabilities in zip(waveforms, expected):
            alone = torch.softmax(model(**extractor(waveform, sampling_rate=16000, return_tensors="pt")).logits, -1)
            assert np.abs(alone[0].numpy() - probabilities).max() < 1e-4
        batch = extractor(waveforms, sampling_rate=16000, return_tensors="pt", padding=True)
        padded = torch.softmax(model(**batch).logits, -1).numpy()
    assert np.abs(padded - np.stack(expected)).max() < 1e-4


@pytest.fixture(scope="module", params=["attention", "mean"])
def onnx_exported(request, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    checkpoint = request.getfixturevalue(f"{request.param}_finetune")[0]
    path = tmp_path_factory.mktemp(f"onnx_{request.param}") / "model.onnx"
    extra = ["--int8"] if request.param == "attention" else []
    result = run_python_tool("export_model.py", "onnx", checkpoint, path, *extra, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, checkpoint, path, result.stdout


def test_onnx_export_prints_its_check_and_has_dynamic_axes_and_our_metadata(onnx_exported):
    import onnx

    pooling, checkpoint, path, stdout = onnx_exported
    assert "max probability difference" in stdout and "padded in one batch" in stdout
    model = onnx.load(str(path))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["waveform", "lengths"]
    assert [o.name for o in model.graph.output] == ["logits", "frame_weights", "frame_logits"]
    waveform_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(dim.dim_param for dim in waveform_dims)  # batch and time are dynamic
    meta = {entry.key: entry.value for entry in model.metadata_props}
    recognizer = EmotionRecognizer.load(str(checkpoint), device=torch.device("cpu"))
    assert meta["flea.format"].startswith("fairseq-flea-classifier/")
    assert json.loads(meta["flea.class_names"]) == recognizer.class_names and meta["flea.pooling"] == pooling
    if pooling == "attention":
        assert "int8: argmax agreement" in stdout and "largest probability change" in stdout
        kept = "wrote " + str(path).replace(".onnx", ".int8.onnx") in stdout
        assert kept == path.with_name("model.int8.onnx").exists()


def test_onnxruntime_gives_fairseqs_outputs_alone_and_padded(onnx_exported):
    import onnxruntime

    from fairseq_flea.export.onnx_export import pad, softmax

    _, checkpoint, path, _ = onnx_exported
    waveforms = held_out_waveforms()
    recognizer = EmotionRecognizer.load(str(checkpoint), device=torch.device("cpu"))
    expected = recognizer.predict_waveforms(waveforms)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for waveform, prediction in zip(waveforms, expected):
        logits, weights, frame_logits = session.run(None, {"waveform": waveform[None], "lengths": np.array([len(waveform)])})
        assert np.abs(softmax(logits[0]) - prediction.probabilities).max() < 1e-4
    batch, lengths = pad(waveforms)
    logits, weights, frame_logits = session.run(None, {"waveform": batch, "lengths": lengths})
    for row, prediction in enumerate(expected):
        frames = len(prediction.frame_weights)
        assert np.abs(softmax(logits[row]) - prediction.probabilities).max() < 1e-4
        assert np.abs(weights[row][:frames] - prediction.frame_weights).max() < 1e-5
        assert np.abs(weights[row][frames:]).max(initial=0) == 0
        assert np.abs(frame_logits[row][:frames] - prediction.frame_logits).max() < 1e-3


def test_onnx_export_refuses_an_existing_output_and_a_graph_that_disagrees(attention_finetune, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fairseq_flea.export import onnx_export
    from fairseq_flea.io.errors import FleaInputError

    (tmp_path / "taken.onnx").write_bytes(b"")
    result = run_python_tool("export_model.py", "onnx", attention_finetune[0], tmp_path / "taken.onnx")
    assert result.returncode == 1 and "already exists" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # any difference is too large
    with pytest.raises(FleaInputError, match="not written"):
        onnx_export.export_onnx(str(attention_finetune[0]), str(tmp_path / "new.onnx"))
    assert not list(tmp_path.glob("new.onnx*"))


# Run a tool in a Python where torch, fairseq and transformers cannot be imported.
WITHOUT_TORCH = (
    "import runpy, sys\n"
    "class Refuse:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'fairseq', 'transformers', 'torchaudio'):\n"
    "            raise ImportError(f'{name} is not installed here')\n"
    "sys.meta_path.insert(0, Refuse())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_without_torch(script, *args):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(REPO_ROOT / "tools" / script), *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_predict_runs_an_onnx_model_without_torch_with_fairseqs_results(onnx_exported, tmp_path):
    import soundfile

    pooling, checkpoint, path, _ = onnx_exported
    files = []
    for index, waveform in enumerate(held_out_waveforms()):
        files.append(tmp_path / f"held_out_{index}.wav")
        soundfile.write(files[-1], waveform, 16000, subtype="FLOAT")
    result = run_without_torch("predict.py", path, *files, "--json", tmp_path / "onnx.json", "--csv", tmp_path / "onnx.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held_out_1.wav" in result.stdout  # the table
    reference = run_python_tool("predict.py", checkpoint, *files, "--json", tmp_path / "fairseq.json",
                                "--csv", tmp_path / "fairseq.csv")
    assert reference.returncode == 0, reference.stderr[-3000:]
    ours, theirs = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("onnx", "fairseq"))
    assert ours.keys() == theirs.keys() and ours["class_names"] == theirs["class_names"]

    def values(node):
        """Every number in a JSON tree, in order, and the tree's shape without them."""
        if isinstance(node, dict):
            pairs = [values(node[key]) for key in sorted(node)]
            return [x for numbers, _ in pairs for x in numbers], {key: shape for key, (_, shape) in zip(sorted(node), pairs)}
        if isinstance(node, list):
            pairs = [values(item) for item in node]
            return [x for numbers, _ in pairs for x in numbers], [shape for _, shape in pairs]
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return [float(node)], "number"
        return [], node

    for ours_item, theirs_item in zip(ours["predictions"] if "predictions" in ours else [ours],
                                      theirs["predictions"] if "predictions" in theirs else [theirs]):
        ours_numbers, ours_shape = values(ours_item)
        theirs_numbers, theirs_shape = values(theirs_item)
        assert ours_shape == theirs_shape
        assert np.abs(np.array(ours_numbers) - np.array(theirs_numbers)).max() < 1e-3
    our_rows = (tmp_path / "onnx.csv").read_text().splitlines()
    their_rows = (tmp_path / "fairseq.csv").read_text().splitlines()
    assert our_rows[0] == their_rows[0] and len(our_rows) == len(their_rows)
    for our_row, their_row in zip(our_rows[1:], their_rows[1:]):
        ours_cells, theirs_cells = our_row.split(","), their_row.split(",")
        assert ours_cells[:2] == theirs_cells[:2]  # file and predicted class
        n = len(ours["class_names"])
        assert np.abs(np.array(ours_cells[2:2 + n], float) - np.array(theirs_cells[2:2 + n], float)).max() < 1e-4


def test_recognizer_loads_an_onnx_model_and_refuses_one_that_is_not_ours(onnx_exported, tmp_path):
    pooling, checkpoint, path, _ = onnx_exported
    recognizer = EmotionRecognizer.load(str(path))
    expected = EmotionRecognizer.load(str(checkpoint), device=torch.device("cpu"))
    assert type(recognizer).__name__ == "OnnxEmotionRecognizer" and recognizer.class_names == expected.class_names
    assert recognizer.pooling == pooling and recognizer.frame_timing == expected.frame_timing
    waveforms = held_out_waveforms()
    for ours, theirs in zip(recognizer.predict_waveforms(waveforms), expected.predict_waveforms(waveforms)):
        assert np.abs(ours.probabilities - theirs.probabilities).max() < 1e-4
        assert ours.frame_weights.shape == theirs.frame_weights.shape and ours.frame_logits.shape == theirs.frame_logits.shape
    if pooling != "attention":
        return
    import onnx
    from onnx import TensorProto, helper

    foreign = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(foreign, tmp_path / "foreign.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    (tmp_path / "a.wav").write_bytes(b"")
    for name, message in (("foreign.onnx", "not a FLEA classifier"), ("garbage.onnx", "not a readable ONNX model")):
        result = run_without_torch("predict.py", tmp_path / name, tmp_path / "a.wav")
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
