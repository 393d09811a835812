"""Every tested speaker aggregated into one table laid out like the paper's Table 1, with the
paper's numbers beside ours labelled by protocol, and a table per test speaker."""

import glob
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from statistics import mean, stdev
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_flea.evaluation.paired import paired_markdown
from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text_lines

logger = logging.getLogger(__name__)

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
# fold{k}/{direction}/(tapt_mean | L{layer}_K{clusters}/{pooling})[_seed{s}]/eval_test/results.json
RESULT_PATH = re.compile(
    r"fold(\d+)/([A-Z]+)/(?:tapt_mean|L(\d+)_K(\d+)/(mean|attention))(?:_seed(\d+))?/eval_test/results\.json"
)
PROTOCOL_NOTES = """\
Protocols. Ours: five folds, each holding one IEMOCAP session out; in the held-out session
one speaker validates (model selection) and the other is tested, in both directions (FM: the
female speaker validates and the male one is tested; MF: the reverse), so every speaker is
tested once per seed; the table averages UA/WA over those test speakers (and seeds).
Paper (Table 1 of arXiv 2312.16383): "the data of one speaker from the remaining session is
used as the validation set and the data of other one speaker forms the testing set"; which
speaker, and whether both directions were run, is not said. The official FLEA code
(ASolitaryMan/HFLEA, fine_tune_hubert.py) selects on the validation set and reports
(validation UA + test UA) / 2 of the selected epoch; its README (2024-10) describes four
sessions for training and one for testing. The paper's numbers are therefore not on our
protocol: read them as a reference, not as like for like. BL is P-TAPT (UA only).
"""


@dataclass(frozen=True)
class TestRun:
    fold: int
    direction: str
    seed: Optional[int]
    speaker: str
    ua: float  # percent
    wa: float
    n: int
    eder: Optional[float] = None  # percent; these three only where the evaluation had --spans
    attention_in_span: Optional[float] = None
    uniform_in_span: Optional[float] = None


def split_speakers(split_path: str) -> str:
    """The speaker(s) of an evaluated split, from its ``.spk`` file."""
    try:
        lines = read_text_lines(f"{split_path}.spk")
    except OSError:
        return "?"
    return "+".join(sorted({line.strip() for line in lines if line.strip()}))


REQUIRED_KEYS = ("ua", "wa", "n", "split")  # what a row needs of an evaluation's results.json


def results_problem(results: object) -> Optional[str]:
    """What makes an evaluation's parsed results.json unusable for a row, or None."""
    if not isinstance(results, dict):
        return f"a JSON {type(results).__name__}, not an object of scores"
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        return f"no {', '.join(missing)} (an evaluation writes {', '.join(REQUIRED_KEYS)})"
    for key in ("ua", "wa"):
        value = results[key]
        # bool is an int to Python, and NaN compares false both ways: neither is a score.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return f"{key} is {json.dumps(value)}, not a score between 0 and 1"
    if isinstance(results["n"], bool) or not isinstance(results["n"], int) or results["n"] < 1:
        return f"n is {json.dumps(results['n'])}, not a count of utterances"
    if not isinstance(results["split"], str) or not results["split"]:
        return f"split is {json.dumps(results['split'])}, not the path of the evaluated split"
    return None


def read_results_file(path: str) -> dict:
    """An evaluation's results.json, whole and with every value a row needs; else
    FleaInputError ``PATH: what is wrong`` (a file cut off mid-write gives no half row)."""
    try:
        with open(path, "rb") as results_file:
            raw = results_file.read()
    except OSError as error:
        raise FleaInputError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FleaInputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise FleaInputError(f"{path}: empty (a write that did not finish?)")
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        stripped = text.strip()
        if stripped[0] in "{[" and stripped[-1] not in "}]":
            raise FleaInputError(f"{path}: cut off after {len(raw)} bytes, its JSON never closed "
                                 "(a write that did not finish?)") from None
        raise FleaInputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} "
                             f"column {error.colno})") from None
    problem = results_problem(results)
    if problem is not None:
        raise FleaInputError(f"{path}: {problem}")
    return results


