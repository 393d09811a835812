"""Utterance-level emotion data: a fairseq manifest, one label per line, and the label dictionary."""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import tqdm
from fairseq.data import Dictionary, FairseqDataset

from fairseq_flea.io.audio import check_audio_header, read_mono_audio
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.hubert.forward import pad_waveforms
from fairseq_flea.io.manifest import Manifest, read_label_lines, read_manifest


def load_label_dictionary(path: str) -> Dictionary:
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: label dictionary not found")
    return Dictionary.load(path)


def class_names(dictionary: Dictionary) -> List[str]:
    """The classes of a label dictionary, without fairseq's special symbols, in file order."""
    return dictionary.symbols[dictionary.nspecial :]


def read_class_indices(label_path: str, manifest: Manifest, classes: Sequence[str]) -> List[int]:
    """Each utterance's index in ``classes``; a label missing from them names its line."""
    classes = {name: index for index, name in enumerate(classes)}
    indices = []
    for line_number, line in enumerate(read_label_lines(label_path, manifest), start=1):
        label = line.strip()
        if label not in classes:
            raise FleaInputError(
                f"{label_path}, line {line_number}: label {label!r} is not in the label dictionary "
                f"({', '.join(classes)})"
            )
        indices.append(classes[label])
    return indices


def check_manifest_audio(manifest: Manifest, sample_rate: int) -> None:
    """Read every header once before training: a bad file fails now, with its name, not hours in."""
    for name in tqdm.tqdm(manifest.names, desc=f"checking {os.path.basename(manifest.path)}", unit="file", leave=False):
        check_audio_header(os.path.join(manifest.root, name), sample_rate)


class EmotionClassificationDataset(FairseqDataset):
    """Waveforms and class indices; training crops randomly to ``max_sample_size``."""

    def __init__(
        self,
        manifest: Manifest,
        targets: List[int],
        sample_rate: int,
        normalize: bool,
        max_sample_size: Optional[int] = None,
        shuffle: bool = True,
    ):
        self.manifest = manifest
        self.targets = targets
        self.sample_rate = sample_rate
        self.normalize = normalize
        self.max_sample_size = max_sample_size
        self.shuffle = shuffle
        self.sizes = np.array(
            [n if max_sample_size is None else min(n, max_sample_size) for n in manifest.num_samples]
        )

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> Dict:
        path = os.path.join(self.manifest.root, self.manifest.names[index])
        waveform = torch.from_numpy(read_mono_audio(path, self.sample_rate))
        if self.max_sample_size is not None and len(waveform) > self.max_sample_size:
            start = np.random.randint(0, len(waveform) - self.max_sample_size + 1)
            waveform = waveform[start : start + self.max_sample_size]
        if self.normalize:
            waveform = F.layer_norm(waveform, waveform.shape)
        return {"id": index, "source": waveform, "target": self.targets[index]}

    def collater(self, samples: List[Dict]) -> Dict:
        if not samples:
            return {}
        source, lengths = pad_waveforms([sample["source"] for sample in samples])
        return {
            "id": torch.tensor([sample["id"] for sample in samples]),
            "nsentences": len(samples),
            "ntokens": int(lengths.sum()),
            # A list, which fairseq leaves on the host when it moves the batch to the GPU: the
            # forward then knows which frames are padded without asking the GPU (hubert_forward).
            "net_input": {"source": source, "lengths": lengths.tolist()},
            "target": torch.tensor([sample["target"] for sample in samples]),
        }

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        # Longest first in length order (ties shuffled): batches hold similar lengths.
        order = [np.random.permutation(len(self))] if self.shuffle else [np.arange(len(self))]
        order.append(self.sizes)
        return np.lexsort(order)[::-1]


def load_classification_split(
    data_dir: str,
    split: str,
    label_name: str,
    dictionary: Dictionary,
    sample_rate: int,
    normalize: bool,
    max_sample_size: Optional[int],
) -> EmotionClassificationDataset:
    manifest = read_manifest(os.path.join(data_dir, f"{split}.tsv"))
    targets = read_class_indices(
        os.path.join(data_dir, f"{split}.{label_name}"), manifest, class_names(dictionary)
    )
    check_manifest_audio(manifest, sample_rate)
    return EmotionClassificationDataset(manifest, targets, sample_rate, normalize, max_sample_size)
