"""Reading audio the way every FLEA tool expects it: mono wav at the model's sample rate."""

import os

import numpy as np
import soundfile as sf

from fairseq_flea.errors import FleaInputError

# HuBERT's first convolution spans 400 samples: anything shorter yields no frame.
MIN_SAMPLES = 400


def read_mono_audio(path: str, sample_rate: int, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """Read a mono audio file as float32 in [-1, 1]; a clear error for anything else."""
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: audio file not found")
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise FleaInputError(f"{path}: unreadable audio ({error})") from None
    if file_rate != sample_rate:
        raise FleaInputError(
            f"{path}: sample rate is {file_rate} Hz, the model expects {sample_rate} Hz"
        )
    if audio.shape[1] != 1:
        raise FleaInputError(f"{path}: has {audio.shape[1]} channels, expected mono audio")
    if len(audio) < min_samples:
        raise FleaInputError(
            f"{path}: only {len(audio)} samples, shorter than one frame ({min_samples} samples)"
        )
    return audio[:, 0]
