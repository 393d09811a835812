"""Folds aggregated into one table laid out like the paper's Table 1, the paper's numbers beside ours."""

import glob
import json
import os
import re
from statistics import mean, pstdev
from typing import Dict, List, Optional, Tuple

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError

# Table 1 of the paper (UA/WA in %, IEMOCAP, 5 folds): (layer, clusters) -> pooling -> (UA, WA).
PAPER_TABLE_1: Dict[Tuple[int, int], Dict[str, Tuple[float, float]]] = {
    (6, 50): {"mean": (75.0, 73.6), "attention": (75.2, 73.6)},
    (6, 100): {"mean": (74.8, 73.3), "attention": (75.1, 73.5)},
    (6, 150): {"mean": (74.5, 72.7), "attention": (74.3, 73.2)},
    (9, 50): {"mean": (75.1, 73.5), "attention": (75.7, 74.7)},
    (9, 100): {"mean": (75.0, 73.9), "attention": (75.3, 74.0)},
    (9, 150): {"mean": (74.8, 73.5), "attention": (74.6, 73.2)},
    (11, 50): {"mean": (74.3, 72.7), "attention": (74.4, 73.0)},
    (11, 100): {"mean": (74.0, 72.8), "attention": (74.2, 72.7)},
    (11, 150): {"mean": (74.3, 70.1), "attention": (73.5, 72.5)},
}
PAPER_TAPT = (74.1, 72.8)
PAPER_BASELINE_UA = 74.3  # P-TAPT, the paper's baseline (UA only)

RowKey = Tuple[Optional[int], Optional[int], str]  # (layer, clusters, pooling); TAPT: (None, None, "mean")


def collect_fold_results(work_dir: str) -> Dict[RowKey, Dict[int, Dict[str, float]]]:
    """Every eval_test/results.json under ``work_dir``: row -> fold -> scores."""
    rows: Dict[RowKey, Dict[int, Dict[str, float]]] = {}
    pattern = os.path.join(work_dir, "fold*", "**", "eval_test", "results.json")
    for path in sorted(glob.glob(pattern, recursive=True)):
        relative = os.path.relpath(path, work_dir).split(os.sep)
        fold = int(relative[0][4:])
        if relative[1] == "tapt_mean":
            key: RowKey = (None, None, "mean")
        else:
            match = re.fullmatch(r"L(\d+)_K(\d+)", relative[1])
            if match is None:
                continue
            key = (int(match.group(1)), int(match.group(2)), relative[2])
        with open(path) as results_file:
            results = json.load(results_file)
        rows.setdefault(key, {})[fold] = {"ua": 100 * results["ua"], "wa": 100 * results["wa"], "n": results["n"]}
    return rows


def mean_and_std(values: List[float]) -> str:
    return f"{mean(values):.1f} ± {pstdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def ours(rows, key: RowKey) -> str:
    folds = rows.get(key)
    if not folds:
        return "–"
    return f"{mean_and_std([s['ua'] for s in folds.values()])} / {mean_and_std([s['wa'] for s in folds.values()])}"


def paper(ua_wa: Optional[Tuple[float, float]]) -> str:
    return "–" if ua_wa is None else f"{ua_wa[0]:.1f}/{ua_wa[1]:.1f}"


def results_markdown(rows: Dict[RowKey, Dict[int, Dict[str, float]]]) -> str:
    folds = sorted({fold for per_fold in rows.values() for fold in per_fold})
    grid = sorted({(k[0], k[1]) for k in rows if k[0] is not None})
    lines = [
        f"UA / WA (%) on each fold's test speaker, mean ± std over folds {', '.join(map(str, folds))}; "
        "paper: Table 1 of arXiv 2312.16383 (IEMOCAP, 5 folds).",
        "",
        "| Layers | Clusters | Average pooling (ours) | (paper) | Attention pooling (ours) | (paper) |",
        "|---|---|---|---|---|---|",
        f"| BL [15] | - | – | {PAPER_BASELINE_UA:.1f}/- | – | - |",
        f"| TAPT | - | {ours(rows, (None, None, 'mean'))} | {paper(PAPER_TAPT)} | – | - |",
    ]
    for layer, clusters in grid:
        reference = PAPER_TABLE_1.get((layer, clusters), {})
        lines.append(
            f"| {layer} | {clusters} | {ours(rows, (layer, clusters, 'mean'))} | {paper(reference.get('mean'))} "
            f"| {ours(rows, (layer, clusters, 'attention'))} | {paper(reference.get('attention'))} |"
        )
    return "\n".join(lines) + "\n"


def write_results_table(work_dir: str) -> str:
    """Write ``results.md`` (and the per-fold numbers as ``results.json``) into ``work_dir``."""
    rows = collect_fold_results(work_dir)
    if not rows:
        raise FleaInputError(f"{work_dir}: no fold*/.../eval_test/results.json found (run stage 5 first)")
    markdown = results_markdown(rows)
    write_text_atomically(os.path.join(work_dir, "results.md"), markdown)
    per_fold = [
        {"layer": layer, "clusters": clusters, "pooling": pooling, "fold": fold, **scores}
        for (layer, clusters, pooling), folds in sorted(rows.items(), key=lambda item: str(item[0]))
        for fold, scores in sorted(folds.items())
    ]
    write_text_atomically(os.path.join(work_dir, "results.json"), json.dumps(per_fold, indent=2) + "\n")
    return markdown
