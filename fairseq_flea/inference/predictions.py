"""What a recogniser hands back (torch-free, so that the ONNX path shares them): an utterance's
prediction, a recording's, a skipped recording, and k-means centres of one encoder layer."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from fairseq_flea.units.kmeans import assign_clusters


@dataclass
class UtterancePrediction:
    probabilities: np.ndarray  # one per class, in EmotionRecognizer.class_names order
    frame_weights: np.ndarray  # pooling weight of each 20 ms frame (attention, or 1/N for mean)
    cluster_ids: Optional[np.ndarray] = None  # pseudo-emotion cluster of each frame, if asked for
    logits: Optional[np.ndarray] = None  # the utterance's logits (C): sum_i frame_weights[i] * frame_logits[i]
    frame_logits: Optional[np.ndarray] = None  # T x C: the classifier on each frame, W x_i + b
    duration: float = 0.0  # seconds of audio the model saw

    def predicted_index(self) -> int:
        return int(np.argmax(self.probabilities))


@dataclass
class FrameClusters:
    """k-means centres of one encoder layer's features (``layer`` 1-based, as in dump_feature.py)."""

    km_path: str
    centers: np.ndarray
    layer: int

    def assign(self, features: np.ndarray) -> np.ndarray:
        return assign_clusters(features, self.centers)


@dataclass
class RecordingPrediction:
    path: str
    class_names: List[str]
    probabilities: np.ndarray
    frame_weights: np.ndarray
    cluster_ids: Optional[np.ndarray]
    notes: List[str] = field(default_factory=list)  # how the audio was converted for the model
    logits: Optional[np.ndarray] = None
    frame_logits: Optional[np.ndarray] = None
    duration: float = 0.0

    @property
    def predicted_class(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    def probability_by_class(self) -> Dict[str, float]:
        return {name: float(p) for name, p in zip(self.class_names, self.probabilities)}


@dataclass
class SkippedRecording:
    path: str
    reason: str  # the one-line error, which names the file
