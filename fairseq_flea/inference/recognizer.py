"""Emotion recognition with a fine-tuned ``ser_attention_classification`` checkpoint
(or its inference conversion): class probabilities, the pooling weight of each 20 ms
frame, each frame's logits (the head is linear after pooling, so the utterance's logits are
exactly the weighted sum of the frames' ``W x_i + b``) and, given a k-means model of one
encoder layer, each frame's pseudo-emotion cluster.

    recognizer = EmotionRecognizer.load("exp/flea/checkpoint_best.pt")
    clusters = recognizer.load_frame_clusters("km100.bin", layer=9)  # optional
    for result in recognizer.iter_recordings(["a.wav", "b.flac"], clusters):
        ...  # RecordingPrediction, or SkippedRecording for a file that could not be read
"""

from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from fairseq_flea.hubert.checkpoints import checkpoint_model_name, load_checkpoint_state
from fairseq_flea.io.batches import length_sorted_batches
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.frames import frame_seconds, samples_for_one_frame
from fairseq_flea.hubert.forward import (
    default_device,
    full_float32_precision,
    hubert_forward,
    pad_waveforms,
)
from fairseq_flea.inference.predictions import (  # noqa: F401  (their home was here)
    FrameClusters,
    PredictsRecordings,
    RecordingPrediction,
    SkippedRecording,
    UtterancePrediction,
)
from fairseq_flea.inference.segments import FrameTiming
from fairseq_flea.models.ser_attention_classification import CLASSIFIER_MODEL
from fairseq_flea.units.kmeans import load_cluster_centers


class EmotionRecognizer(PredictsRecordings):
    """Loads a fine-tuned checkpoint once; predicts class probabilities and frame weights."""

    def __init__(self, model, class_names: List[str], sample_rate: int, normalize: bool, device: torch.device):
        self.model = model.eval().to(device)
        self.class_names = class_names
        self.sample_rate = sample_rate
        self.normalize = normalize
        self.device = device

    @property
    def pooling(self) -> str:
        """'attention' or 'mean': what the frame weights are."""
        return str(getattr(getattr(self.model, "cfg", None), "pooling", "attention"))

    @property
    def frame_timing(self) -> FrameTiming:
        """Seconds between frames and seconds one frame sees, from the encoder's convolutions."""
        layers = str([(0, block[0].kernel_size[0], block[0].stride[0]) for block in self.model.encoder.feature_extractor.conv_layers])
        return FrameTiming(frame_seconds(layers, self.sample_rate), samples_for_one_frame(layers) / self.sample_rate)

    @classmethod
    def load(cls, checkpoint_path: str, device: Optional[torch.device] = None) -> "EmotionRecognizer":
        """A checkpoint's recogniser; an .onnx file's is ``OnnxEmotionRecognizer`` (onnxruntime, CPU)."""
        from fairseq_flea.inference.onnx_recognizer import OnnxEmotionRecognizer, is_onnx_model

        if is_onnx_model(checkpoint_path):
            return OnnxEmotionRecognizer.load(checkpoint_path)
        from fairseq import checkpoint_utils

        state = load_checkpoint_state(checkpoint_path)
        model_name = checkpoint_model_name(state)
        if model_name != CLASSIFIER_MODEL:
            raise FleaInputError(
                f"{checkpoint_path}: not an emotion classifier (its model is {model_name or 'unknown'!r}, "
                f"expected {CLASSIFIER_MODEL!r})"
            )
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint_path], state=state)
        device = device or default_device()
        return cls(models[0], list(task.class_names), int(cfg.task.sample_rate), bool(cfg.task.normalize), device)

    def load_frame_clusters(self, km_path: str, layer: int) -> FrameClusters:
        """A k-means model (joblib, as tools/learn_kmeans.py writes it) learnt on encoder layer
        ``layer`` (1-based) of this model, checked against the encoder's layers and dimension."""
        num_layers = len(self.model.encoder.encoder.layers)
        if not 1 <= layer <= num_layers:
            raise FleaInputError(f"cluster layer {layer} is out of range, the model has transformer layers 1..{num_layers}")
        centers = load_cluster_centers(km_path)
        dim = self.model.encoder.encoder.embedding_dim
        if centers.ndim != 2 or centers.shape[1] != dim:
            raise FleaInputError(
                f"{km_path}: centres have dimension {centers.shape[-1]}, the model's layer features {dim}"
            )
        return FrameClusters(km_path, centers, layer)

    @torch.no_grad()
    def predict_waveforms(
        self,
        waveforms: Sequence[Union[np.ndarray, torch.Tensor]],
        batch_seconds: float = 100.0,
        frame_clusters: Optional[FrameClusters] = None,
    ) -> List[UtterancePrediction]:
        """Predictions for mono waveforms at ``self.sample_rate``, in input order
        (``fairseq_flea.io.audio.conform_audio`` converts other rates and channel counts)."""
        prepared = [self._prepare(waveform) for waveform in waveforms]
        predictions: List[Optional[UtterancePrediction]] = [None] * len(prepared)
        max_batch_samples = int(batch_seconds * self.sample_rate)
        with full_float32_precision():
            for batch in length_sorted_batches([len(w) for w in prepared], max_batch_samples):
                source, lengths = pad_waveforms([prepared[i] for i in batch])
                output, frames = self._forward_with_frames(source, lengths)
                logits = output["logits"].float()
                probabilities = torch.softmax(logits, dim=-1).cpu().numpy()
                # The head on every frame: one matmul more. In eval mode the dropout before it is the identity.
                frame_logits = self.model.classifier(frames).float().cpu().numpy()
                logits = logits.cpu().numpy()
                cluster_ids = (
                    self._cluster_ids(source, lengths, frame_clusters) if frame_clusters is not None else None
                )
                for row, index in enumerate(batch):
                    valid = ~output["padding_mask"][row]
                    predictions[index] = UtterancePrediction(
                        probabilities=probabilities[row],
                        frame_weights=output["frame_weights"][row][valid].float().cpu().numpy(),
                        cluster_ids=None if cluster_ids is None else cluster_ids[row],
                        logits=logits[row],
                        frame_logits=frame_logits[row][valid.cpu().numpy()],
                        duration=len(prepared[index]) / self.sample_rate,
                    )
        return predictions

    def _forward_with_frames(self, source: torch.Tensor, lengths: torch.Tensor):
        """The model's own forward, and the frames its pooling received (a hook, so that the
        frame view is of exactly the forward that gave the logits)."""
        captured = {}

        def keep_frames(module, inputs, _output) -> None:
            captured["frames"] = inputs[0]

        handle = self.model.pooling.register_forward_hook(keep_frames)
        try:
            output = self.model(source=source, lengths=lengths)
        finally:
            handle.remove()
        return output, captured["frames"]

    def _cluster_ids(self, source: torch.Tensor, lengths: torch.Tensor, clusters: FrameClusters) -> List[np.ndarray]:
        # A second, shorter pass (the encoder stops at the layer): the classifier's forward
        # keeps only the last layer, and the padding-safe forward makes both see the same frames.
        features, padding_mask = hubert_forward(self.model.encoder, source, lengths, output_layer=clusters.layer)
        return [clusters.assign(row[~mask].float().cpu().numpy()) for row, mask in zip(features, padding_mask)]

    def _prepare(self, waveform: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        waveform = torch.as_tensor(waveform, dtype=torch.float32).to(self.device)
        return F.layer_norm(waveform, waveform.shape) if self.normalize else waveform
