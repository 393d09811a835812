"""bench/bench_dump_feature.py as a CPU smoke test: two utterances' layer 9 extracted alone and
batched, the same features both ways. No timing is asserted."""

import re

from conftest import run_bench


def test_the_bench_extracts_alone_and_batched_to_the_same_features():
    result = run_bench("bench_dump_feature.py", "--utterances", "2", timeout=300)
    rtf = dict(re.findall(r"^(alone|batched) +[\d.]+ s   real-time factor ([\d.]+)", result.stdout, re.M))
    assert set(rtf) == {"alone", "batched"} and all(float(value) > 0 for value in rtf.values()), result.stdout
    speed_up = re.search(r"^speed-up of batched over alone: ([\d.]+)x$", result.stdout, re.M)
    assert speed_up and float(speed_up.group(1)) > 0, result.stdout
    assert re.search(r"^max abs difference batched vs alone: \S+ \(target < 1e-4\): PASS$", result.stdout, re.M), \
        result.stdout
