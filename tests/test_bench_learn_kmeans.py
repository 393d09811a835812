"""bench/bench_learn_kmeans.py as a CPU smoke test: fairseq's learn_kmeans.py and ours on a small
generated mixture, a row with both times, the speed-up and both inertias. No timing is asserted."""

import math

from conftest import run_bench


def test_the_bench_runs_both_scripts_and_scores_both_models():
    result = run_bench("bench_learn_kmeans.py", "--frames", "4000", "--dim", "16", "--clusters", "4", timeout=300)
    rows = [line.split() for line in result.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 1 and rows[0][0] == "4", result.stdout
    _, fairseq_s, ours_s, speed_up, fairseq_inertia, ours_inertia, change, percent, load, verdict = rows[0]
    assert float(fairseq_s) > 0 and float(ours_s) > 0 and float(speed_up.rstrip("x")) > 0, rows[0]
    assert 0 < float(fairseq_inertia) < math.inf and 0 < float(ours_inertia) < math.inf, rows[0]
    assert abs(float(change)) < 100 and percent == "%" and verdict in ("PASS", "FAIL"), rows[0]
    assert result.stdout.strip().splitlines()[-1] == f"all K: {verdict}"
