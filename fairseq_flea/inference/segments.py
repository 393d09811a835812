"""Emotion segments from per-frame logits: where in a recording each emotion is.

The classifier is linear after pooling, so each frame has exact logits ``W x_i + b`` whose
pooling-weighted sum is the utterance's logits. Segments come from them:

1. a median filter over time on each class's frame logits (``median_frames``, odd; 1: off),
2. the per-frame argmax, merged into runs of one class,
3. runs shorter than ``min_segment_seconds`` absorbed by a neighbour (shortest first; of two
   neighbours the one whose class the run's frames score higher), and optionally
4. ``single_span``: at most one non-neutral span per recording, as the ZED benchmark assumes
   (the span and class maximising the summed logit margin over neutral, on the filtered logits).

Frame ``i`` of HuBERT sees samples ``[i*hop, i*hop + receptive_field)``; it owns the time from
the midpoint of its overlap with frame ``i-1`` to the midpoint of its overlap with ``i+1``,
the first frame from 0 and the last to the end of the file, so the segments tile the whole
recording (the last < 20 ms that no frame sees complete go to the last frame).
"""

import argparse
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.ndimage import median_filter

from fairseq_flea.io.errors import FleaInputError

# Defaults chosen on the demo corpus's validation speaker (docs/frame_level.md): a median over
# 5 frames (0.1 s), segments of at least 0.3 s.
DEFAULT_MEDIAN_FRAMES = 5
DEFAULT_MIN_SEGMENT_SECONDS = 0.3


@dataclass(frozen=True)
class Segment:
    emo: str
    start: float
    end: float

    def as_dict(self) -> Dict[str, object]:
        return {"emo": self.emo, "start": round(self.start, 6), "end": round(self.end, 6)}


@dataclass(frozen=True)
class SegmentOptions:
    median_frames: int = DEFAULT_MEDIAN_FRAMES
    min_segment_seconds: float = DEFAULT_MIN_SEGMENT_SECONDS
    single_span: bool = False

    def check(self) -> None:
        if self.median_frames < 1 or self.median_frames % 2 == 0:
            raise FleaInputError(f"the median filter needs an odd number of frames (1: none), got {self.median_frames}")
        if self.min_segment_seconds < 0:
            raise FleaInputError(f"the minimum segment length cannot be negative, got {self.min_segment_seconds} s")

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class FrameTiming:
    """Seconds between frames and seconds one frame sees (HuBERT base: 0.02 and 0.025)."""

    step: float
    receptive_field: float

    def edges(self, num_frames: int, duration: float) -> np.ndarray:
        """``num_frames + 1`` times: frame ``i`` owns ``[edges[i], edges[i+1])``; 0 and ``duration`` at the ends."""
        edges = np.arange(num_frames + 1, dtype=np.float64) * self.step + (self.receptive_field - self.step) / 2
        edges[0] = 0.0
        edges[-1] = max(duration, float(edges[-2]))
        return edges


def runs(labels: np.ndarray) -> List[List[int]]:
    """``[label, first, stop)`` of each run of equal labels."""
    if len(labels) == 0:
        return []
    starts = np.flatnonzero(np.diff(labels, prepend=labels[0] - 1) != 0)
    stops = np.append(starts[1:], len(labels))
    return [[int(labels[a]), int(a), int(b)] for a, b in zip(starts, stops)]


def absorb_short_runs(labels: np.ndarray, scores: np.ndarray, min_frames: int) -> np.ndarray:
    """Relabel runs shorter than ``min_frames``, shortest (then earliest) first, with the class
    of the neighbour whose class ``scores`` (T x C) favours over the run; until none is left
    or one run covers everything."""
    labels = labels.copy()
    while True:
        current = runs(labels)
        short = [r for r in current if r[2] - r[1] < min_frames]
        if not short or len(current) == 1:
            return labels
        label, first, stop = min(short, key=lambda r: (r[2] - r[1], r[1]))
        index = current.index([label, first, stop])
        neighbours = [current[i][0] for i in (index - 1, index + 1) if 0 <= i < len(current)]
        totals = scores[first:stop].sum(axis=0)
        labels[first:stop] = max(neighbours, key=lambda k: (totals[k], -neighbours.index(k)))


