"""What a recogniser hands back (torch-free, so that the ONNX path shares them): an utterance's
prediction, a recording's, a skipped recording, and k-means centres of one encoder layer; and
how a recogniser goes from files to those (``PredictsRecordings``), shared by both kinds."""

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from fairseq_flea.io.audio import read_audio_for_model, read_mono_audio
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.units.kmeans import assign_clusters

# Recordings read, predicted and handed back together: bounds memory for long file lists.
RECORDINGS_PER_WINDOW = 64


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


class PredictsRecordings:
    """Files to predictions for a recogniser that has ``class_names``, ``sample_rate`` and
    ``predict_waveforms(waveforms, batch_seconds, frame_clusters)``."""

    class_names: List[str]
    sample_rate: int

    def predict_files(self, paths: Sequence[str], batch_seconds: float = 100.0) -> List[UtterancePrediction]:
        """Predictions for mono files at the model's sample rate (evaluation data: anything
        else is an error, so a corpus is never converted silently)."""
        return self.predict_waveforms([read_mono_audio(p, self.sample_rate) for p in paths], batch_seconds)

    def iter_recordings(
        self,
        paths: Sequence[str],
        frame_clusters: Optional[FrameClusters] = None,
        batch_seconds: float = 100.0,
    ) -> Iterator[Union[RecordingPrediction, SkippedRecording]]:
        """A result per path, in input order: any audio file soundfile reads is downmixed and
        resampled to the model's rate (``notes`` says so); a file that cannot be used
        (missing, not audio, shorter than one frame) is a ``SkippedRecording``."""
        for start in range(0, len(paths), RECORDINGS_PER_WINDOW):
            window = paths[start : start + RECORDINGS_PER_WINDOW]
            results: List[Union[RecordingPrediction, SkippedRecording, None]] = []
            readable, waveforms, notes = [], [], []
            for path in window:
                try:
                    waveform, conversion_notes = read_audio_for_model(path, self.sample_rate)
                except FleaInputError as error:
                    results.append(SkippedRecording(path, str(error)))
                    continue
                readable.append(len(results))
                results.append(None)
                waveforms.append(waveform)
                notes.append(conversion_notes)
            predictions = self.predict_waveforms(waveforms, batch_seconds, frame_clusters) if waveforms else []
            for position, prediction, conversion_notes in zip(readable, predictions, notes):
                results[position] = RecordingPrediction(
                    path=window[position],
                    class_names=self.class_names,
                    probabilities=prediction.probabilities,
                    frame_weights=prediction.frame_weights,
                    cluster_ids=prediction.cluster_ids,
                    notes=conversion_notes,
                    logits=prediction.logits,
                    frame_logits=prediction.frame_logits,
                    duration=prediction.duration,
                )
            yield from results

    def predict_recordings(
        self,
        paths: Sequence[str],
        frame_clusters: Optional[FrameClusters] = None,
        batch_seconds: float = 100.0,
    ) -> List[Union[RecordingPrediction, SkippedRecording]]:
        return list(self.iter_recordings(paths, frame_clusters, batch_seconds))

    def predict_recording(self, path: str, frame_clusters: Optional[FrameClusters] = None) -> RecordingPrediction:
        """One file's prediction; a file that cannot be used raises FleaInputError."""
        (result,) = self.predict_recordings([path], frame_clusters)
        if isinstance(result, SkippedRecording):
            raise FleaInputError(result.reason)
        return result
