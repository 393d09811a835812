"""The fast_paths switch through the real fairseq-hydra-train: with ``none`` a run's first update
is stock fairseq's (the same loss, gradients and updated weights, bit for bit), with ``all`` the
same within float32 rounding; a bad value is one error line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FINETUNE_CONFIG_DIR, PRETRAIN_CONFIG_DIR, REPO_ROOT, assert_succeeded

PROBE = Path(__file__).resolve().parent / "first_update_probe.py"
ONE_UPDATE = ["optimization.max_update=1", "common.log_format=json", "optimization.max_epoch=1"]
PLUGIN_TASK_FIELDS = ("fast_paths", "init_from", "label_embeddings", "label_tolerance_seconds", "persistent_workers")
# fairseq's second read of the first batch draws random crops from numpy's global generator,
# so without it the first step's crops are other draws: "all" is compared with this path alone.
DUMMY_BATCH_ONLY = "{}.fast_paths=dummy-batch-from-step"
# "all" within float32 rounding (FFT against convolution, fused against fairseq's Adam; the logged
# loss has 3 decimals): loss and gradients relative to their scale. Adam's first step moves each
# weight by about lr * sign(gradient), so a gradient within rounding of zero (the attention's query
# and key projections have gradients near 1e-5) can move its weight by up to lr either way: the
# updated weights are within lr (1e-3 in the tiny configs) of each other, 0.2 lr on average.
TOLERANCE = {"loss": 1e-3, "gradients": 1e-4, "largest_step": 1e-3, "mean_step": 2e-4}


def pretraining_data(tone_corpus) -> list:
    return [f"task.data={tone_corpus / 'data'}", f"task.label_dir={tone_corpus / 'labels11'}", "task.labels=[km]"]


def finetuning_data(emotion_corpus, scratch_run) -> list:
    return [f"task.data={emotion_corpus}", f"model.w2v_path={scratch_run[0]}"]


BOTH_PHASES = pytest.mark.parametrize("config_dir, config, field", [
    (PRETRAIN_CONFIG_DIR, "hubert_tiny", "task.fast_paths"),
    (FINETUNE_CONFIG_DIR, "ser_attention_tiny", "model.fast_paths"),
])


def first_update(tmp_path: Path, name: str, config_dir: Path, config: str, overrides, fixed_masks: bool) -> dict:
    out = tmp_path / f"{name}.pt"
    env = {**os.environ, "FLEA_PROBE_OUT": str(out), "FLEA_PROBE_FIXED_MASKS": "1" if fixed_masks else "0"}
    result = subprocess.run([sys.executable, str(PROBE), "--config-dir", str(config_dir), "--config-name", config,
                             f"checkpoint.save_dir={tmp_path / name}", *ONE_UPDATE, *overrides],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert_succeeded(result)
    return torch.load(out, weights_only=False)


def assert_same(a: dict, b: dict, tolerance: dict = None) -> None:
    for kind in ("gradients", "weights"):
        assert a[kind].keys() == b[kind].keys() and len(a[kind]) > 10, kind
    if tolerance is None:
        assert a["loss"] == b["loss"]
        for kind in ("gradients", "weights"):
            assert all(torch.equal(a[kind][name], b[kind][name]) for name in a[kind]), kind
        return
    assert abs(a["loss"] - b["loss"]) <= tolerance["loss"] * abs(b["loss"])
    for name, gradient in b["gradients"].items():
        scale = gradient.abs().max().clamp(min=1e-3)
        assert (a["gradients"][name] - gradient).abs().max() <= tolerance["gradients"] * scale, name
    for name, weight in b["weights"].items():
        difference = (a["weights"][name] - weight).abs()
        assert difference.max() <= tolerance["largest_step"] and difference.mean() <= tolerance["mean_step"], name


def stock_pretraining_config(config_dir: Path) -> Path:
    """hubert_tiny as fairseq's own task and optimizer take it: hubert_pretraining, adam, none of
    the plugin's task fields."""
    cfg = OmegaConf.load(PRETRAIN_CONFIG_DIR / "hubert_tiny.yaml")
    cfg.task._name, cfg.optimizer._name = "hubert_pretraining", "adam"
    for name in PLUGIN_TASK_FIELDS:
        del cfg.task[name]
    config_dir.mkdir()
    OmegaConf.save(cfg, config_dir / "hubert_tiny.yaml")
    return config_dir


