"""39-dimensional MFCC + delta + delta-delta features at 100 frames/s, without torchaudio.

The same features as fairseq's ``dump_mfcc_feature.py`` (HuBERT iteration-1 labels), which
calls ``torchaudio.compliance.kaldi.mfcc(use_energy=False)`` and
``torchaudio.functional.compute_deltas`` twice; torchaudio does not load beside the torch
this project uses, so this is a small re-implementation of those defaults (Kaldi's
``compute-mfcc-feats``): 25 ms povey-windowed frames every 10 ms without padding (snip
edges), DC removal, pre-emphasis 0.97, 512-point power spectrum, 23 mel bins from 20 Hz
to Nyquist, log, orthonormal DCT to 13 coefficients, cepstral lifter 22. The tests check it
against torchaudio's own kaldi.py source.
"""

from typing import List, Sequence

import numpy as np
from scipy.fft import dct

from fairseq_flea.io.audio import read_mono_audio
from fairseq_flea.units.shards import write_feature_shard

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 23
NUM_CEPSTRA = 13
LOW_FREQUENCY = 20.0
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2  # torchaudio's compute_deltas(win_length=5)
LOG_FLOOR = np.finfo(np.float32).eps


def mel_scale(frequency: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + frequency / 700.0)


def mel_filterbank(sample_rate: int) -> np.ndarray:
    """(NUM_MEL_BINS, FFT_SIZE // 2 + 1) triangular filters on the mel scale, as Kaldi builds them."""
    mel_low, mel_high = mel_scale(np.array(LOW_FREQUENCY)), mel_scale(np.array(sample_rate / 2))
    mel_step = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    left = mel_low + np.arange(NUM_MEL_BINS)[:, None] * mel_step
    centre, right = left + mel_step, left + 2 * mel_step
    # Kaldi leaves the Nyquist bin out of every filter.
    bin_mels = mel_scale(np.arange(FFT_SIZE // 2) * sample_rate / FFT_SIZE)[None, :]
    rising = (bin_mels - left) / (centre - left)
    falling = (right - bin_mels) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(weights, ((0, 0), (0, 1)))


def povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** 0.85


def mfcc(waveform: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(frames, 13) MFCCs of a mono waveform; frames = 1 + (samples - 400) // 160."""
    num_frames = 1 + (len(waveform) - FRAME_LENGTH) // FRAME_SHIFT
    starts = np.arange(num_frames)[:, None] * FRAME_SHIFT
    frames = waveform.astype(np.float64)[starts + np.arange(FRAME_LENGTH)[None, :]]
    frames -= frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - PREEMPHASIS * previous) * povey_window()
    power = np.abs(np.fft.rfft(frames, n=FFT_SIZE)) ** 2
    log_mel = np.log(np.maximum(power @ mel_filterbank(sample_rate).T, LOG_FLOOR))
    cepstra = dct(log_mel, type=2, norm="ortho", axis=1)[:, :NUM_CEPSTRA]
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * np.arange(NUM_CEPSTRA) / CEPSTRAL_LIFTER)
    return (cepstra * lifter).astype(np.float32)


def deltas(features: np.ndarray) -> np.ndarray:
    """Regression deltas over +-2 frames along axis 0, edges replicated."""
    padded = np.pad(features, ((DELTA_WINDOW, DELTA_WINDOW), (0, 0)), mode="edge")
    length = len(features)
    numerator = sum(
        n * (padded[DELTA_WINDOW + n : DELTA_WINDOW + n + length] - padded[DELTA_WINDOW - n : DELTA_WINDOW - n + length])
        for n in range(1, DELTA_WINDOW + 1)
    )
    denominator = 2 * sum(n * n for n in range(1, DELTA_WINDOW + 1))
    return (numerator / denominator).astype(np.float32)


def mfcc_with_deltas(waveform: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(frames, 39): MFCC, delta and delta-delta, as fairseq's dump_mfcc_feature.py concatenates them."""
    static = mfcc(waveform, sample_rate)
    first = deltas(static)
    return np.concatenate([static, first, deltas(first)], axis=1)


def dump_mfcc_features(
    tsv_dir: str, split: str, nshard: int, rank: int, feat_dir: str, sample_rate: int = 16000
) -> None:
    """39-dim MFCC + deltas at 100 frames/s (HuBERT iteration-1 labels), for one shard."""

    def mfcc_features(paths: Sequence[str], _expected: Sequence[int]) -> List[np.ndarray]:
        return [mfcc_with_deltas(read_mono_audio(path, sample_rate), sample_rate) for path in paths]

    write_feature_shard(tsv_dir, split, nshard, rank, feat_dir, lambda: mfcc_features, "MFCC features")
