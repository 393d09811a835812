"""Any labelled corpus given as CSV (``path,label,speaker[,group]``) -> the same folds as IEMOCAP.

With a group column, each fold leaves one group out (e.g. a recording session). Without it,
the speakers, sorted, are dealt round-robin into ``num_folds`` speaker sets and each fold
leaves one set out. Either way the held-out speakers, sorted, are split in two: the first
half validates, the rest is test (``swap_valid_test`` exchanges the halves).
"""

import csv
import logging
import os
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text
from fairseq_flea.corpus.folds import Utterance, write_fold_manifests

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "speaker")
ALL_COLUMNS = REQUIRED_COLUMNS + ("group",)
DEFAULT_SPEAKER_FOLDS = 5


def read_corpus_csv(csv_path: str) -> Tuple[List[Utterance], bool]:
    """The CSV's utterances (relative paths are relative to the CSV) and whether it has groups.

    A first row that names the columns is a header. A speaker found in two groups fails,
    since leaving that group out would still train on the speaker.
    """
    if not os.path.isfile(csv_path):
        raise FleaInputError(f"{csv_path}: CSV not found (expected rows path,label,speaker[,group])")
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    lines = read_text(csv_path).splitlines()
    rows = [(number, row) for number, row in enumerate(csv.reader(lines), start=1) if any(row)]
    if rows and [field.strip() for field in rows[0][1]] in (list(REQUIRED_COLUMNS), list(ALL_COLUMNS)):
        rows = rows[1:]
    if not rows:
        raise FleaInputError(f"{csv_path}: no rows (expected path,label,speaker[,group])")
    first_line, first_row = rows[0]
    num_columns = len(first_row)
    if num_columns not in (len(REQUIRED_COLUMNS), len(ALL_COLUMNS)):
        raise FleaInputError(
            f"{csv_path}, line {first_line}: expected the fields path,label,speaker[,group], got {first_row!r}"
        )
    has_groups = num_columns == len(ALL_COLUMNS)
    columns = ",".join(ALL_COLUMNS[:num_columns])
    utterances: List[Utterance] = []
    line_of_path: Dict[str, int] = {}
    group_of_speaker: Dict[str, Tuple[str, int]] = {}
    for line_number, row in rows:
        fields = [field.strip() for field in row]
        if len(fields) != num_columns or not all(fields):
            raise FleaInputError(
                f"{csv_path}, line {line_number}: expected {num_columns} non-empty fields {columns} "
                f"(as on line {first_line}), got {row!r}"
            )
        path = os.path.normpath(os.path.join(base_dir, fields[0]))
        if path in line_of_path:
            raise FleaInputError(
                f"{csv_path}, line {line_number}: {fields[0]} is listed twice (first on line {line_of_path[path]})"
            )
        line_of_path[path] = line_number
        speaker, group = fields[2], (fields[3] if has_groups else "")
        speaker_group, speaker_line = group_of_speaker.setdefault(speaker, (group, line_number))
        if group != speaker_group:
            raise FleaInputError(
                f"{csv_path}, line {line_number}: speaker {speaker} is in group {group} here and in "
                f"group {speaker_group} on line {speaker_line}; a speaker must stay in one group"
            )
        utterances.append(Utterance(path=path, label=fields[1], speaker=speaker, group=group))
    return utterances, has_groups


def assign_speaker_sets(utterances: Sequence[Utterance], num_folds: int) -> List[Utterance]:
    """Group = one of ``num_folds`` speaker sets, dealt round-robin over the sorted speakers."""
    speakers = sorted({u.speaker for u in utterances})
    if not 2 <= num_folds <= len(speakers) // 2:
        raise FleaInputError(
            f"{len(speakers)} speakers cannot make {num_folds} folds: every fold needs a held-out "
            f"set of at least two speakers (one to validate, one to test), so 2 to {len(speakers) // 2} folds"
        )
    digits = len(str(num_folds))
    set_of_speaker = {
        speaker: f"speakers{index % num_folds + 1:0{digits}d}" for index, speaker in enumerate(speakers)
    }
    return [replace(u, group=set_of_speaker[u.speaker]) for u in utterances]


def prepare_corpus(
    csv_path: str,
    out_dir: str,
    num_folds: Optional[int] = None,
    swap_valid_test: bool = False,
    pretrain_valid_fraction: Optional[float] = None,
    seed: int = 0,
) -> Dict[str, object]:
    """Write the CSV corpus's folds under ``out_dir``; returns the report written to counts.json."""
    utterances, has_groups = read_corpus_csv(csv_path)
    if has_groups and num_folds is not None:
        raise FleaInputError(
            f"{csv_path} has a group column, which defines the folds; leave the number of folds out"
        )
    if not has_groups:
        utterances = assign_speaker_sets(utterances, num_folds or DEFAULT_SPEAKER_FOLDS)

    def half_of_speakers(group: str, speakers: Sequence[str]) -> Sequence[str]:
        half = len(speakers) // 2
        return speakers[half:] if swap_valid_test else speakers[:half]

    return write_fold_manifests(
        out_dir,
        utterances,
        classes={u.label for u in utterances},
        choose_valid_speakers=half_of_speakers,
        audio_root=os.path.commonpath([os.path.dirname(u.path) for u in utterances]),
        pretrain_valid_fraction=pretrain_valid_fraction,
        seed=seed,
        group_title="group" if has_groups else "speaker set",
        extra_report={
            "corpus": os.path.abspath(csv_path),
            "folds_from": "group column" if has_groups else "speaker sets",
        },
    )
