"""Emotion fine-tuning (model ser_attention_classification): real fairseq-hydra-train runs."""

import subprocess
import sys

import pytest
import soundfile as sf
import torch

import fairseq_flea  # noqa: F401
from conftest import FINETUNE_CONFIG_DIR, assert_succeeded, run_hydra_train, train_log_records
from fairseq_flea.inference.recognizer import EmotionRecognizer
from fairseq_flea.models.pooling import build_pooling
from fairseq_flea.io.manifest import read_manifest
from fairseq_flea.evaluation.metrics import classification_scores


def split_files(corpus, split):
    manifest = read_manifest(str(corpus / f"{split}.tsv"))
    labels = (corpus / f"{split}.emo").read_text().split()
    return [f"{manifest.root}/{name}" for name in manifest.names], labels


def held_out_scores(checkpoint, corpus):
    recognizer = EmotionRecognizer.load(str(checkpoint))
    paths, labels = split_files(corpus, "test")
    predicted = [p.predicted_index() for p in recognizer.predict_files(paths)]
    true = [recognizer.class_names.index(label) for label in labels]
    return classification_scores(true, predicted, len(recognizer.class_names))


@pytest.mark.parametrize("run", ["attention_finetune", "mean_finetune"])
def test_held_out_ua_clearly_above_chance(run, request, emotion_corpus):
    checkpoint, _ = request.getfixturevalue(run)
    scores = held_out_scores(checkpoint, emotion_corpus)
    assert scores["n"] == 16
    assert scores["ua"] >= 0.6, scores  # chance is 0.25 with four balanced classes


def test_best_checkpoint_is_the_best_validation_ua(attention_finetune):
    checkpoint, result = attention_finetune
    valid = train_log_records(result.stdout, "valid")
    assert len(valid) == 12 and len({record["valid_ua"] for record in valid}) > 1
    best_ua = max(record["valid_ua"] for record in valid)
    # fairseq keeps the latest of equally good epochs; its iterator state points past it.
    last_best_epoch = max(int(r["epoch"]) for r in valid if r["valid_ua"] == best_ua)
    state = torch.load(checkpoint, map_location="cpu")
    assert state["extra_state"]["val_loss"] == pytest.approx(best_ua)
    assert state["extra_state"]["train_iterator"]["epoch"] == last_best_epoch + 1


def test_fine_tuned_checkpoint_reloads_after_import(attention_finetune, emotion_corpus, tmp_path):
    """Self-contained: reloads in a fresh interpreter without the encoder checkpoint or the data."""
    checkpoint, _ = attention_finetune
    paths, _ = split_files(emotion_corpus, "test")
    probe = (
        "import sys, fairseq_flea, soundfile, torch\n"
        "from fairseq import checkpoint_utils\n"
        "models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]])\n"
        "model = models[0].eval()\n"
        "wave = torch.from_numpy(soundfile.read(sys.argv[2], dtype='float32')[0])[None]\n"
        "logits = model(source=wave, lengths=torch.tensor([wave.shape[1]]))['logits'][0]\n"
        "print(task.class_names[int(logits.argmax())])\n"
    )
    reloaded = subprocess.run(
        [sys.executable, "-c", probe, str(checkpoint), paths[0]], capture_output=True, text=True, cwd=tmp_path
    )
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    expected = EmotionRecognizer.load(str(checkpoint))
    prediction = expected.predict_files([paths[0]])[0]
    assert reloaded.stdout.split()[-1] == expected.class_names[prediction.predicted_index()]


@pytest.mark.parametrize("run", ["attention_finetune", "mean_finetune"])
def test_logits_do_not_depend_on_the_batch(run, request, emotion_corpus):
    checkpoint, _ = request.getfixturevalue(run)
    model = EmotionRecognizer.load(str(checkpoint)).model
    assert isinstance(model.encoder.feature_extractor.conv_layers[0][2], torch.nn.GroupNorm)
    paths, _ = split_files(emotion_corpus, "test")
    short = torch.from_numpy(sf.read(paths[0], dtype="float32")[0])[:12000]
    longer = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths[1:4]]
    longer = [torch.cat([w, w]) for w in longer]  # at least 3x the short one
    with torch.no_grad():
        alone = model(source=short[None], lengths=torch.tensor([len(short)]))
        batch = torch.nn.utils.rnn.pad_sequence([short, *longer], batch_first=True)
        lengths = torch.tensor([len(short)] + [len(w) for w in longer])
        together = model(source=batch, lengths=lengths)
    assert (alone["logits"][0] - together["logits"][0]).abs().max() < 1e-4
    weights, padding = together["frame_weights"], together["padding_mask"]
    assert padding[0].sum() > 0  # the short utterance really was padded
    assert torch.allclose(weights.sum(dim=1), torch.ones(len(weights)), atol=1e-5)
    assert torch.all(weights[padding] == 0)
    assert torch.all(weights[~padding] > 0)


def test_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        build_pooling("max", 8)


def test_a_shipped_config_trains_from_any_directory(emotion_corpus, scratch_run, tmp_path):
    """`common.user_dir: fairseq_flea` is found where the package is installed, not only in the repository."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_hydra_train(FINETUNE_CONFIG_DIR, "ser_attention_tiny", [
        f"task.data={emotion_corpus}", f"model.w2v_path={scratch_run[0]}",
        f"checkpoint.save_dir={tmp_path / 'run'}", "optimization.max_epoch=1",
    ], cwd=elsewhere)
    assert_succeeded(result)
    assert (tmp_path / "run" / "checkpoint_best.pt").is_file()
