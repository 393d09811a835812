"""A generated IEMOCAP-shaped tree: the release's layout and EmoEvaluation line format, tiny wavs.

Every session has a dialog led by each gender (and Session3 an ``impro05b``); within a
dialog both genders speak, so a ``Ses01F_...`` dialog holds ``_M`` utterances whose speaker
is the male actor. Labels cycle through IEMOCAP's, including the ones FLEA leaves out
(fru, sur, oth, xxx). ``IemocapTree.utterances`` records what was written, for the tests
to compute their expectations from.
"""

import os
from dataclasses import dataclass
from typing import List

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
LABEL_CYCLE = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "oth", "xxx")
UTTERANCES_PER_DIALOG = 6
CATEGORY_NAMES = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "ang": "Anger", "sad": "Sadness",
    "fru": "Frustration", "sur": "Surprise", "oth": "Other", "xxx": "Neutral",
}


@dataclass(frozen=True)
class GeneratedUtterance:
    name: str
    session: int
    dialog: str
    speaker: str  # session + suffix gender, e.g. Ses01M
    label: str  # the IEMOCAP label as written in the EmoEvaluation file
    wav_path: str
    num_samples: int


@dataclass
class IemocapTree:
    root: str
    utterances: List[GeneratedUtterance]

    def label_file(self, session: int, dialog: str) -> str:
        return os.path.join(self.root, f"Session{session}", "dialog", "EmoEvaluation", f"{dialog}.txt")


def dialogs_of_session(session: int) -> List[str]:
    dialogs = [f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"]
    if session == 3:
        dialogs.append("Ses03M_impro05b")
    return dialogs


def label_block(start: float, end: float, name: str, label: str) -> List[str]:
    """A label line and the annotator lines that follow it in the release."""
    category = CATEGORY_NAMES[label]
    return [
        f"[{start:.4f} - {end:.4f}]\t{name}\t{label}\t[2.5000, 3.0000, 3.5000]",
        f"C-E1:\t{category};\t()",
        f"C-E2:\t{category}; Other;\t(comment)",
        f"C-F1:\t{category};\t()",
        "A-E1:\tval 3; act 2; dom  2;\t()",
        "A-F1:\tval 2; act 3; dom  3;\t()",
        "",
    ]


def write_iemocap_tree(root: str, seed: int = 0) -> IemocapTree:
    rng = np.random.default_rng(seed)
    utterances = []
    label_index = 0
    for session in range(1, 6):
        label_dir = os.path.join(root, f"Session{session}", "dialog", "EmoEvaluation")
        os.makedirs(label_dir, exist_ok=True)
        for dialog in dialogs_of_session(session):
            wav_dir = os.path.join(root, f"Session{session}", "sentences", "wav", dialog)
            os.makedirs(wav_dir, exist_ok=True)
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            turn_of_gender = {"F": 0, "M": 0}
            start = 1.0
            for position in range(UTTERANCES_PER_DIALOG):
                gender = "FM"[position % 2]
                name = f"{dialog}_{gender}{turn_of_gender[gender]:03d}"
                turn_of_gender[gender] += 1
                label = LABEL_CYCLE[(label_index + session) % len(LABEL_CYCLE)]
                label_index += 1
                num_samples = int(rng.integers(9600, 16000))  # 0.6-1 s: long enough to pretrain on
                wave = 0.1 * rng.standard_normal(num_samples).astype(np.float32)
                wav_path = os.path.join(wav_dir, f"{name}.wav")
                sf.write(wav_path, wave, SAMPLE_RATE, subtype="PCM_16")
                lines += label_block(start, start + num_samples / SAMPLE_RATE, name, label)
                start += 2.0
                utterances.append(
                    GeneratedUtterance(name, session, dialog, f"Ses0{session}{gender}", label, wav_path, num_samples)
                )
            with open(os.path.join(label_dir, f"{dialog}.txt"), "w") as label_file:
                label_file.write("\n".join(lines) + "\n")
        # The release keeps annotator detail in subdirectories beside the label files.
        os.makedirs(os.path.join(label_dir, "Categorical"), exist_ok=True)
    return IemocapTree(root=os.path.abspath(root), utterances=utterances)
