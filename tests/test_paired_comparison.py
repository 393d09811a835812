"""Paired comparison of two settings over the same test runs: differences, bootstrap interval, Wilcoxon."""

import numpy as np
import pytest
from scipy.stats import wilcoxon

from fairseq_flea.evaluation.paired import compare_paired, paired_markdown


def runs(values, seeds=(0, 1)):
    """{(fold, direction, seed): value} for folds 1.. and both directions, in that order."""
    keys = [(fold, direction, seed) for fold in range(1, 6) for direction in ("FM", "MF") for seed in seeds]
    return dict(zip(keys, values))


def test_pairs_are_matched_by_run_and_only_shared_runs_count():
    tapt = runs(np.arange(20, dtype=float))
    flea = {key: value + 1.5 for key, value in tapt.items()}
    del flea[(3, "MF", 1)]
    flea[(9, "FM", 0)] = 100.0  # no TAPT run to pair with
    comparison = compare_paired(tapt, flea)
    assert comparison.pairs == 19 and comparison.mean_difference == pytest.approx(1.5)
    assert comparison.interval == pytest.approx((1.5, 1.5)) and comparison.wilcoxon_p < 1e-4
    assert compare_paired(tapt, {(9, "FM", 0): 1.0}) is None


def test_interval_and_p_value():
    differences = np.array([2.0, -1.0, 3.0, 0.5, 4.0, 1.0, -0.5, 2.5])
    tapt = runs(np.zeros(8), seeds=(0,))
    comparison = compare_paired(tapt, {key: d for key, d in zip(tapt, differences)})
    assert comparison.mean_difference == pytest.approx(differences.mean())
    low, high = comparison.interval
    assert differences.min() < low < differences.mean() < high < differences.max()
    # The percentile bootstrap's width is about 2 x 1.96 standard errors of the mean.
    standard_error = differences.std() / np.sqrt(len(differences))
    assert 0.8 * 3.92 * standard_error < high - low < 1.2 * 3.92 * standard_error
    assert comparison.wilcoxon_p == pytest.approx(wilcoxon(differences).pvalue)
    assert compare_paired(tapt, {key: d for key, d in zip(tapt, differences)}) == comparison  # seeded: the same table


def test_small_samples_get_no_p_value_and_one_pair_no_interval():
    tapt = runs(np.zeros(5), seeds=(0,))
    five = compare_paired(tapt, {key: 1.0 + i for i, key in enumerate(tapt)})
    assert five.pairs == 5 and five.wilcoxon_p is None and five.interval is not None
    one = compare_paired({"a": 1.0}, {"a": 3.0})
    assert one.pairs == 1 and one.mean_difference == 2.0 and one.interval is None
    six_ties = compare_paired(runs(np.zeros(6), seeds=(0,)), runs(np.zeros(6), seeds=(0,)))
    assert six_ties.wilcoxon_p == 1.0  # every difference 0


def test_markdown_table():
    tapt = runs(np.full(6, 60.0), seeds=(0,))
    lines = paired_markdown("TAPT", tapt, [("L9 K50, attention", {k: 61.0 + i for i, k in enumerate(tapt)}),
                                           ("L9 K50, mean", {})])
    assert lines[2] == "| model | pairs | mean difference | 95 % interval | Wilcoxon p |"
    attention, mean = lines[4], lines[5]
    assert attention.startswith("| L9 K50, attention | 6 | +3.5 | [+") and attention.endswith("| 0.0312 |")
    assert mean == "| L9 K50, mean | 0 | – | – | – |"
