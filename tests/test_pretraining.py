"""Continued HuBERT masked-prediction pretraining (task emotion_hubert_pretraining).

Every training here is a real fairseq-hydra-train run of a tiny HuBERT on generated wavs.
"""

import os
import subprocess
import sys
from statistics import mean

import pytest
import torch
from omegaconf import OmegaConf

import fairseq_flea  # noqa: F401  (registers the task; lets torch load fairseq checkpoints)
from conftest import (
    CPT_CLASSES,
    PRETRAIN_CONFIG_DIR,
    REPO_ROOT,
    SCRATCH_CLASSES,
    assert_succeeded,
    run_hydra_train,
    train_log_records,
)
from fairseq import tasks

NUM_SPECIAL_SYMBOLS = 4  # fairseq dictionaries start with <s>, <pad>, </s>, <unk>


def build_model_at_update_zero(config_name: str, **overrides):
    """Task and model exactly as fairseq-hydra-train builds them, before any update."""
    cfg = OmegaConf.load(PRETRAIN_CONFIG_DIR / f"{config_name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def checkpoint_weights(path):
    return torch.load(path, map_location="cpu")["model"]


def assert_loss_falls(records, key="loss_m_0", margin=0.3):
    values = [record[key] for record in records]
    assert len(values) >= 25, values
    assert mean(values[-5:]) < mean(values[:5]) - margin, values


def test_scratch_training_loss_falls(scratch_run):
    _, result = scratch_run
    assert_loss_falls(train_log_records(result.stdout))
    weights = checkpoint_weights(scratch_run[0])
    assert weights["label_embs_concat"].shape[0] == SCRATCH_CLASSES + NUM_SPECIAL_SYMBOLS


def test_unmasked_frames_do_not_count_by_default(scratch_run):
    # The hubert criterion logs both terms; with pred_nomask_weight 0 the total is the
    # masked term plus the feature penalty, although the unmasked term is far from 0.
    records = train_log_records(scratch_run[1].stdout)
    for record in records:
        assert record["loss"] == pytest.approx(
            record["loss_m_0"] + record["loss_features_pen"], abs=0.0021
        )
    assert min(record["loss_u_0"] for record in records) > 1.0


@pytest.fixture(scope="module")
def cpt_run(tone_corpus, scratch_run):
    """Continue the 11-class model on 5-class labels, passing paths relative to the repo."""
    source, _ = scratch_run
    save_dir = tone_corpus / "cpt"
    result = run_hydra_train(
        PRETRAIN_CONFIG_DIR.relative_to(REPO_ROOT),
        "flea_cpt_tiny",
        [
            f"task.data={os.path.relpath(tone_corpus / 'data', REPO_ROOT)}",
            f"task.label_dir={os.path.relpath(tone_corpus / 'labels5', REPO_ROOT)}",
            "task.labels=[km]",
            f"task.init_from={os.path.relpath(source, REPO_ROOT)}",
            f"checkpoint.save_dir={os.path.relpath(save_dir, REPO_ROOT)}",
        ],
    )
    assert_succeeded(result)
    return save_dir / "checkpoint_last.pt", result


def test_continuation_starts_from_source_weights(tone_corpus, scratch_run):
    source = checkpoint_weights(scratch_run[0])
    _, model = build_model_at_update_zero(
        "flea_cpt_tiny",
        **{
            "task.data": str(tone_corpus / "data"),
            "task.label_dir": str(tone_corpus / "labels5"),
            "task.init_from": str(scratch_run[0]),
            "task.label_embeddings": "auto",
        },
    )
    weights = model.state_dict()
    shared = [
        name for name in weights if name.startswith(("feature_extractor.", "encoder."))
    ]
    assert len(shared) > 20
    for name in shared:
        assert torch.equal(weights[name], source[name]), name
    assert weights["label_embs_concat"].shape[0] == CPT_CLASSES + NUM_SPECIAL_SYMBOLS
    assert source["label_embs_concat"].shape[0] == SCRATCH_CLASSES + NUM_SPECIAL_SYMBOLS


def test_continuation_on_new_labels_trains_and_reloads(cpt_run):
    checkpoint, result = cpt_run
    assert "label embeddings and final projection are re-created" in result.stdout
    assert_loss_falls(train_log_records(result.stdout), margin=0.1)
    # A fresh interpreter: the checkpoint must load with nothing but `import fairseq_flea`.
    probe = (
        "import fairseq_flea, sys\n"
        "from fairseq import checkpoint_utils\n"
        "models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]])\n"
        "print(type(task).__name__, models[0].label_embs_concat.shape[0], cfg.model.encoder_layers)\n"
    )
    reloaded = subprocess.run(
        [sys.executable, "-c", probe, str(checkpoint)],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    task_name, label_rows, layers = reloaded.stdout.split()[-3:]
    assert task_name == "EmotionHubertPretrainingTask"
    assert int(label_rows) == CPT_CLASSES + NUM_SPECIAL_SYMBOLS
    assert int(layers) == 2  # the tiny source's architecture, recorded in the checkpoint


def tapt_tiny_on_the_scratch_labels(tone_corpus, scratch_run, **overrides):
    """TAPT's tiny config at update 0, continuing the scratch model on its own 11 labels."""
    _, model = build_model_at_update_zero("tapt_tiny", **{
        "task.data": str(tone_corpus / "data"),
        "task.label_dir": str(tone_corpus / "labels11"),
        "task.init_from": str(scratch_run[0]),
        **overrides,
    })
    return model


def test_tapt_recreates_label_embeddings_even_for_the_same_dictionary(tone_corpus, scratch_run):
    source = checkpoint_weights(scratch_run[0])
    model = tapt_tiny_on_the_scratch_labels(tone_corpus, scratch_run)
    weights = model.state_dict()
    assert weights["label_embs_concat"].shape == source["label_embs_concat"].shape
    assert not torch.equal(weights["label_embs_concat"], source["label_embs_concat"])


def test_same_dictionary_continuation_keeps_label_embeddings(tone_corpus, scratch_run):
    source = checkpoint_weights(scratch_run[0])
    model = tapt_tiny_on_the_scratch_labels(tone_corpus, scratch_run, **{"task.label_embeddings": "auto"})
    weights = model.state_dict()
    for name in ("label_embs_concat", "final_proj.weight", "final_proj.bias"):
        assert torch.equal(weights[name], source[name]), name


@pytest.mark.parametrize("pad_audio", [False, True])
def test_attention_asks_the_device_about_padding_only_where_batches_can_be_padded(tone_corpus, scratch_run, pad_audio):
    # fairseq's HubertDataset without pad_audio crops every utterance to its batch's shortest.
    model = tapt_tiny_on_the_scratch_labels(tone_corpus, scratch_run, **{"task.pad_audio": pad_audio})
    source = torch.randn(2, 16000)
    frame_mask = model.forward_padding_mask(torch.zeros(2, 49, 8), torch.zeros_like(source, dtype=torch.bool))
    check = model.empty_mask_check
    assert (check.last_mask is frame_mask) == (not pad_audio)
