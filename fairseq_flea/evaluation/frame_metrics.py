"""Frame-level scores against reference emotion spans (ZED-style, ``fairseq_flea.io.spans``).

- EDER, emotion diarization error rate, as SpeechBrain's ``speechbrain/utils/EDER.py``
  defines it: per utterance the reference is its emotional events with neutral everywhere
  else, and ``EDER = 1 - (time where prediction and reference agree) / duration``; the
  corpus figure is the mean over utterances. Computed here on continuous segments (no
  frame grid), so it equals SpeechBrain's function on the same segments.
- frame accuracy: the share of frames whose per-frame argmax (no smoothing) is the
  reference label at the frame's centre, averaged over utterances like EDER.
- attention in span: the share of pooling weight that falls inside the reference's
  emotional (non-neutral) events, beside the share uniform weights 1/T would put there
  (about span length / duration): above it, the weights find the emotional frames. Only
  utterances whose emotional events cover part of the file count (elsewhere both are 0 or 1).
"""

from dataclasses import dataclass
from statistics import mean
from typing import Dict, List, Optional, Sequence

import numpy as np

from fairseq_flea.inference.segments import Segment
from fairseq_flea.io.spans import SpanEntry, event_class

# An utterance's events must leave at least this much of it outside to count for attention in span.
PARTIAL_MARGIN_SECONDS = 0.02


def reference_segments(entry: SpanEntry, class_names: Sequence[str], neutral: str, source: str) -> List[Segment]:
    """The reference of one utterance tiled over its duration: its events, neutral between them."""
    segments, time = [], 0.0
    for event in entry.events:
        if event.start > time:
            segments.append(Segment(neutral, time, event.start))
        segments.append(Segment(event_class(event.emo, class_names, entry.utt_id, source), event.start, event.end))
        time = event.end
    if time < entry.duration:
        segments.append(Segment(neutral, time, entry.duration))
    return segments


def overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def emotion_diarization_error(predicted: Sequence[Segment], reference: Sequence[Segment], duration: float) -> float:
    """``1 - (time where the labels agree) / duration`` (SpeechBrain's EDER of one utterance)."""
    agree = sum(overlap(p.start, p.end, r.start, r.end) for p in predicted for r in reference if p.emo == r.emo)
    return 1.0 - agree / duration


def labels_at(times: np.ndarray, segments: Sequence[Segment]) -> List[str]:
    """The label of ``segments`` (consecutive, tiling) at each time."""
    ends = np.array([s.end for s in segments])
    index = np.minimum(np.searchsorted(ends, times, side="right"), len(segments) - 1)
    return [segments[i].emo for i in index]


def frame_accuracy(frame_labels: Sequence[str], frame_centres: np.ndarray, reference: Sequence[Segment]) -> float:
    """The share of frames whose label is the reference's at the frame's centre."""
    truth = labels_at(frame_centres, reference)
    return float(np.mean([a == b for a, b in zip(frame_labels, truth)]))


def weight_in_spans(weights: np.ndarray, edges: np.ndarray, spans: Sequence[Segment]) -> float:
    """Pooling weight inside ``spans``: each frame's weight in proportion to the part of the
    time it owns (``edges[i]`` to ``edges[i+1]``) that lies inside."""
    lengths = np.diff(edges)
    inside = np.zeros(len(weights))
    for span in spans:
        inside += np.clip(np.minimum(edges[1:], span.end) - np.maximum(edges[:-1], span.start), 0.0, None)
    return float(np.sum(weights * inside / np.where(lengths > 0, lengths, 1.0)))


@dataclass
class UtteranceFrameScores:
    utt_id: str
    eder: float
    frame_accuracy: float
    attention_in_span: Optional[float]  # None: the events cover none or all of the utterance
    uniform_in_span: Optional[float]


def score_utterance(
    entry: SpanEntry,
    predicted: Sequence[Segment],
    frame_labels: Sequence[str],
    frame_weights: np.ndarray,
    edges: np.ndarray,
    frame_centres: np.ndarray,
    class_names: Sequence[str],
    neutral: str,
    source: str,
) -> UtteranceFrameScores:
    """The frame-level scores of one utterance, ``entry`` on its real duration."""
    reference = reference_segments(entry, class_names, neutral, source)
    emotional = [segment for segment in reference if segment.emo != neutral]
    emotional_time = sum(s.end - s.start for s in emotional)
    partial = emotional and emotional_time < entry.duration - PARTIAL_MARGIN_SECONDS
    uniform = np.full(len(frame_weights), 1.0 / len(frame_weights))
    return UtteranceFrameScores(
        entry.utt_id,
        emotion_diarization_error(predicted, reference, entry.duration),
        frame_accuracy(frame_labels, frame_centres, reference),
        weight_in_spans(frame_weights, edges, emotional) if partial else None,
        weight_in_spans(uniform, edges, emotional) if partial else None,
    )


def summarise_frame_scores(scores: Sequence[UtteranceFrameScores]) -> Dict[str, object]:
    """The corpus figures: means over utterances (attention in span over the partial ones)."""
    partial = [s for s in scores if s.attention_in_span is not None]
    return {
        "eder": mean(s.eder for s in scores),
        "frame_accuracy": mean(s.frame_accuracy for s in scores),
        "attention_in_span": mean(s.attention_in_span for s in partial) if partial else None,
        "uniform_in_span": mean(s.uniform_in_span for s in partial) if partial else None,
        # Mean pooling's weights are uniform: rounding must not count as winning.
        "attention_above_uniform": sum(s.attention_in_span > s.uniform_in_span + 1e-9 for s in partial) if partial else None,
        "span_utterances": len(scores),
        "partial_span_utterances": len(partial),
    }
