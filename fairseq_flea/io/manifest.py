"""Reading and checking fairseq audio manifests and the label files that go with them.

Formats are those of fairseq's HuBERT recipe: a manifest ``{split}.tsv`` whose first line
is the audio root and whose other lines are ``relative/path.wav<TAB>num_samples``, and label
files with one line per manifest line.
"""

import os
from dataclasses import dataclass
from typing import Collection, List, Optional

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.text import read_text_lines


@dataclass(frozen=True)
class Manifest:
    path: str
    root: str
    names: List[str]
    num_samples: List[int]

    def __len__(self) -> int:
        return len(self.names)


def read_manifest(path: str) -> Manifest:
    """Read a manifest, failing with the file and line on anything malformed."""
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: manifest not found")
    lines = read_text_lines(path)
    if not lines:
        raise FleaInputError(f"{path}: manifest is empty (expected the audio root on line 1)")
    names, num_samples = [], []
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise FleaInputError(
                f"{path}, line {line_number}: expected 'relative/path.wav<TAB>num_samples', "
                f"got {line!r}"
            )
        names.append(fields[0])
        num_samples.append(int(fields[1]))
    if not names:
        raise FleaInputError(f"{path}: manifest lists no audio files")
    return Manifest(path=path, root=lines[0].strip(), names=names, num_samples=num_samples)


def read_label_lines(path: str, manifest: Manifest) -> List[str]:
    """Read a label file that must have exactly one line per manifest entry."""
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: label file not found (it goes with {manifest.path})")
    lines = read_text_lines(path)
    if len(lines) != len(manifest):
        raise FleaInputError(
            f"{path} has {len(lines)} lines but {manifest.path} lists {len(manifest)} "
            "utterances: they must match line for line"
        )
    return lines


def check_frame_labels(
    manifest: Manifest,
    label_path: str,
    label_rate: float,
    sample_rate: int,
    tolerance_seconds: float,
    known_symbols: Optional[Collection[str]] = None,
) -> None:
    """Fail on the first utterance whose frame labels do not fit its audio.

    fairseq only warns about a duration mismatch and silently maps symbols missing from
    the dictionary to <unk>; both mean the labels belong to other audio or another k-means.
    """
    for line_number, (line, name, num_samples) in enumerate(
        zip(read_label_lines(label_path, manifest), manifest.names, manifest.num_samples),
        start=1,
    ):
        symbols = line.split()
        audio_seconds = num_samples / sample_rate
        label_seconds = len(symbols) / label_rate
        if abs(audio_seconds - label_seconds) > tolerance_seconds:
            raise FleaInputError(
                f"{label_path}, line {line_number}: utterance {name} has {len(symbols)} "
                f"labels ({label_seconds:.2f} s at {label_rate:g} Hz) but {audio_seconds:.2f} s "
                f"of audio; they differ by more than {tolerance_seconds:g} s"
            )
        if known_symbols is not None:
            unknown = next((symbol for symbol in symbols if symbol not in known_symbols), None)
            if unknown is not None:
                raise FleaInputError(
                    f"{label_path}, line {line_number}: label {unknown!r} of utterance {name} "
                    "is not in the label dictionary"
                )


def select_label_lines(source_manifest: str, source_labels: str, target_manifest: str) -> List[str]:
    """The label lines of ``source_labels`` (one per line of ``source_manifest``) for the
    utterances of ``target_manifest``, in its order: labels made once for a whole corpus,
    given to one of its splits."""
    source = read_manifest(source_manifest)
    by_audio = dict(zip((os.path.join(source.root, name) for name in source.names),
                        read_label_lines(source_labels, source)))
    target = read_manifest(target_manifest)
    selected = []
    for name in target.names:
        line = by_audio.get(os.path.join(target.root, name))
        if line is None:
            raise FleaInputError(f"{target_manifest}: {name} is not in {source_manifest}, so {source_labels} "
                                 "has no labels for it")
        selected.append(line)
    return selected
