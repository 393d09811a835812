"""Paired comparison of two settings over the same test runs (fold, direction, seed): is
"attention beats mean" a claim with an interval, not two means?

Per pair the difference of a score (UA in points, say); their mean, a 95 % percentile
bootstrap interval over pairs, and the two-sided Wilcoxon signed-rank p-value
(``scipy.stats.wilcoxon``) where there are at least ``MIN_WILCOXON_PAIRS`` pairs (with fewer,
no p-value below 0.05 is possible: 2 / 2**5 = 0.0625).
"""

import warnings
from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import wilcoxon

MIN_WILCOXON_PAIRS = 6
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedComparison:
    pairs: int
    mean_difference: float
    interval: Optional[Tuple[float, float]]  # 95 % bootstrap, None with fewer than 2 pairs
    wilcoxon_p: Optional[float]  # None with fewer than MIN_WILCOXON_PAIRS pairs


def bootstrap_interval(differences: np.ndarray, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (pairs resampled with
    replacement; a fixed seed, so a table is the same on every run)."""
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is 0."""
    if not np.any(differences):
        return 1.0
    with warnings.catch_warnings():  # scipy warns about ties and zeros in its normal approximation
        warnings.simplefilter("ignore")
        return float(wilcoxon(differences).pvalue)


def compare_paired(baseline: Dict[Hashable, float], other: Dict[Hashable, float]) -> Optional[PairedComparison]:
    """``other - baseline`` over the keys both have (None when they share none)."""
    keys = sorted(set(baseline) & set(other), key=str)
    if not keys:
        return None
    differences = np.array([other[key] - baseline[key] for key in keys], dtype=np.float64)
    return PairedComparison(
        pairs=len(keys),
        mean_difference=float(differences.mean()),
        interval=bootstrap_interval(differences) if len(keys) >= 2 else None,
        wilcoxon_p=wilcoxon_p(differences) if len(keys) >= MIN_WILCOXON_PAIRS else None,
    )


def paired_markdown(baseline_name: str, baseline: Dict[Hashable, float], others: Sequence[Tuple[str, Dict[Hashable, float]]],
                    score: str = "UA (points)") -> List[str]:
    """A markdown table: each of ``others`` against ``baseline``, pair by pair."""
    lines = [
        f"Paired against {baseline_name} over the same test runs (fold, direction, seed): {score} difference, "
        f"mean with its 95 % bootstrap interval, and the Wilcoxon signed-rank p-value with at least "
        f"{MIN_WILCOXON_PAIRS} pairs.",
        "",
        "| model | pairs | mean difference | 95 % interval | Wilcoxon p |",
        "|---|---|---|---|---|",
    ]
    for name, values in others:
        comparison = compare_paired(baseline, values)
        if comparison is None:
            lines.append(f"| {name} | 0 | – | – | – |")
            continue
        interval = "–" if comparison.interval is None else f"[{comparison.interval[0]:+.1f}, {comparison.interval[1]:+.1f}]"
        p = "–" if comparison.wilcoxon_p is None else f"{comparison.wilcoxon_p:.3g}"
        lines.append(f"| {name} | {comparison.pairs} | {comparison.mean_difference:+.1f} | {interval} | {p} |")
    return lines
