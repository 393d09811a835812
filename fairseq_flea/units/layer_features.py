"""Dumping one transformer layer of a HuBERT-based checkpoint in the HuBERT recipe's format.

Output, as fairseq's ``examples/hubert/simple_kmeans/dump_hubert_feature.py`` writes it:
``{split}_{rank}_{nshard}.npy`` (all frames stacked, float32) and ``.len`` (frames per
utterance). Utterances are batched by length through the padding-safe forward of
``fairseq_flea.hubert.forward``, so batching does not change any utterance's features.
"""

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.models.hubert import HubertModel

from fairseq_flea.io.audio import read_mono_audio
from fairseq_flea.io.frames import MIN_SAMPLES
from fairseq_flea.hubert.checkpoints import checkpoint_model_name, load_checkpoint_state
from fairseq_flea.io.batches import length_sorted_batches
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.hubert.encoder import build_hubert_encoder, load_hubert_encoder_source
from fairseq_flea.hubert.forward import (
    default_device,
    full_float32_precision,
    hubert_forward,
    pad_waveforms,
    unpad_frames,
)
from fairseq_flea.models.ser_attention_classification import CLASSIFIER_MODEL, classifier_encoder_source
from fairseq_flea.units.shards import UtteranceFeatures, write_feature_shard

logger = logging.getLogger(__name__)

@dataclass
class FeatureModel:
    checkpoint_path: str
    hubert: HubertModel
    sample_rate: int
    normalize: bool
    device: torch.device


def default_batch_seconds(device: torch.device) -> float:
    """Batches pay off on a GPU; on a CPU (bench/bench_dump_feature.py) padded batches of
    HuBERT base were slower than one utterance at a time, so the CPU default is 0."""
    return 100.0 if device.type == "cuda" else 0.0


def load_feature_model(checkpoint_path: str, device: Optional[torch.device] = None) -> FeatureModel:
    """The HuBERT encoder of a checkpoint, ready for inference: a HuBERT pretraining
    checkpoint (fairseq's, ours, or an encoder-only conversion) or a fine-tuned classifier.
    Either way it is built as fairseq's own ``HubertModel`` with no fast path, so the same layer
    of the same weights gives the same features, as fairseq's dump_hubert_feature.py computes
    them (through the padding-safe forward)."""
    state = load_checkpoint_state(checkpoint_path)
    model_name = checkpoint_model_name(state)
    if model_name == "hubert":
        source = load_hubert_encoder_source(checkpoint_path, state)
    elif model_name == CLASSIFIER_MODEL:
        source = classifier_encoder_source(checkpoint_path, state)
    else:
        raise FleaInputError(
            f"{checkpoint_path}: checkpoint of an unknown kind (model {model_name or 'unknown'!r}); "
            f"expected a HuBERT pretraining checkpoint ('hubert') or a fine-tuned {CLASSIFIER_MODEL!r}"
        )
    hubert = build_hubert_encoder(source.config, {})
    source.load_into(hubert)
    task_cfg = source.config.task
    device = device or default_device()
    return FeatureModel(
        checkpoint_path=checkpoint_path,
        hubert=hubert.eval().to(device),
        sample_rate=int(task_cfg.get("sample_rate", 16000)),
        normalize=bool(task_cfg.get("normalize", False)),
        device=device,
    )


class LayerFeatureExtractor:
    """Features of transformer layer ``layer`` (1-based) for lists of audio files."""

    def __init__(
        self,
        model: FeatureModel,
        layer: int,
        max_chunk: int = 1_600_000,
        batch_seconds: Optional[float] = None,
        allow_tf32: bool = False,
    ):
        num_layers = len(model.hubert.encoder.layers)
        if not 1 <= layer <= num_layers:
            raise FleaInputError(
                f"{model.checkpoint_path}: layer {layer} is out of range, the model has "
                f"transformer layers 1..{num_layers}"
            )
        self.model = model
        self.layer = layer
        self.max_chunk = max_chunk
        # TF32 is faster on GPUs but makes an utterance's features depend on its batch.
        self.allow_tf32 = allow_tf32
        if batch_seconds is None:
            batch_seconds = default_batch_seconds(model.device)
        # 0 means one utterance at a time (the official script's way).
        self.max_batch_samples = int(batch_seconds * model.sample_rate)

    def waveform_chunks(self, path: str, expected_samples: Optional[int] = None) -> List[torch.Tensor]:
        """The file's audio as the model expects it, cut into ``max_chunk``-sample pieces
        (each extracted on its own, as in fairseq's dump_hubert_feature.py)."""
        audio = read_mono_audio(path, self.model.sample_rate)
        if expected_samples is not None and abs(expected_samples - len(audio)) > 160:
            logger.warning(f"{path}: manifest says {expected_samples} samples, file has {len(audio)}")
        waveform = torch.from_numpy(audio).to(self.model.device)
        if self.model.normalize:
            waveform = F.layer_norm(waveform, waveform.shape)
        # A last piece shorter than one frame's span has no frame to give (and fairseq's
        # script would crash on it); it is dropped.
        return [piece for piece in waveform.split(self.max_chunk) if len(piece) >= MIN_SAMPLES]

    @torch.no_grad()
    def features(self, waveforms: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Layer features of each waveform, computed in length-sorted batches."""
        results: List[Optional[torch.Tensor]] = [None] * len(waveforms)
        with full_float32_precision(not self.allow_tf32):
            for batch in length_sorted_batches([len(w) for w in waveforms], self.max_batch_samples):
                source, lengths = pad_waveforms([waveforms[i] for i in batch])
                x, padding_mask = hubert_forward(self.model.hubert, source, lengths, self.layer)
                for index, frames in zip(batch, unpad_frames(x, padding_mask)):
                    results[index] = frames
        return results

    def utterance_features(self, paths: Sequence[str], expected_samples: Sequence[Optional[int]]) -> List[np.ndarray]:
        chunks_per_utterance = [self.waveform_chunks(p, n) for p, n in zip(paths, expected_samples)]
        chunk_features = iter(self.features([c for chunks in chunks_per_utterance for c in chunks]))
        return [
            torch.cat([next(chunk_features) for _ in chunks]).float().cpu().numpy()
            for chunks in chunks_per_utterance
        ]


def dump_layer_features(
    tsv_dir: str,
    split: str,
    checkpoint_path: str,
    layer: int,
    nshard: int,
    rank: int,
    feat_dir: str,
    max_chunk: int = 1_600_000,
    batch_seconds: Optional[float] = None,
) -> None:
    """Transformer layer ``layer`` (1-based) of a checkpoint, for one shard of a manifest."""
    if max_chunk < MIN_SAMPLES:
        raise FleaInputError(f"--max-chunk {max_chunk} is shorter than one frame ({MIN_SAMPLES} samples)")

    def load_extractor() -> UtteranceFeatures:
        model = load_feature_model(checkpoint_path)
        return LayerFeatureExtractor(model, layer, max_chunk, batch_seconds).utterance_features

    write_feature_shard(tsv_dir, split, nshard, rank, feat_dir, load_extractor, f"layer {layer} features")
