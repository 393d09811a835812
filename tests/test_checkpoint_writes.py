"""Checkpoints written in the background (fairseq_flea.tasks.checkpoint_writes): the files
fairseq would write, complete or absent, and a run that fails when one cannot be written.

The trainings are real fairseq-hydra-train runs of TAPT's tiny config in bf16 on CPU.
"""

import os

import pytest
import torch

import fairseq_flea  # noqa: F401  (registers the tasks; lets torch load fairseq checkpoints)
from conftest import PRETRAIN_CONFIG_DIR, assert_succeeded, checkpoint_tensors, run_hydra_train
from fairseq_flea.tasks.checkpoint_writes import copy_to_cpu

# Saves after updates 2 and 4, the end (checkpoint_1_<updates>.pt, copied to checkpoint_last.pt
# and, when validation improved, to checkpoint_best.pt); fairseq keeps one interval checkpoint.
SAVES = ["optimization.max_update=4", "checkpoint.save_interval_updates=2", "checkpoint.keep_interval_updates=1",
         "common.cpu=true", "common.bf16=true", "common.fp16=false", "common.log_interval=1"]


def tapt_tiny(tone_corpus, scratch_run, save_dir, *overrides):
    return run_hydra_train(PRETRAIN_CONFIG_DIR, "tapt_tiny", [
        f"task.data={tone_corpus / 'data'}", f"task.label_dir={tone_corpus / 'labels11'}", "task.labels=[km]",
        f"task.init_from={scratch_run[0]}", f"checkpoint.save_dir={save_dir}", *SAVES, *overrides,
    ])


def checkpoint_files(save_dir):
    return sorted(name for name in os.listdir(save_dir) if name != "hydra")


def test_background_writes_give_the_checkpoints_fairseq_writes(tone_corpus, scratch_run, tmp_path):
    runs = {}
    for background, fast_paths in (("true", "all"), ("false", '"all,-background-checkpoints"')):
        save_dir = tmp_path / f"background_{background}"
        result = tapt_tiny(tone_corpus, scratch_run, save_dir, f"task.fast_paths={fast_paths}")
        assert_succeeded(result)
        runs[background] = save_dir, result.stdout

    (ours, log), (fairseqs, fairseq_log) = runs["true"], runs["false"]
    assert "while training went on" in log and "while training went on" not in fairseq_log
    assert log.count("while training went on") == 2, log[-3000:]
    # The same files, nothing left under a temporary name, and the one interval checkpoint
    # fairseq keeps (checkpoint.keep_interval_updates=1) although it was still being written
    # when fairseq removed the older one.
    assert checkpoint_files(ours) == checkpoint_files(fairseqs) == [
        "checkpoint_1_4.pt", "checkpoint_best.pt", "checkpoint_last.pt"]
    # The last save wrote checkpoint_1_4.pt; checkpoint_last.pt is the same file, not a copy.
    assert os.stat(ours / "checkpoint_1_4.pt").st_ino == os.stat(ours / "checkpoint_last.pt").st_ino
    assert os.stat(fairseqs / "checkpoint_1_4.pt").st_ino != os.stat(fairseqs / "checkpoint_last.pt").st_ino
    for name in ("checkpoint_1_4.pt", "checkpoint_best.pt"):
        written, reference = (torch.load(run / name, map_location="cpu", weights_only=False) for run in (ours, fairseqs))
        written_tensors, reference_tensors = checkpoint_tensors(written), checkpoint_tensors(reference)
        # Weights, optimizer state (fp32 master weights, moments, steps) and loss-scale state.
        assert written_tensors.keys() == reference_tensors.keys() and len(written_tensors) > 50
        for path, tensor in reference_tensors.items():
            assert written_tensors[path].dtype == tensor.dtype and torch.equal(written_tensors[path], tensor), path
        assert written["extra_state"]["train_iterator"] == reference["extra_state"]["train_iterator"]
        assert written["extra_state"]["best"] == reference["extra_state"]["best"]


def test_the_state_is_copied_before_training_changes_it():
    weight = torch.ones(3)
    moments = {"exp_avg": torch.zeros(2), "step": torch.tensor(4.0)}
    state = {"model": {"w": weight, "half": torch.ones(2, dtype=torch.bfloat16)}, "optimizer": [moments], "lr": 0.1}
    copied = copy_to_cpu(state)
    weight.add_(1)
    moments["exp_avg"].add_(1)
    moments["step"] += 1
    assert torch.equal(copied["model"]["w"], torch.ones(3))
    assert torch.equal(copied["optimizer"][0]["exp_avg"], torch.zeros(2))
    assert copied["optimizer"][0]["step"].item() == 4.0
    assert copied["model"]["half"].dtype == torch.float32  # as fairseq's move_to_cpu writes half precision
    assert copied["lr"] == 0.1


@pytest.mark.parametrize("updates, reported_by", [(2, "the run's exit"), (5, "the next save")])
def test_a_checkpoint_that_cannot_be_written_fails_the_run_in_one_line(tone_corpus, scratch_run, tmp_path,
                                                                       updates, reported_by):
    save_dir = tmp_path / "run"
    # checkpoint_best.pt cannot be put in place: a directory holds its temporary name. The
    # save after update 2 fails in the background; with 2 updates it was the run's last.
    (save_dir / "checkpoint_best.pt.partial").mkdir(parents=True)
    result = tapt_tiny(tone_corpus, scratch_run, save_dir, f"optimization.max_update={updates}")
    assert result.returncode != 0, reported_by
    errors = [line for line in result.stderr.splitlines() if "checkpoint not written" in line]
    assert len(errors) == 1 and "checkpoint_best.pt: checkpoint not written" in errors[0], result.stderr[-3000:]
    assert "Is a directory" in errors[0] and "Traceback" not in result.stderr
    assert not os.path.exists(save_dir / "checkpoint_best.pt")
