"""Leakage-free cross-validation folds of a labelled speech corpus, written as fairseq manifests.

One piece of code for every corpus: ``tools/prepare_iemocap.py`` and ``tools/prepare_corpus.py``
only turn their input into ``Utterance`` records and say which held-out speakers validate.
Folds leave one group (an IEMOCAP session, a CSV group or a speaker set) out: its speakers
become the fold's valid and test splits and nothing of the group reaches the fold's training
or pretraining data.

Layout written under ``out_dir`` (see manifests/README.md):

- ``all.{tsv,emo,spk}``: every usable utterance;
- ``fold{k}/{train,valid,test}.{tsv,emo,spk}`` and ``fold{k}/dict.emo.txt``;
- with pretraining splits, ``fold{k}/pretrain/{train,valid}.{tsv,spk}``: audio-only, from
  the training groups only;
- ``counts.json``: group x class counts, deviations from reference counts, skipped audio, folds.
"""

import argparse
import json
import logging
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.audio import check_audio_header
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
COUNTS_FILE = "counts.json"


@dataclass(frozen=True)
class Utterance:
    path: str  # absolute path of the wav file
    label: str  # the class it trains as, after the corpus's class map
    speaker: str
    group: str  # what a fold leaves out: an IEMOCAP session, a CSV group, a speaker set
    num_samples: Optional[int] = None  # read from the wav header by check_audio


@dataclass(frozen=True)
class SkippedAudio:
    path: str
    reason: str


@dataclass(frozen=True)
class Fold:
    number: int
    held_out_group: str
    valid_speakers: Tuple[str, ...]
    test_speakers: Tuple[str, ...]


@dataclass(frozen=True)
class ReferenceCounts:
    """Published utterance counts a complete copy of a corpus must reproduce."""

    description: str
    per_class: Mapping[str, int]
    per_group: Mapping[str, int]
    total: int


# A held-out group's speakers in sorted order -> the ones that validate; the rest are test.
ValidSpeakerChoice = Callable[[str, Sequence[str]], Sequence[str]]


def check_audio(utterances: Sequence[Utterance]) -> Tuple[List[Utterance], List[SkippedAudio]]:
    """Read each wav header with the check training applies (``check_audio_header``): keep
    what training accepts, with its length; list everything else with why."""
    usable, skipped = [], []
    for utterance in tqdm(utterances, desc="checking wav headers", unit="wav"):
        try:
            num_samples = check_audio_header(utterance.path, SAMPLE_RATE)
        except FleaInputError as error:
            skipped.append(SkippedAudio(utterance.path, str(error).removeprefix(f"{utterance.path}: ")))
        else:
            usable.append(replace(utterance, num_samples=num_samples))
    return usable, skipped


def leave_one_group_out(
    utterances: Sequence[Utterance], choose_valid_speakers: ValidSpeakerChoice
) -> List[Fold]:
    """One fold per group, in sorted group order; fails on a fold with an empty split."""
    speakers_of_group: Dict[str, set] = {}
    for utterance in utterances:
        speakers_of_group.setdefault(utterance.group, set()).add(utterance.speaker)
    folds = []
    for number, group in enumerate(sorted(speakers_of_group), start=1):
        speakers = sorted(speakers_of_group[group])
        valid = tuple(sorted(choose_valid_speakers(group, speakers)))
        test = tuple(speaker for speaker in speakers if speaker not in valid)
        if not valid or not test:
            raise FleaInputError(
                f"{group}: its usable utterances come from speakers {speakers}, which cannot "
                f"be split into a validation speaker and a different test speaker"
            )
        folds.append(Fold(number, group, valid, test))
    if len(folds) < 2:
        raise FleaInputError(
            f"only {len(folds)} group(s) ({sorted(speakers_of_group)}): leaving one group out "
            "needs at least two"
        )
    return folds


def fold_splits(utterances: Sequence[Utterance], fold: Fold) -> Dict[str, List[Utterance]]:
    return {
        "train": [u for u in utterances if u.group != fold.held_out_group],
        "valid": [u for u in utterances if u.speaker in fold.valid_speakers],
        "test": [u for u in utterances if u.speaker in fold.test_speakers],
    }


def split_for_pretraining(
    train: Sequence[Utterance], valid_fraction: float, seed: int
) -> Dict[str, List[Utterance]]:
    """A small seeded held-out part of the training groups, for pretraining's validation loss."""
    valid_count = max(1, round(len(train) * valid_fraction))
    if valid_count >= len(train):
        raise FleaInputError(
            f"{len(train)} training utterances are too few to hold out {valid_count} "
            "for pretraining validation"
        )
    chosen = set(random.Random(seed).sample(range(len(train)), valid_count))
    return {
        "train": [u for index, u in enumerate(train) if index not in chosen],
        "valid": [u for index, u in enumerate(train) if index in chosen],
    }


