"""bench/bench_training_start.py as a CPU smoke test: one short TAPT each way, through a new
fairseq-hydra-train process and through the recipe's step process, both to a checkpoint. No
timing is asserted."""

from conftest import run_bench


def test_the_bench_trains_both_ways_and_prints_the_saving(tmp_path):
    table = tmp_path / "start.md"
    run_bench("bench_training_start.py", "--device", "cpu", "--repeats", "1",
              "--table", str(table), timeout=600)
    rows = {line.split("|")[1].strip(): line for line in table.read_text().splitlines() if line.startswith("| ")}
    assert {"new process (before)", "recipe step process (now)"} <= set(rows)
    for way in ("new process (before)", "recipe step process (now)"):
        assert float(rows[way].split("|")[2]) > 0
    assert "saved per training run:" in table.read_text()
