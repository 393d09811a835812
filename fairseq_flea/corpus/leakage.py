"""The guard run before every pretraining, k-means and fine-tuning step of a fold.

It fails when the data a step trains on holds an utterance or a speaker of the fold's
held-out splits (valid and test). Utterances are compared by their resolved audio path
(manifest root + relative path, symbolic links followed), speakers by the ``{split}.spk``
file beside each manifest (one speaker per manifest line, as the prepare tools write it)
or, for manifests without one, by a function of the file name such as ``iemocap_speaker``.
"""

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.manifest import Manifest, read_label_lines, read_manifest

logger = logging.getLogger(__name__)

HELD_OUT_SPLITS = ("valid", "test")

SpeakerOf = Callable[[str], str]


def speakers_file(manifest_path: str) -> str:
    return os.path.splitext(manifest_path)[0] + ".spk"


def manifest_speakers(manifest: Manifest, speaker_of: Optional[SpeakerOf] = None) -> List[str]:
    """One speaker per manifest line, from ``speaker_of(relative path)`` or the ``.spk`` file."""
    if speaker_of is not None:
        return [speaker_of(name) for name in manifest.names]
    path = speakers_file(manifest.path)
    if not os.path.isfile(path):
        raise FleaInputError(
            f"{path}: speaker file not found; the leakage check needs one speaker per line of "
            f"{manifest.path} (tools/prepare_*.py write it) or speakers from IEMOCAP file names"
        )
    return read_label_lines(path, manifest)


def resolved_audio_paths(manifest: Manifest) -> List[str]:
    return [os.path.realpath(os.path.join(manifest.root, name)) for name in manifest.names]


def fold_held_out_manifests(fold_dir: str) -> List[str]:
    """A fold's validation and test manifests: what none of its training steps may see."""
    return [os.path.join(fold_dir, f"{split}.tsv") for split in HELD_OUT_SPLITS]


def check_no_leakage(
    training_manifests: Sequence[str],
    held_out_manifests: Sequence[str],
    speaker_of: Optional[SpeakerOf] = None,
) -> None:
    """Fail, naming the manifest, line, utterance or speaker and held-out split, on any leak."""
    held_out_utterances: Dict[str, str] = {}
    held_out_speakers: Dict[str, str] = {}
    for path in held_out_manifests:
        manifest = read_manifest(path)
        for audio_path in resolved_audio_paths(manifest):
            held_out_utterances.setdefault(audio_path, path)
        for speaker in manifest_speakers(manifest, speaker_of):
            held_out_speakers.setdefault(speaker, path)
    for path in training_manifests:
        manifest = read_manifest(path)
        entries = zip(manifest.names, resolved_audio_paths(manifest), manifest_speakers(manifest, speaker_of))
        for line_number, (name, audio_path, speaker) in enumerate(entries, start=2):
            if audio_path in held_out_utterances:
                raise FleaInputError(
                    f"leakage: {path}, line {line_number} trains on {name}, an utterance of the "
                    f"held-out split {held_out_utterances[audio_path]}"
                )
            if speaker in held_out_speakers:
                raise FleaInputError(
                    f"leakage: {path}, line {line_number} ({name}) is speaker {speaker}, a speaker "
                    f"of the held-out split {held_out_speakers[speaker]}"
                )
        logger.info(
            "no leakage: %s shares no utterance or speaker with %s", path, ", ".join(held_out_manifests)
        )
