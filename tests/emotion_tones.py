"""Generated labelled utterances whose four classes differ in pitch and energy.

Class = (low or high pitch) x (quiet or loud); each utterance also varies at random in
pitch, loudness and length, so the classes are learnable without being trivial.
"""

import os
from typing import Dict

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
CLASSES = ["ang", "hap", "neu", "sad"]
CLASS_PITCH_HZ = {"ang": 260.0, "hap": 260.0, "neu": 150.0, "sad": 150.0}
CLASS_AMPLITUDE = {"ang": 0.5, "hap": 0.12, "neu": 0.5, "sad": 0.12}


def synthesize(rng: np.random.Generator, label: str, seconds: float) -> np.ndarray:
    num_samples = int(seconds * SAMPLE_RATE)
    pitch = CLASS_PITCH_HZ[label] * rng.uniform(0.85, 1.15)
    # A slow pitch contour and syllable-like bursts make it speech-shaped enough.
    contour = pitch * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * np.arange(num_samples) / SAMPLE_RATE))
    phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 5) * np.arange(num_samples) / SAMPLE_RATE) ** 2
    amplitude = CLASS_AMPLITUDE[label] * rng.uniform(0.8, 1.25)
    noise = 0.01 * rng.standard_normal(num_samples)
    return (amplitude * envelope * wave / 2 + noise).astype(np.float32)


def write_emotion_corpus(data_dir: str, counts: Dict[str, int], seed: int = 0) -> None:
    """``{split}.tsv`` + ``{split}.emo`` + ``dict.emo.txt`` with ``counts[split]`` utterances per split."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(data_dir, "wav"), exist_ok=True)
    train_counts = {label: 0 for label in CLASSES}
    for split, count in counts.items():
        manifest, labels = [os.path.abspath(data_dir)], []
        for index in range(count):
            label = CLASSES[index % len(CLASSES)]
            wave = synthesize(rng, label, rng.uniform(0.8, 2.5))
            name = f"wav/{split}_{index:03d}.wav"
            sf.write(os.path.join(data_dir, name), wave, SAMPLE_RATE)
            manifest.append(f"{name}\t{len(wave)}")
            labels.append(label)
            if split == "train":
                train_counts[label] += 1
        with open(os.path.join(data_dir, f"{split}.tsv"), "w") as f:
            f.write("\n".join(manifest) + "\n")
        with open(os.path.join(data_dir, f"{split}.emo"), "w") as f:
            f.write("\n".join(labels) + "\n")
    with open(os.path.join(data_dir, "dict.emo.txt"), "w") as f:
        f.writelines(f"{label} {train_counts[label]}\n" for label in CLASSES)