@pytest.fixture(scope="module")
def pretraining_runs(tone_corpus, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fast_paths_pretraining")
    data = pretraining_data(tone_corpus)
    stock_dir = stock_pretraining_config(tmp_path / "stock_config")
    return {name: first_update(tmp_path, name, config_dir, "hubert_tiny", data + extra, fixed_masks=True)
            for name, config_dir, extra in (("stock", stock_dir, []),
                                            ("none", PRETRAIN_CONFIG_DIR, ["task.fast_paths=none"]),
                                            ("dummy", PRETRAIN_CONFIG_DIR, [DUMMY_BATCH_ONLY.format("task")]),
                                            ("all", PRETRAIN_CONFIG_DIR, ["task.fast_paths=all"]))}


def test_pretraining_without_fast_paths_is_stock_fairseq(pretraining_runs):
    assert pretraining_runs["none"]["replaced"] == pretraining_runs["stock"]["replaced"] == []
    assert pretraining_runs["none"]["optimizer"] == pretraining_runs["stock"]["optimizer"] == "fairseq.optim.adam"
    assert_same(pretraining_runs["none"], pretraining_runs["stock"])


def test_pretraining_with_every_fast_path_is_the_same_to_rounding(pretraining_runs):
    replaced = pretraining_runs["all"]["replaced"]
    assert {"model.forward", "model.apply_mask", "model.compute_nce", "checkpoint_utils.save_checkpoint",
            "utils.set_torch_seed"} <= set(replaced)
    assert pretraining_runs["all"]["optimizer"] == "torch.optim.adamw"
    assert_same(pretraining_runs["all"], pretraining_runs["dummy"], TOLERANCE)


@pytest.fixture(scope="module")
def finetuning_runs(emotion_corpus, scratch_run, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fast_paths_finetuning")
    data = [*finetuning_data(emotion_corpus, scratch_run), "model.final_dropout=0.0"]
    return {name: first_update(tmp_path, name, FINETUNE_CONFIG_DIR, "ser_attention_tiny", data + extra,
                               fixed_masks=False)
            for name, extra in (("stock", ["model.fast_paths=none", "optimizer._name=adam"]),
                                ("none", ["model.fast_paths=none"]), ("dummy", [DUMMY_BATCH_ONLY.format("model")]),
                                ("all", ["model.fast_paths=all"]))}


def test_finetuning_without_fast_paths_is_stock_fairseq(finetuning_runs):
    assert finetuning_runs["none"]["replaced"] == []
    assert finetuning_runs["none"]["optimizer"] == finetuning_runs["stock"]["optimizer"] == "fairseq.optim.adam"
    assert_same(finetuning_runs["none"], finetuning_runs["stock"])


def test_finetuning_with_every_fast_path_is_the_same_to_rounding(finetuning_runs):
    assert {"model.forward", "checkpoint_utils.save_checkpoint"} <= set(finetuning_runs["all"]["replaced"])
    assert_same(finetuning_runs["all"], finetuning_runs["dummy"], TOLERANCE)


@BOTH_PHASES
def test_an_unknown_name_is_one_error_line(config_dir, config, field, tone_corpus, emotion_corpus, scratch_run, tmp_path):
    data = (pretraining_data(tone_corpus) if field.startswith("task")
            else finetuning_data(emotion_corpus, scratch_run))
    result = subprocess.run([str(Path(sys.executable).parent / "fairseq-hydra-train"), "--config-dir", str(config_dir),
                             "--config-name", config, f"checkpoint.save_dir={tmp_path}", *data,
                             f'{field}="all,-fft-positional-conv,fast-lane"'],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "fast-lane" in line and "overrides" not in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"{field}: unknown name 'fast-lane' in 'all,-fft-positional-conv,fast-lane'; known: all, none, "), errors


@BOTH_PHASES
def test_stock_fairseq_trains_in_bf16_too(config_dir, config, field, tone_corpus, emotion_corpus, scratch_run, tmp_path):
    """``none`` in bf16: fairseq's mixed-precision optimizer around fairseq's own Adam update."""
    data = (pretraining_data(tone_corpus) if field.startswith("task")
            else finetuning_data(emotion_corpus, scratch_run))
    bf16 = ["common.cpu=true", "common.bf16=true", "common.fp16=false"]
    run = first_update(tmp_path, "bf16", config_dir, config, [*data, *bf16, f"{field}=none"], fixed_masks=False)
    assert run["replaced"] == [] and run["optimizer"] == "fairseq.optim.adam"
    assert torch.isfinite(torch.tensor(run["loss"]))
    assert all(torch.isfinite(gradient).all() for gradient in run["gradients"].values())
    assert any(gradient.abs().sum() > 0 for gradient in run["gradients"].values())
