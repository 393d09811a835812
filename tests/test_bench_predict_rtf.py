"""bench/bench_predict_rtf.py as a CPU smoke test: two utterances predicted alone and batched
by the HuBERT-base-size classifier, the same probabilities both ways. No timing is asserted."""

import math
import re

from conftest import run_bench


def test_the_bench_predicts_alone_and_batched_to_the_same_probabilities():
    result = run_bench("bench_predict_rtf.py", "--utterances", "2", "--repeats", "1", timeout=300)
    rtf = dict(re.findall(r"^(alone|batched) .* RTF ([\d.]+) \(target <= 0.1\): (?:PASS|FAIL)$", result.stdout, re.M))
    assert set(rtf) == {"alone", "batched"}, result.stdout
    assert all(0 < float(value) < math.inf for value in rtf.values()), rtf
    speed_up = re.search(r"^speed-up of batched over alone: ([\d.]+)x$", result.stdout, re.M)
    assert speed_up and float(speed_up.group(1)) > 0, result.stdout
    difference = re.search(r"^max abs probability difference batched vs alone: (\S+)$", result.stdout, re.M)
    assert difference and float(difference.group(1)) < 1e-4, result.stdout