@dataclass
class CollectedRuns:
    rows: Dict[RowKey, List[TestRun]]
    damaged: List[str]  # "PATH: what is wrong" of each results.json left out


def collect_results(work_dir: str, skip_damaged: bool = False) -> CollectedRuns:
    """Every evaluated fine-tuning under ``work_dir``: table row -> its test runs. A damaged
    results.json is an error naming it, or with ``skip_damaged`` a warning and left out."""
    collected = CollectedRuns({}, [])
    pattern = os.path.join(work_dir, "fold*", "**", "eval_test", "results.json")
    for path in sorted(glob.glob(pattern, recursive=True)):
        match = RESULT_PATH.fullmatch(os.path.relpath(path, work_dir).replace(os.sep, "/"))
        if match is None:
            continue
        fold, direction, layer, clusters, pooling, seed = match.groups()
        key: RowKey = (None, None, "mean") if layer is None else (int(layer), int(clusters), pooling)
        try:
            results = read_results_file(path)
        except FleaInputError as error:
            if not skip_damaged:
                raise FleaInputError(f"{error}; evaluate it again (remove {os.path.dirname(path)} and run the "
                                     "recipe's stage 5) or leave it out (tools/aggregate_results.py "
                                     "--skip-damaged)") from None
            logger.warning(f"{error}; left out of the table")
            collected.damaged.append(str(error))
            continue
        collected.rows.setdefault(key, []).append(TestRun(
            int(fold), direction, None if seed is None else int(seed), split_speakers(results["split"]),
            100 * results["ua"], 100 * results["wa"], results["n"],
            *frame_level_values(results),
        ))
    return collected


def frame_level_values(results: dict) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    """EDER (percent), attention in span and its uniform share of an evaluation with --spans; Nones without."""
    def number(key: str) -> Optional[float]:
        value = results.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    eder = number("eder")
    return (None if eder is None else 100 * eder), number("attention_in_span"), number("uniform_in_span")


def frame_level_lines(rows: Dict[RowKey, List[TestRun]]) -> List[str]:
    """Per model, the mean EDER and attention in span (beside uniform) of its runs with spans."""
    keys = [key for key in sorted(rows, key=lambda k: (k[0] or 0, k[1] or 0, k[2]))
            if any(run.eder is not None for run in rows[key])]
    if not keys:
        return []
    lines = ["", "Frame level, against the reference spans (evaluate.py --spans): EDER (%) and the share of "
             "pooling weight inside the emotional span beside what uniform weights give, mean ± std over runs:", "",
             "| model | runs with spans | EDER | attention in span | uniform |", "|---|---|---|---|---|"]
    for key in keys:
        runs = [run for run in rows[key] if run.eder is not None]
        in_span = [run for run in runs if run.attention_in_span is not None]
        lines.append(f"| {row_name(key)} | {len(runs)} | {mean_and_std([r.eder for r in runs])} | "
                     f"{mean_and_std([r.attention_in_span for r in in_span], 2) if in_span else '–'} | "
                     f"{mean_and_std([r.uniform_in_span for r in in_span], 2) if in_span else '–'} |")
    return lines


def paired_lines(rows: Dict[RowKey, List[TestRun]]) -> List[str]:
    """Each FLEA row against TAPT over the same test runs (fold, direction, seed), in UA points."""
    tapt = rows.get((None, None, "mean"))
    others = [key for key in sorted(rows, key=lambda k: (k[0] or 0, k[1] or 0, k[2])) if key[0] is not None]
    if not tapt or not others:
        return []
    by_run = lambda runs: {(r.fold, r.direction, r.seed): r.ua for r in runs}  # noqa: E731
    return ["", *paired_markdown(row_name((None, None, "mean")), by_run(tapt),
                                 [(row_name(key), by_run(rows[key])) for key in others])]


def mean_and_std(values: List[float], digits: int = 1) -> str:
    if len(values) > 1:
        return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"
    return f"{values[0]:.{digits}f}"


def ours(rows: Dict[RowKey, List[TestRun]], key: RowKey) -> str:
    runs = rows.get(key)
    if not runs:
        return "–"
    return f"{mean_and_std([r.ua for r in runs])} / {mean_and_std([r.wa for r in runs])} ({len(runs)})"


