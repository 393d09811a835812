"""bench/gpu_throughput_checks.sh, rehearsed on CPU: every part runs its real bench and leaves
its table and records where a GPU call would fetch them; a part out of time is reported and
the others still run. The GPU figures themselves need a GPU."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, assert_succeeded, table_rows

SCRIPT = REPO_ROOT / "bench" / "gpu_throughput_checks.sh"
PARTS = ("pretraining", "finetuning")


def run_checks(out: Path, *args: object, **limits: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable,
           **{f"LIMIT_{part.upper()}": str(seconds) for part, seconds in limits.items()}}
    return subprocess.run(["bash", str(SCRIPT), str(out), *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)


def test_rehearsal_writes_every_part_and_the_runs_records(tmp_path):
    out = tmp_path / "out"
    result = run_checks(out, REPO_ROOT, "same")
    assert_succeeded(result)
    machine = (out / "machine.txt").read_text()
    assert "commit: " in machine and "cpu cores: " in machine and "torch " in machine

    pretraining = table_rows((out / "pretraining.md").read_text(), "now")
    assert [row[0] for row in pretraining] == [
        "now", "now+dataset.data_buffer_size=0", "now+dataset.num_workers=8", "now+all+expandable-segments",
        "now+all,-padding-known-on-host", "now+all+compiled-layers"]
    finetuning = table_rows((out / "finetuning.md").read_text(), "now", "same")
    assert [row[0] for row in finetuning] == ["now", "same", "now+all,-padding-known-on-host",
                                              "now+all+expandable-segments", "now+all,-fast-fft-sizes",
                                              "now+all,-gelu-in-input-dtype"]
    for row in pretraining + finetuning:
        assert float(row[3]) > 0 and float(row[4]) > 0, row  # updates/s, audio s/s

    # Each training's record comes back; no checkpoint or audio does.
    assert len(list((out / "runs" / "pretraining").rglob("times.json"))) == 6
    assert len(list((out / "runs" / "finetuning").rglob("times.json"))) == 6
    # Each candidate reached its training's config, as fairseq logged it.
    logs = {path.parts[-4]: path.read_text() for path in (out / "runs").rglob("train.log")}
    assert "'num_workers': 8" in logs["now+dataset.num_workers-8"]
    assert "'fast_paths': 'all+compiled-layers'" in logs["now+all+compiled-layers"]
    assert "'fast_paths': 'all,-gelu-in-input-dtype'" in logs["now+all--gelu-in-input-dtype"]
    assert not [path for path in out.rglob("*") if path.suffix in (".pt", ".wav")]
    assert "all parts done" in (out / "console.log").read_text()


def test_a_part_out_of_time_is_reported_and_the_others_still_run(tmp_path):
    result = run_checks(tmp_path / "out", **{part: 1 for part in PARTS})
    assert result.returncode == 1
    for part in PARTS:
        assert f"== {part}: out of time after 1 s" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == (
        "failed: " + " ".join(f"{part} (exit 124)" for part in PARTS))


def test_a_reference_that_is_not_the_project_is_refused_in_one_line(tmp_path):
    result = run_checks(tmp_path / "out", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a copy of the project (no bench/bench_train_throughput.py)"
