"""Emotion recognition with a classifier exported by ``tools/export_model.py onnx``, on
onnxruntime and numpy alone (no torch, no fairseq): the same predictions, frame weights and
frame logits as ``EmotionRecognizer`` on the checkpoint, the same ``iter_recordings``.

    recognizer = load_recognizer("model.onnx")  # or a checkpoint: EmotionRecognizer
    for result in recognizer.iter_recordings(["a.wav", "b.flac"]):
        ...
"""

import json
import os
from typing import List, Optional, Sequence

import numpy as np

from fairseq_flea.inference.predictions import (
    FrameClusters,
    PredictsRecordings,
    UtterancePrediction,
)
from fairseq_flea.inference.segments import FrameTiming
from fairseq_flea.io.batches import length_sorted_batches
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.frames import conv_output_length, frame_seconds, parse_conv_layers, samples_for_one_frame

# What tools/export_model.py onnx writes into the model's metadata: the mark of our graphs.
ONNX_METADATA_FORMAT = "fairseq-flea-classifier/1"
ONNX_INPUTS = ["waveform", "lengths"]
ONNX_OUTPUTS = ["logits", "frame_weights", "frame_logits"]


def is_onnx_model(path: str) -> bool:
    return path.lower().endswith(".onnx")


def load_recognizer(path: str):
    """An ``OnnxEmotionRecognizer`` for an .onnx file (torch never imported), else the
    checkpoint's ``EmotionRecognizer``."""
    if is_onnx_model(path):
        return OnnxEmotionRecognizer.load(path)
    from fairseq_flea.inference.recognizer import EmotionRecognizer

    return EmotionRecognizer.load(path)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


class OnnxEmotionRecognizer(PredictsRecordings):
    """An exported classifier on onnxruntime; the interface of ``EmotionRecognizer``."""

    def __init__(self, session, path: str, class_names: List[str], sample_rate: int, normalize: bool, pooling: str,
                 conv_layers: str):
        self.session = session
        self.path = path
        self.class_names = class_names
        self.sample_rate = sample_rate
        self.normalize = normalize  # applied inside the graph
        self.pooling = pooling
        self.conv_layers = parse_conv_layers(conv_layers)
        self._conv_layers_text = conv_layers

    @property
    def frame_timing(self) -> FrameTiming:
        return FrameTiming(frame_seconds(self._conv_layers_text, self.sample_rate),
                           samples_for_one_frame(self._conv_layers_text) / self.sample_rate)

    @classmethod
    def load(cls, path: str) -> "OnnxEmotionRecognizer":
        if not os.path.isfile(path):
            raise FleaInputError(f"{path}: model not found")
        try:
            import onnxruntime
        except ImportError:
            raise FleaInputError(f"{path}: running an .onnx model needs onnxruntime (pip install onnxruntime)") from None
        try:
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for each way a file is foreign
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FleaInputError(f"{path}: not a readable ONNX model ({first_line[:200]})") from None
        meta = session.get_modelmeta().custom_metadata_map
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if meta.get("flea.format") != ONNX_METADATA_FORMAT or inputs != ONNX_INPUTS or outputs != ONNX_OUTPUTS:
            raise FleaInputError(f"{path}: not a FLEA classifier exported by tools/export_model.py onnx "
                                 f"(no {ONNX_METADATA_FORMAT!r} metadata, or other inputs/outputs)")
        return cls(session, path, json.loads(meta["flea.class_names"]), int(meta["flea.sample_rate"]),
                   json.loads(meta["flea.normalize"]), meta["flea.pooling"], meta["flea.conv_feature_layers"])

    def load_frame_clusters(self, km_path: str, layer: int) -> FrameClusters:
        raise FleaInputError(f"{self.path}: the ONNX graph gives the last layer's outputs only; "
                             f"per-frame clusters (--clusters) need the fairseq checkpoint")

    def frames_of(self, samples: int) -> int:
        for _, kernel, stride in self.conv_layers:
            samples = conv_output_length(samples, kernel, stride)
        return samples

    def predict_waveforms(
        self,
        waveforms: Sequence[np.ndarray],
        batch_seconds: float = 100.0,
        frame_clusters: Optional[FrameClusters] = None,
    ) -> List[UtterancePrediction]:
        if frame_clusters is not None:
            self.load_frame_clusters(frame_clusters.km_path, frame_clusters.layer)
        prepared = [np.asarray(w, dtype=np.float32) for w in waveforms]
        predictions: List[Optional[UtterancePrediction]] = [None] * len(prepared)
        for batch in length_sorted_batches([len(w) for w in prepared], int(batch_seconds * self.sample_rate)):
            lengths = np.array([len(prepared[i]) for i in batch], dtype=np.int64)
            source = np.zeros((len(batch), int(lengths.max())), dtype=np.float32)
            for row, index in enumerate(batch):
                source[row, : lengths[row]] = prepared[index]
            logits, weights, frame_logits = self.session.run(ONNX_OUTPUTS, {"waveform": source, "lengths": lengths})
            probabilities = softmax(logits)
            for row, index in enumerate(batch):
                frames = self.frames_of(int(lengths[row]))
                predictions[index] = UtterancePrediction(
                    probabilities=probabilities[row],
                    frame_weights=weights[row, :frames].astype(np.float32),
                    logits=logits[row].astype(np.float32),
                    frame_logits=frame_logits[row, :frames].astype(np.float32),
                    duration=len(prepared[index]) / self.sample_rate,
                )
        return predictions
