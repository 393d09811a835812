"""A generated corpus for pretraining tests: real 16 kHz wav files whose frame labels are learnable.

Each utterance is a chain of harmonic tones; the frame label is the tone class sounding
in that 20 ms frame, so masked prediction has something to learn from the context.
"""

import os
from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import soundfile as sf

from fairseq_flea.io.frames import HUBERT_BASE_CONV_LAYERS, conv_output_length, parse_conv_layers

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 320


@dataclass
class ToneCorpus:
    data_dir: str
    frame_classes: Dict[str, List[np.ndarray]]  # split -> per-utterance tone class per frame


def conv_frame_count(num_samples: int, conv_feature_layers: str = HUBERT_BASE_CONV_LAYERS) -> int:
    """Number of feature frames the extractor produces for ``num_samples`` samples, as
    fairseq_flea.hubert.forward counts them: conv_output_length, layer by layer."""
    length = num_samples
    for _, kernel, stride in parse_conv_layers(conv_feature_layers):
        length = conv_output_length(length, kernel, stride)
    return max(length, 0)


def tone_frequency(tone_class: int) -> float:
    return 180.0 * 1.22**tone_class


def synthesize_utterance(rng: np.random.Generator, num_classes: int, seconds: float):
    num_samples = int(seconds * SAMPLE_RATE)
    per_sample_class = np.empty(num_samples, dtype=np.int64)
    start = 0
    while start < num_samples:
        length = int(rng.integers(6, 20)) * SAMPLES_PER_FRAME
        per_sample_class[start : start + length] = rng.integers(num_classes)
        start += length
    phase = 2 * np.pi * np.cumsum(np.array([tone_frequency(c) for c in per_sample_class])) / SAMPLE_RATE
    wave = sum(np.sin(harmonic * phase) / harmonic for harmonic in (1, 2, 3))
    wave = 0.3 * wave + 0.01 * rng.standard_normal(num_samples)
    num_frames = conv_frame_count(num_samples)
    frame_centres = np.arange(num_frames) * SAMPLES_PER_FRAME + 200
    return wave.astype(np.float32), per_sample_class[frame_centres]


def write_tone_corpus(
    data_dir: str, num_classes: int, utterances: Dict[str, int], seed: int = 0
) -> ToneCorpus:
    """Write wavs and ``{split}.tsv`` manifests; labels are written by ``write_frame_labels``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(data_dir, "wav"), exist_ok=True)
    frame_classes = {}
    for split, count in utterances.items():
        lines, classes = [os.path.abspath(data_dir)], []
        for index in range(count):
            wave, frame_labels = synthesize_utterance(rng, num_classes, rng.uniform(1.0, 2.5))
            name = f"wav/{split}_{index:03d}.wav"
            sf.write(os.path.join(data_dir, name), wave, SAMPLE_RATE)
            lines.append(f"{name}\t{len(wave)}")
            classes.append(frame_labels)
        with open(os.path.join(data_dir, f"{split}.tsv"), "w") as manifest:
            manifest.write("\n".join(lines) + "\n")
        frame_classes[split] = classes
    return ToneCorpus(data_dir=data_dir, frame_classes=frame_classes)


def write_frame_labels(
    corpus: ToneCorpus,
    label_dir: str,
    name: str,
    num_labels: int,
    class_to_label: Callable[[np.ndarray], np.ndarray] = lambda classes: classes,
) -> None:
    """Write ``{split}.{name}`` frame labels and ``dict.{name}.txt`` in HuBERT's format."""
    os.makedirs(label_dir, exist_ok=True)
    for split, utterances in corpus.frame_classes.items():
        with open(os.path.join(label_dir, f"{split}.{name}"), "w") as labels:
            for classes in utterances:
                labels.write(" ".join(str(label) for label in class_to_label(classes)) + "\n")
    with open(os.path.join(label_dir, f"dict.{name}.txt"), "w") as dictionary:
        dictionary.writelines(f"{label} 1\n" for label in range(num_labels))
