"""Reading audio the way every FLEA tool expects it: mono wav at the model's sample rate.

Training and feature tools insist on that format (``read_mono_audio``), so a corpus is
never silently converted; prediction on a user's own recordings converts any sample rate
and channel count and says so (``read_audio_for_model``).
"""

import math
import os
from typing import List, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.frames import MIN_SAMPLES



def check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: audio file not found")


def read_audio_samples(path: str) -> Tuple[np.ndarray, int]:
    """(samples, channels) float32 in [-1, 1] and the file's sample rate; a clear error if unreadable."""
    check_exists(path)
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise FleaInputError(f"{path}: unreadable audio ({error})") from None
    non_finite = ~np.isfinite(audio).all(axis=1)
    if non_finite.any():  # float wavs can hold NaN/Inf; they would become features, labels and scores
        first = int(np.argmax(non_finite))
        raise FleaInputError(
            f"{path}: {int(non_finite.sum())} samples are NaN or infinite, the first at sample {first}"
        )
    return audio, file_rate


def read_mono_audio(path: str, sample_rate: int, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """Read a mono audio file as float32 in [-1, 1]; a clear error for anything else."""
    audio, file_rate = read_audio_samples(path)
    check_audio_format(path, file_rate, audio.shape[1], len(audio), sample_rate, min_samples)
    return audio[:, 0]


def resampled_length(num_samples: int, from_rate: int, to_rate: int) -> int:
    """Samples that ``resample_poly`` returns for ``num_samples`` at ``from_rate``."""
    divisor = math.gcd(from_rate, to_rate)
    return math.ceil(num_samples * (to_rate // divisor) / (from_rate // divisor))


def conform_audio(audio: np.ndarray, file_rate: int, sample_rate: int) -> Tuple[np.ndarray, List[str]]:
    """(samples, channels) audio as a mono float32 waveform at ``sample_rate``, and notes
    saying what was changed: channels averaged, sample rate converted with a polyphase
    filter (scipy's resample_poly, the rational factor reduced by the rates' gcd)."""
    notes = []
    if audio.ndim == 2 and audio.shape[1] > 1:
        notes.append(f"downmixed {audio.shape[1]} channels")
        mono = audio.mean(axis=1)
    else:
        mono = audio.reshape(len(audio))
    if file_rate != sample_rate:
        notes.append(f"resampled {file_rate} Hz -> {sample_rate} Hz")
        divisor = math.gcd(file_rate, sample_rate)
        mono = resample_poly(mono, sample_rate // divisor, file_rate // divisor)
    return np.ascontiguousarray(mono, dtype=np.float32), notes


def read_audio_for_model(path: str, sample_rate: int, min_samples: int = MIN_SAMPLES) -> Tuple[np.ndarray, List[str]]:
    """Any readable audio file as a mono float32 waveform at ``sample_rate``, and notes on
    what was converted (empty for a mono file at that rate)."""
    audio, file_rate = read_audio_samples(path)
    if file_rate == sample_rate:
        check_min_samples(path, len(audio), min_samples)
    elif resampled_length(len(audio), file_rate, sample_rate) < min_samples:
        raise FleaInputError(
            f"{path}: only {len(audio)} samples at {file_rate} Hz, shorter than one frame "
            f"({min_samples} samples at {sample_rate} Hz)"
        )
    return conform_audio(audio, file_rate, sample_rate)


def check_audio_format(
    path: str, file_rate: int, channels: int, num_samples: int, sample_rate: int, min_samples: int
) -> None:
    if file_rate != sample_rate:
        raise FleaInputError(f"{path}: sample rate is {file_rate} Hz, the model expects {sample_rate} Hz")
    if channels != 1:
        raise FleaInputError(f"{path}: has {channels} channels, expected mono audio")
    check_min_samples(path, num_samples, min_samples)


def check_min_samples(path: str, num_samples: int, min_samples: int) -> None:
    if num_samples < min_samples:
        raise FleaInputError(
            f"{path}: only {num_samples} samples, shorter than one frame ({min_samples} samples)"
        )


def check_audio_header(path: str, sample_rate: int, min_samples: int = MIN_SAMPLES) -> int:
    """Check a file's header without reading its samples; returns its number of samples."""
    check_exists(path)
    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise FleaInputError(f"{path}: unreadable audio ({error})") from None
    check_audio_format(path, info.samplerate, info.channels, info.frames, sample_rate, min_samples)
    return info.frames