def paper(ua_wa: Optional[Tuple[float, float]]) -> str:
    return "–" if ua_wa is None else f"{ua_wa[0]:.1f}/{ua_wa[1]:.1f}"


def row_name(key: RowKey) -> str:
    return "TAPT, mean" if key[0] is None else f"L{key[0]} K{key[1]}, {key[2]}"


def damaged_footer(damaged: List[str]) -> List[str]:
    """The table's last lines: what it leaves out, so that no count goes unexplained."""
    if not damaged:
        return []
    return ["", f"Left out: {len(damaged)} damaged results.json (not counted above):", "",
            *(f"- {problem}" for problem in damaged)]


def results_markdown(rows: Dict[RowKey, List[TestRun]], damaged: Sequence[str] = ()) -> str:
    runs = [run for per_row in rows.values() for run in per_row]
    speakers = sorted({(run.fold, run.speaker) for run in runs})
    seeds = sorted({run.seed for run in runs}, key=lambda seed: -1 if seed is None else seed)
    grid = sorted({(k[0], k[1]) for k in rows if k[0] is not None})
    lines = [
        f"UA / WA (%) on the test speaker, mean ± std over every test run (count in brackets): "
        f"{len(speakers)} test speakers of folds {', '.join(map(str, sorted({r.fold for r in runs})))}"
        f"{'' if seeds == [None] else ', seeds ' + ', '.join(str(s) for s in seeds)}. "
        "Paper: Table 1 of arXiv 2312.16383, on its own protocol (below).",
        "",
        "| Layers | Clusters | Average pooling (ours) | (paper, other protocol) | Attention pooling (ours) | (paper, other protocol) |",
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
    lines += frame_level_lines(rows) + paired_lines(rows)
    spans = any(run.eder is not None for run in runs)
    lines += ["", PROTOCOL_NOTES, "Per test speaker:", "",
              "| model | fold | direction | test speaker | seed | UA | WA | n |" + (" EDER | attention in span (uniform) |" if spans else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|---|" if spans else "")]
    for key in sorted(rows, key=lambda k: (k[0] or 0, k[1] or 0, k[2])):
        for run in sorted(rows[key], key=lambda r: (r.fold, r.direction, r.seed or 0)):
            frame = ""
            if spans:
                frame = (" – | – |" if run.eder is None else f" {run.eder:.1f} | " + (
                    "– |" if run.attention_in_span is None else f"{run.attention_in_span:.2f} ({run.uniform_in_span:.2f}) |"))
            lines.append(f"| {row_name(key)} | {run.fold} | {run.direction} | {run.speaker} | "
                         f"{'-' if run.seed is None else run.seed} | {run.ua:.1f} | {run.wa:.1f} | {run.n} |{frame}")
    lines += damaged_footer(list(damaged))
    return "\n".join(lines) + "\n"


def write_results_table(work_dir: str, skip_damaged: bool = False) -> str:
    """Write ``results.md`` (and every test run as ``results.json``) into ``work_dir``; a
    damaged results.json of a test run stops it with one line, or is left out and counted
    in the table's footer with ``skip_damaged``."""
    collected = collect_results(work_dir, skip_damaged)
    rows = collected.rows
    if not rows:
        damaged = f" ({len(collected.damaged)} damaged, left out)" if collected.damaged else ""
        raise FleaInputError(f"{work_dir}: no fold*/<direction>/.../eval_test/results.json found{damaged} "
                             "(run stage 5 first)")
    markdown = results_markdown(rows, collected.damaged)
    write_text_atomically(os.path.join(work_dir, "results.md"), markdown)
    runs = [
        {"layer": layer, "clusters": clusters, "pooling": pooling, **asdict(run)}
        for (layer, clusters, pooling), per_row in sorted(rows.items(), key=lambda item: str(item[0]))
        for run in per_row
    ]
    write_text_atomically(os.path.join(work_dir, "results.json"), json.dumps(runs, indent=2) + "\n")
    return markdown
