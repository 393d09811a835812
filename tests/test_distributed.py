"""fairseq's multi-process (DDP) training path, run with 2 CPU processes over gloo."""

import subprocess
import sys

from conftest import PRETRAIN_CONFIG_DIR, REPO_ROOT, train_log_records
from fairseq_flea.hubert.checkpoints import load_checkpoint_state


def test_two_cpu_processes_share_each_update(tone_corpus, scratch_run, tmp_path):
    save_dir = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "train_cpu_distributed.py"),
            "2",
            "--config-dir",
            str(PRETRAIN_CONFIG_DIR),
            "--config-name",
            "hubert_tiny",
            f"task.data={tone_corpus / 'data'}",
            f"task.label_dir={tone_corpus / 'labels11'}",
            f"checkpoint.save_dir={save_dir}",
            "optimization.max_update=6",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "as rank 0" in output and "as rank 1" in output

    # Each update gathers one batch from each process: twice the sentences of a
    # single-process update over the same data and batch size.
    single_bsz = train_log_records(scratch_run[1].stdout, "train")[0]["train_bsz"]
    distributed_bsz = train_log_records(output, "train")[0]["train_bsz"]
    assert distributed_bsz > 1.6 * single_bsz, (distributed_bsz, single_bsz)

    state = load_checkpoint_state(str(save_dir / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == 6
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2
