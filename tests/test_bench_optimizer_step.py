"""bench/bench_optimizer_step.py as a CPU smoke test: both variants timed over HuBERT base's
~200 weight tensors, ending with the same weights. No timing is asserted; the GPU figures
need a GPU."""

import re

from conftest import run_bench, table_rows


def test_the_bench_times_fairseqs_loops_and_ours_to_the_same_weights():
    result = run_bench("bench_optimizer_step.py", "--device", "cpu", "--updates", "3", timeout=300)
    assert "HuBERT narrow weights (214 tensors)" in result.stdout, result.stdout
    rows = {cells[0]: cells[1:] for cells in table_rows(result.stdout, "f")}
    assert set(rows) == {"fairseq", "foreach"}
    for host_ms, update_ms, launches in rows.values():
        assert 0 < float(host_ms) <= float(update_ms) and int(launches) > 214
    assert re.search(r"largest weight difference after 6 updates: 0$", result.stdout.strip()), result.stdout
