"""Reading audio the way every FLEA tool expects it: mono wav at the model's sample rate."""

import os

import numpy as np
import soundfile as sf

from fairseq_flea.errors import FleaInputError

# HuBERT's first convolution spans 400 samples: anything shorter yields no frame.
MIN_SAMPLES = 400


def check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: audio file not found")


def read_mono_audio(path: str, sample_rate: int, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """Read a mono audio file as float32 in [-1, 1]; a clear error for anything else."""
    check_exists(path)
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise FleaInputError(f"{path}: unreadable audio ({error})") from None
    check_audio_format(path, file_rate, audio.shape[1], len(audio), sample_rate, min_samples)
    return audio[:, 0]


def check_audio_format(
    path: str, file_rate: int, channels: int, num_samples: int, sample_rate: int, min_samples: int
) -> None:
    if file_rate != sample_rate:
        raise FleaInputError(f"{path}: sample rate is {file_rate} Hz, the model expects {sample_rate} Hz")
    if channels != 1:
        raise FleaInputError(f"{path}: has {channels} channels, expected mono audio")
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