def best_single_span(scores: np.ndarray, neutral: int) -> np.ndarray:
    """Per-frame labels with at most one non-neutral span: the class and contiguous span with
    the largest sum of ``score[class] - score[neutral]`` (neutral everywhere when none is positive)."""
    labels = np.full(len(scores), neutral, dtype=np.int64)
    best = (0.0, None, 0, 0)
    for emotion in range(scores.shape[1]):
        if emotion == neutral:
            continue
        margin = scores[:, emotion] - scores[:, neutral]
        running, first = 0.0, 0
        for i, value in enumerate(margin):  # Kadane's maximum-sum subarray
            if running <= 0:
                running, first = 0.0, i
            running += float(value)
            if running > best[0]:
                best = (running, emotion, first, i + 1)
    _, emotion, first, stop = best
    if emotion is not None:
        labels[first:stop] = emotion
    return labels


def frame_labels(frame_logits: np.ndarray, options: SegmentOptions, step: float, neutral: Optional[int]) -> np.ndarray:
    """Each frame's class after the median filter, the optional single span and the minimum length."""
    scores = np.asarray(frame_logits, dtype=np.float64)
    if options.median_frames > 1 and len(scores) > 1:
        scores = median_filter(scores, size=(options.median_frames, 1), mode="nearest")
    if options.single_span:
        if neutral is None:
            raise ValueError("single_span needs the neutral class")
        labels = best_single_span(scores, neutral)
    else:
        labels = scores.argmax(axis=1)
    min_frames = int(round(options.min_segment_seconds / step))
    return absorb_short_runs(labels, scores, min_frames) if min_frames > 1 else labels


def labels_to_segments(labels: np.ndarray, edges: np.ndarray, class_names: Sequence[str]) -> List[Segment]:
    """Runs of ``labels`` as segments over ``edges`` (``len(labels) + 1`` times): they tile
    ``[edges[0], edges[-1]]``."""
    return [Segment(class_names[label], float(edges[first]), float(edges[stop])) for label, first, stop in runs(labels)]


def emotion_segments(
    frame_logits: np.ndarray,
    duration: float,
    class_names: Sequence[str],
    timing: FrameTiming,
    options: SegmentOptions = SegmentOptions(),
    neutral: Optional[int] = None,
) -> List[Segment]:
    """The segments of one recording of ``duration`` seconds: consecutive, from 0 to ``duration``."""
    labels = frame_labels(frame_logits, options, timing.step, neutral)
    return labels_to_segments(labels, timing.edges(len(labels), duration), class_names)


def format_segments(segments: Sequence[Segment]) -> str:
    """``neu 0.00-0.52; ang 0.52-1.84``: the CSV and table form."""
    return "; ".join(f"{s.emo} {s.start:.2f}-{s.end:.2f}" for s in segments)


def neutral_class(class_names: Sequence[str], neutral_label: Optional[str] = None) -> int:
    """The index of ``neutral_label``, or of the one class whose name starts with 'neu'."""
    if neutral_label is not None:
        if neutral_label not in class_names:
            raise FleaInputError(f"neutral label {neutral_label!r} is not a class of the model ({', '.join(class_names)})")
        return list(class_names).index(neutral_label)
    candidates = [i for i, name in enumerate(class_names) if name.lower().startswith("neu")]
    if len(candidates) != 1:
        raise FleaInputError(
            f"{'no' if not candidates else 'more than one'} class name starts with 'neu' "
            f"({', '.join(class_names)}): say which is neutral with --neutral-label"
        )
    return candidates[0]


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    """The segment options of tools/predict.py and tools/evaluate.py, with the same names."""
    parser.add_argument("--median-frames", type=int, default=DEFAULT_MEDIAN_FRAMES,
                        help=f"median filter over time on the frame logits, odd frames (1: none; default {DEFAULT_MEDIAN_FRAMES})")
    parser.add_argument("--min-segment", type=float, default=DEFAULT_MIN_SEGMENT_SECONDS, metavar="SECONDS",
                        help=f"shorter segments join a neighbour (default {DEFAULT_MIN_SEGMENT_SECONDS})")
    parser.add_argument("--single-span", action="store_true",
                        help="at most one non-neutral segment per file, as the ZED benchmark assumes")
    parser.add_argument("--neutral-label", help="the neutral class (default: the class whose name starts with 'neu')")


def segment_options(args: argparse.Namespace) -> SegmentOptions:
    options = SegmentOptions(args.median_frames, args.min_segment, args.single_span)
    options.check()
    return options
