"""bench/bench_training_start.py as a CPU smoke test: one short TAPT each way, through a new
fairseq-hydra-train process and through the recipe's step process, both to a checkpoint. No
timing is asserted."""

import subprocess
import sys

from conftest import REPO_ROOT, assert_succeeded


def test_the_bench_trains_both_ways_and_prints_the_saving(tmp_path):
    table = tmp_path / "start.md"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_training_start.py"), "--device", "cpu", "--repeats", "1",
         "--table", str(table)],
        capture_output=True, text=True, timeout=600,
    )
    assert_succeeded(result)
    rows = {line.split("|")[1].strip(): line for line in table.read_text().splitlines() if line.startswith("| ")}
    assert {"new process (before)", "recipe step process (now)"} <= set(rows)
    for way in ("new process (before)", "recipe step process (now)"):
        assert float(rows[way].split("|")[2]) > 0
    assert "saved per training run:" in table.read_text()
