"""IEMOCAP: utterance labels from the EmoEvaluation files, five leave-one-session-out folds.

The layout of the release: ``Session{1..5}/dialog/EmoEvaluation/<dialog>.txt`` with label
lines ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``
between a header, blank lines and annotator lines (``C-E1:``, ``A-E2:``), and the audio in
``Session{n}/sentences/wav/<dialog>/<utterance>.wav``. The speaker of an utterance is its
session and the gender letter of the name's suffix (``Ses01F_impro01_M003`` is ``Ses01M``):
the dialog prefix names who wears the motion-capture markers, not who speaks.
"""

import glob
import logging
import os
import re
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.corpus.folds import ReferenceCounts, Utterance, write_fold_manifests

logger = logging.getLogger(__name__)

SESSIONS = tuple(f"Session{number}" for number in range(1, 6))
IEMOCAP_LABELS = ("ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
GENDERS = ("F", "M")

# IEMOCAP label -> class trained on. "4" is the paper's set (happy = hap + exc).
CLASS_MAPS: Dict[str, Dict[str, str]] = {
    "4": {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"},
    "6": {"ang": "ang", "hap": "hap", "exc": "exc", "neu": "neu", "sad": "sad", "fru": "fru"},
}

# The 4-class counts of the complete release (the paper's 5531 utterances).
FOUR_CLASS_REFERENCE = ReferenceCounts(
    description="the complete IEMOCAP release, 4 classes (5531 utterances)",
    per_class={"ang": 1103, "hap": 1636, "neu": 1708, "sad": 1084},
    per_group={"Session1": 1085, "Session2": 1023, "Session3": 1151, "Session4": 1031, "Session5": 1241},
    total=5531,
)

EXPECTED_LAYOUT = (
    "Session1 to Session5, each with dialog/EmoEvaluation/<dialog>.txt and "
    "sentences/wav/<dialog>/<utterance>.wav"
)
LABEL_LINE = re.compile(
    r"^\[\s*\d+(?:\.\d*)?\s*-\s*\d+(?:\.\d*)?\s*\]\s+(?P<utterance>\S+)\s+(?P<label>\S+)\s+\[[^\]]*\]\s*$"
)
UTTERANCE_NAME = re.compile(r"^Ses(?P<session>\d\d)[FM]_.+_(?P<gender>[FM])\d+$")


def iemocap_speaker(utterance: str) -> str:
    """``Ses03M_impro05b_F001`` (or a path to its wav) -> ``Ses03F``."""
    name = os.path.splitext(os.path.basename(utterance))[0]
    match = UTTERANCE_NAME.match(name)
    if match is None:
        raise FleaInputError(
            f"{utterance!r} is not an IEMOCAP utterance name (expected e.g. Ses01F_impro01_M003)"
        )
    return f"Ses{match['session']}{match['gender']}"


def parse_class_map(spec: str) -> Dict[str, str]:
    """A preset (``4``, ``6``) or ``label[=class],...``, e.g. ``ang,hap,exc=hap,neu,sad``."""
    if spec in CLASS_MAPS:
        return dict(CLASS_MAPS[spec])
    class_map = {}
    for entry in spec.split(","):
        label, _, target = entry.strip().partition("=")
        label, target = label.strip(), (target.strip() or label.strip())
        if label not in IEMOCAP_LABELS:
            raise FleaInputError(
                f"class map {spec!r}: {label!r} is not an IEMOCAP label "
                f"({', '.join(IEMOCAP_LABELS)}); presets: {', '.join(CLASS_MAPS)}"
            )
        class_map[label] = target
    return class_map


def find_sessions(root: str) -> List[str]:
    """The five session directories, failing with what was expected when the tree is not IEMOCAP."""
    if not os.path.isdir(root):
        raise FleaInputError(f"{root}: not a directory (expected the IEMOCAP root: {EXPECTED_LAYOUT})")
    present = [session for session in SESSIONS if os.path.isdir(os.path.join(root, session))]
    if not present:
        nested = sorted(glob.glob(os.path.join(root, "*", SESSIONS[0])))
        hint = f"; did you mean {os.path.dirname(nested[0])}?" if nested else ""
        raise FleaInputError(f"{root} does not look like IEMOCAP: expected {EXPECTED_LAYOUT}{hint}")
    for session in SESSIONS:
        if session not in present:
            raise FleaInputError(
                f"{root}: {session} is missing (expected {EXPECTED_LAYOUT}; every fold needs "
                "all five sessions)"
            )
        for part in (os.path.join("dialog", "EmoEvaluation"), os.path.join("sentences", "wav")):
            if not os.path.isdir(os.path.join(root, session, part)):
                raise FleaInputError(
                    f"{os.path.join(root, session, part)}: directory missing (expected {EXPECTED_LAYOUT})"
                )
    return [os.path.join(root, session) for session in SESSIONS]


def read_emo_evaluation(path: str, session_number: int) -> List[Tuple[str, str, int]]:
    """(utterance, label, line number) of every label line; other lines are not labels."""
    entries = []
    with open(path, errors="replace") as label_file:
        for line_number, line in enumerate(label_file, start=1):
            if not line.startswith("["):
                continue  # header, blank and annotator lines
            match = LABEL_LINE.match(line.rstrip("\n"))
            name_match = match and UTTERANCE_NAME.match(match["utterance"])
            if not name_match:
                raise FleaInputError(
                    f"{path}, line {line_number}: expected '[start - end]<TAB>Ses01F_impro01_F000"
                    f"<TAB>label<TAB>[v, a, d]', got {line.rstrip()!r}"
                )
            if int(name_match["session"]) != session_number:
                raise FleaInputError(
                    f"{path}, line {line_number}: utterance {match['utterance']} does not belong "
                    f"to Session{session_number}"
                )
            entries.append((match["utterance"], match["label"], line_number))
    return entries


def read_iemocap_labels(root: str, class_map: Mapping[str, str]) -> Tuple[List[Utterance], Counter]:
    """Utterances whose label the class map keeps, and how many of each other label were left out."""
    utterances: List[Utterance] = []
    left_out: Counter = Counter()
    first_seen: Dict[str, str] = {}
    for session_number, session_dir in enumerate(find_sessions(root), start=1):
        label_files = sorted(glob.glob(os.path.join(session_dir, "dialog", "EmoEvaluation", "*.txt")))
        if not label_files:
            raise FleaInputError(
                f"{os.path.join(session_dir, 'dialog', 'EmoEvaluation')}: no <dialog>.txt label files"
            )
        for label_file in label_files:
            for name, label, line_number in read_emo_evaluation(label_file, session_number):
                where = f"{label_file}, line {line_number}"
                if name in first_seen:
                    raise FleaInputError(f"{where}: utterance {name} is labelled twice (first at {first_seen[name]})")
                first_seen[name] = where
                if label not in class_map:
                    left_out[label] += 1
                    continue
                dialog = name.rsplit("_", 1)[0]
                utterances.append(
                    Utterance(
                        path=os.path.join(session_dir, "sentences", "wav", dialog, f"{name}.wav"),
                        label=class_map[label],
                        speaker=iemocap_speaker(name),
                        group=os.path.basename(session_dir),
                    )
                )
    return utterances, left_out


def prepare_iemocap(
    root: str,
    out_dir: str,
    class_map_spec: str = "4",
    valid_gender: str = "F",
    pretrain_valid_fraction: Optional[float] = None,
    seed: int = 0,
) -> Dict[str, object]:
    """Write IEMOCAP's five folds under ``out_dir``; returns the report written to counts.json.

    Fold k holds Session k out: its ``valid_gender`` speaker validates, the other is test.
    """
    if valid_gender not in GENDERS:
        raise FleaInputError(f"valid speaker must be one of {GENDERS}, got {valid_gender!r}")
    root = os.path.abspath(root)
    class_map = parse_class_map(class_map_spec)
    utterances, left_out = read_iemocap_labels(root, class_map)
    logger.info(
        "%d labelled utterances in the class map %s; left out by label: %s",
        len(utterances),
        class_map,
        dict(sorted(left_out.items())),
    )

    reference = FOUR_CLASS_REFERENCE if class_map == CLASS_MAPS["4"] else None
    if reference is None:
        logger.info("no published counts for this class map to compare with")

    def speaker_of_gender(session: str, speakers: Sequence[str]) -> List[str]:
        return [speaker for speaker in speakers if speaker.endswith(valid_gender)]

    return write_fold_manifests(
        out_dir,
        utterances,
        classes=set(class_map.values()),
        choose_valid_speakers=speaker_of_gender,
        audio_root=root,
        reference=reference,
        pretrain_valid_fraction=pretrain_valid_fraction,
        seed=seed,
        group_title="session",
        extra_report={
            "corpus": "IEMOCAP",
            "class_map": class_map,
            "labels_left_out": dict(sorted(left_out.items())),
        },
    )