def write_split(
    directory: str, split: str, utterances: Sequence[Utterance], audio_root: str, with_labels: bool = True
) -> None:
    """``{split}.tsv`` (fairseq manifest), ``{split}.spk`` and, with labels, ``{split}.emo``."""
    os.makedirs(directory, exist_ok=True)
    manifest_lines = [audio_root] + [
        f"{os.path.relpath(u.path, audio_root)}\t{u.num_samples}" for u in utterances
    ]
    write_text_atomically(os.path.join(directory, f"{split}.tsv"), "\n".join(manifest_lines) + "\n")
    write_text_atomically(
        os.path.join(directory, f"{split}.spk"), "".join(f"{u.speaker}\n" for u in utterances)
    )
    if with_labels:
        write_text_atomically(
            os.path.join(directory, f"{split}.emo"), "".join(f"{u.label}\n" for u in utterances)
        )


def write_dictionary(path: str, classes: Sequence[str], train: Sequence[Utterance]) -> None:
    """fairseq's ``symbol count``; every class, in the same order in every fold."""
    counts = Counter(u.label for u in train)
    write_text_atomically(path, "".join(f"{label} {counts[label]}\n" for label in classes))


def count_table(utterances: Sequence[Utterance], classes: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """group -> class -> utterances, every class present in every row."""
    table: Dict[str, Dict[str, int]] = {}
    for utterance in utterances:
        row = table.setdefault(utterance.group, {label: 0 for label in classes})
        row[utterance.label] += 1
    return {group: table[group] for group in sorted(table)}


def count_deviations(
    table: Mapping[str, Mapping[str, int]], reference: ReferenceCounts
) -> List[Dict[str, object]]:
    """Every class, group and total whose count differs from the reference."""
    found_per_class = column_totals(table, list(reference.per_class))
    comparisons = [(f"class {label}", found_per_class[label], n) for label, n in reference.per_class.items()]
    comparisons += [
        (group, sum(table.get(group, {}).values()), n) for group, n in reference.per_group.items()
    ]
    comparisons.append(("total", sum(sum(row.values()) for row in table.values()), reference.total))
    return [
        {"count": what, "found": found, "expected": expected, "difference": found - expected}
        for what, found, expected in comparisons
        if found != expected
    ]


def format_count_table(
    table: Mapping[str, Mapping[str, int]], classes: Sequence[str], group_title: str = "group"
) -> str:
    width = max([len(group) for group in table] + [len("total"), len(group_title)])
    rows = [f"{group_title:{width}}" + "".join(f"{label:>7}" for label in classes) + f"{'total':>8}"]
    for group, row in list(table.items()) + [("total", column_totals(table, classes))]:
        rows.append(
            f"{group:{width}}"
            + "".join(f"{row[label]:>7}" for label in classes)
            + f"{sum(row.values()):>8}"
        )
    return "\n".join(rows)


def column_totals(table: Mapping[str, Mapping[str, int]], classes: Sequence[str]) -> Dict[str, int]:
    return {label: sum(row.get(label, 0) for row in table.values()) for label in classes}


def format_deviations(deviations: Sequence[Mapping[str, object]]) -> str:
    width = max(len(str(d["count"])) for d in deviations)
    rows = [f"{'':{width}}{'found':>8}{'expected':>10}{'difference':>12}"]
    rows += [
        f"{d['count']!s:{width}}{d['found']:>8}{d['expected']:>10}{d['difference']:>+12}"
        for d in deviations
    ]
    return "\n".join(rows)


def write_fold_manifests(
    out_dir: str,
    candidates: Sequence[Utterance],
    classes: Sequence[str],
    choose_valid_speakers: ValidSpeakerChoice,
    audio_root: str,
    reference: Optional[ReferenceCounts] = None,
    pretrain_valid_fraction: Optional[float] = None,
    seed: int = 0,
    group_title: str = "group",
    extra_report: Optional[Mapping[str, object]] = None,
) -> Dict[str, object]:
    """Check the audio, build the folds and write the whole layout; returns counts.json's content.

    ``candidates`` are the labelled utterances in the corpus's classes; their audio is checked
    here. ``pretrain_valid_fraction`` (e.g. 0.05) also writes each fold's pretraining split.
    """
    classes = sorted(classes)
    candidates = sorted(candidates, key=lambda u: u.path)
    utterances, skipped = check_audio(candidates)
    for item in skipped:
        logger.warning("skipped %s: %s", item.path, item.reason)
    if skipped:
        logger.warning("skipped %d of %d labelled wav files (listed above)", len(skipped), len(candidates))
    if not utterances:
        raise FleaInputError(f"none of the {len(candidates)} labelled wav files is usable")
    folds = leave_one_group_out(utterances, choose_valid_speakers)

    os.makedirs(out_dir, exist_ok=True)
    write_split(out_dir, "all", utterances, audio_root)
    fold_reports = []
    for fold in folds:
        fold_dir = os.path.join(out_dir, f"fold{fold.number}")
        splits = fold_splits(utterances, fold)
        for split, members in splits.items():
            write_split(fold_dir, split, members, audio_root)
        write_dictionary(os.path.join(fold_dir, "dict.emo.txt"), classes, splits["train"])
        fold_report = {
            "fold": fold.number,
            "held_out": fold.held_out_group,
            "valid_speakers": list(fold.valid_speakers),
            "test_speakers": list(fold.test_speakers),
            "utterances": {split: len(members) for split, members in splits.items()},
        }
        if pretrain_valid_fraction is not None:
            pretrain = split_for_pretraining(splits["train"], pretrain_valid_fraction, seed)
            for split, members in pretrain.items():
                write_split(os.path.join(fold_dir, "pretrain"), split, members, audio_root, with_labels=False)
            fold_report["pretrain_utterances"] = {split: len(m) for split, m in pretrain.items()}
        fold_reports.append(fold_report)
        logger.info(
            "fold%d: holds %s out; valid %s (%d), test %s (%d), train %d utterances",
            fold.number,
            fold.held_out_group,
            ", ".join(fold.valid_speakers),
            len(splits["valid"]),
            ", ".join(fold.test_speakers),
            len(splits["test"]),
            len(splits["train"]),
        )

    table = count_table(utterances, classes)
    logger.info(
        "utterances kept, %s x class:\n%s", group_title, format_count_table(table, classes, group_title)
    )
    report: Dict[str, object] = dict(extra_report or {})
    report.update(
        {
            "classes": classes,
            "counts": table,
            "total": len(utterances),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
            "folds": fold_reports,
        }
    )
    if reference is not None:
        deviations = count_deviations(table, reference)
        report["reference"] = asdict(reference)
        report["deviations"] = deviations
        if deviations:
            logger.warning(
                "counts differ from %s:\n%s", reference.description, format_deviations(deviations)
            )
        else:
            logger.info("counts match %s", reference.description)
    write_text_atomically(
        os.path.join(out_dir, COUNTS_FILE), json.dumps(report, indent=2, sort_keys=True) + "\n"
    )
    logger.info("wrote %d folds under %s", len(folds), out_dir)
    return report


def add_pretrain_split_options(parser: "argparse.ArgumentParser", source: str) -> None:
    """The prepare tools' options for the audio-only pretraining manifests (``source``: what they come from)."""
    parser.add_argument(
        "--pretrain-splits", action="store_true",
        help=f"also write fold{{k}}/pretrain/{{train,valid}}.tsv from the {source} only",
    )
    parser.add_argument(
        "--pretrain-valid-percent", type=float, default=5.0,
        help="share of the training utterances in pretrain/valid.tsv (default: 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the pretrain/valid draw (default: 0)")


def pretrain_valid_fraction(args: "argparse.Namespace", parser: "argparse.ArgumentParser") -> Optional[float]:
    """The fraction to pass on, or None when no pretraining manifests were asked for."""
    if not 0 < args.pretrain_valid_percent < 100:
        parser.error("--pretrain-valid-percent must be between 0 and 100")
    return args.pretrain_valid_percent / 100 if args.pretrain_splits else None


# Both ways of testing a fold's held-out group: "FM" keeps the splits as written (for IEMOCAP
# the female speaker validates and the male one is tested), "MF" swaps valid and test.
DIRECTIONS = {"FM": {"valid": "valid", "test": "test"}, "MF": {"valid": "test", "test": "valid"}}
FOLD_SPLIT_FILES = ("tsv", "emo", "spk")


def write_direction(fold_dir: str, direction: str) -> str:
    """``fold_dir/<direction>/``: the fold's train split and dictionary, and its held-out
    speakers as valid and test the way ``direction`` says; returns that directory."""
    if direction not in DIRECTIONS:
        raise FleaInputError(f"unknown direction {direction!r}: one of {sorted(DIRECTIONS)}")
    out_dir = os.path.join(fold_dir, direction)
    os.makedirs(out_dir, exist_ok=True)
    sources = {"train": "train", **DIRECTIONS[direction]}
    copies = {f"{source}.{extension}": f"{split}.{extension}"
              for split, source in sources.items() for extension in FOLD_SPLIT_FILES}
    copies["dict.emo.txt"] = "dict.emo.txt"
    for source_name, name in copies.items():
        write_text_atomically(os.path.join(out_dir, name), read_text(os.path.join(fold_dir, source_name)))
    return out_dir
