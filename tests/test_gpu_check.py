"""bench/gpu_check.py, rehearsed on CPU: the recipe steps, the table and the exit status a
GPU run has (tiny size, bf16, no benches); the GPU figures themselves need a GPU."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, assert_succeeded

TRAINING_STEPS = {
    "stand-in HuBERT: pretraining from scratch", "fold 4 TAPT pretraining", "fold 4 FM TAPT fine-tuning (mean pooling)",
    "fold 4 FM layer 1 K=6 CPT", "fold 4 FM layer 1 K=6 mean fine-tuning", "fold 4 FM layer 1 K=6 attention fine-tuning",
}


def run_gpu_check(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py"), *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


def table_rows(markdown: str) -> dict:
    rows = [line.strip("|").split("|") for line in markdown.splitlines()[2:]]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_cpu_rehearsal_runs_every_step_and_tabulates_the_training(tmp_path):
    result = run_gpu_check(
        "--device", "cpu", "--size", "tiny", "--precisions", "bf16", "--skip-benches", "--updates", 4,
        "--epochs", 1, "--clusters", 6, "--work-dir", tmp_path / "check", "--table", tmp_path / "table.md",
    )
    assert_succeeded(result)
    rows = table_rows((tmp_path / "table.md").read_text())
    assert "GPU check: passed" in result.stdout
    assert {f"bf16 {name}" for name in TRAINING_STEPS} <= set(rows)
    for name, (wall, updates, audio, exit_delay, memory, utilisation) in rows.items():
        assert float(wall) >= 0 and memory == utilisation == "-"  # no GPU to sample here
        is_training = name.removeprefix("bf16 ") in TRAINING_STEPS
        assert (updates != "-") == is_training, name
        if is_training:
            assert float(updates) > 0 and float(audio) > 0 and float(exit_delay) >= 0
    assert "whole check" in rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_without_cuda_it_fails_with_one_line(tmp_path):
    result = run_gpu_check("--work-dir", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no CUDA device")
