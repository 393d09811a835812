"""What tools/predict.py writes: a table, JSON, CSV and per-file attention plots, each
with the recording's emotion segments (``fairseq_flea.inference.segments``).
The recogniser is an ``EmotionRecognizer`` or, for an .onnx model, an ``OnnxEmotionRecognizer``."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import tqdm

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.audio import read_audio_for_model
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.inference.onnx_recognizer import load_recognizer
from fairseq_flea.inference.predictions import FrameClusters, RecordingPrediction, SkippedRecording
from fairseq_flea.inference.segments import Segment, SegmentOptions, emotion_segments, format_segments, neutral_class
from fairseq_flea.io.plots import plot_attention_over_time
from fairseq_flea.io.spans import SpanEntry, event_class, match_spans, read_spans

if TYPE_CHECKING:
    from fairseq_flea.inference.recognizer import EmotionRecognizer

STDOUT = "-"


@dataclass
class PredictionOutputs:
    json_path: Optional[str] = None  # "-" for stdout
    csv_path: Optional[str] = None  # "-" for stdout
    plot_dir: Optional[str] = None
    segments: SegmentOptions = field(default_factory=SegmentOptions)
    neutral_label: Optional[str] = None  # default: the class whose name starts with "neu"
    spans_path: Optional[str] = None  # ZED-style reference spans, shaded in the plots

    def check(self) -> None:
        if self.json_path == STDOUT and self.csv_path == STDOUT:
            raise FleaInputError("--json - and --csv - both ask for stdout; write one of them to a file")

        self.segments.check()

    @property
    def table_on_stdout(self) -> bool:
        return STDOUT not in (self.json_path, self.csv_path)


def recording_segments(
    recognizer: EmotionRecognizer, prediction: RecordingPrediction, options: SegmentOptions, neutral: Optional[int]
) -> List[Segment]:
    """The emotion segments of one prediction: they tile its whole duration."""
    return emotion_segments(
        prediction.frame_logits, prediction.duration, recognizer.class_names, recognizer.frame_timing, options, neutral
    )


def prediction_table(
    predictions: Sequence[RecordingPrediction], class_names: List[str], segments: Sequence[Sequence[Segment]]
) -> str:
    header = ["file", "predicted", *class_names, "segments", "notes"]
    rows = [
        [p.path, p.predicted_class, *(f"{x:.4f}" for x in p.probabilities), format_segments(s), "; ".join(p.notes)]
        for p, s in zip(predictions, segments)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def predictions_csv(
    predictions: Sequence[RecordingPrediction], class_names: List[str], segments: Sequence[Sequence[Segment]]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "predicted_class", *(f"p_{name}" for name in class_names), "notes", "segments"])
    for p, s in zip(predictions, segments):
        writer.writerow([p.path, p.predicted_class, *(repr(float(x)) for x in p.probabilities), "; ".join(p.notes),
                         format_segments(s)])
    return buffer.getvalue()


def predictions_json(
    predictions: Sequence[RecordingPrediction],
    skipped: Sequence[SkippedRecording],
    recognizer: EmotionRecognizer,
    checkpoint_path: str,
    frame_clusters: Optional[FrameClusters],
    segments: Sequence[Sequence[Segment]],
    options: SegmentOptions,
) -> str:
    timing = recognizer.frame_timing
    document = {
        "checkpoint": checkpoint_path,
        "class_names": recognizer.class_names,
        "sample_rate": recognizer.sample_rate,
        # Frame i starts i * frame_seconds into the file and sees receptive_field_seconds of it.
        "frame_seconds": timing.step,
        "receptive_field_seconds": timing.receptive_field,
        "frame_weights": recognizer.pooling,
        "segment_options": options.as_dict(),
        "clusters": None if frame_clusters is None else {"km_path": frame_clusters.km_path, "layer": frame_clusters.layer},
        "predictions": [
            {
                "file": p.path,
                "duration": p.duration,
                "predicted_class": p.predicted_class,
                "probabilities": p.probability_by_class(),
                "notes": p.notes,
                # logits = sum_i frame_weights[i] * frame_logits[i] (class_names order; exact up to rounding)
                "logits": p.logits.tolist(),
                "frame_logits": p.frame_logits.tolist(),
                "frame_weights": p.frame_weights.tolist(),
                "segments": [segment.as_dict() for segment in recording],
                **({} if p.cluster_ids is None else {"cluster_ids": p.cluster_ids.tolist()}),
            }
            for p, recording in zip(predictions, segments)
        ],
        "skipped": [{"file": s.path, "reason": s.reason} for s in skipped],
    }
    return json.dumps(document, indent=1) + "\n"


def plot_file_name(index: int, path: str, count: int) -> str:
    """``{index}_{stem}.png``: the input's position keeps equal names from different folders apart."""
    stem = os.path.splitext(os.path.basename(path))[0] or "audio"
    return f"{index:0{len(str(count))}d}_{stem}.png"


def plot_recording(
    recognizer: EmotionRecognizer,
    prediction: RecordingPrediction,
    png_path: str,
    segments: Optional[Sequence[Segment]] = None,
    reference: Optional[SpanEntry] = None,
    title: Optional[str] = None,
) -> None:
    """Waveform, frame weights, predicted segments and (given) the reference spans, shaded."""
    waveform, _ = read_audio_for_model(prediction.path, recognizer.sample_rate)
    plot_attention_over_time(
        png_path,
        waveform,
        recognizer.sample_rate,
        prediction.frame_weights,
        recognizer.frame_timing.step,
        prediction.probability_by_class(),
        title=title or prediction.path + (f"  ({'; '.join(prediction.notes)})" if prediction.notes else ""),
        weight_label="attention weight" if recognizer.pooling == "attention" else f"frame weight ({recognizer.pooling} pooling)",
        cluster_ids=prediction.cluster_ids,
        segments=None if segments is None else [(s.emo, s.start, s.end) for s in segments],
        reference_spans=None if reference is None else [
            (reference_label(e.emo, recognizer.class_names), e.start, e.end) for e in reference.events],
        class_names=recognizer.class_names,
    )


def reference_label(name: str, class_names: Sequence[str]) -> str:
    """The model's class an event label means, or the label itself when it means none (a plot
    may show what the model cannot say)."""
    try:
        return event_class(name, class_names, "", "")
    except FleaInputError:
        return name


def reference_spans_for(
    spans_path: Optional[str], predictions: Sequence[RecordingPrediction]
) -> Dict[int, SpanEntry]:
    """Position in ``predictions`` -> its entry of the spans file (files without one: none)."""
    if spans_path is None:
        return {}
    return match_spans(read_spans(spans_path), [p.path for p in predictions], [p.duration for p in predictions],
                       spans_path, every_entry=False)


def predict_to_outputs(
    checkpoint_path: str,
    paths: Sequence[str],
    outputs: PredictionOutputs,
    km_path: Optional[str] = None,
    cluster_layer: Optional[int] = None,
    batch_seconds: float = 100.0,
) -> int:
    """Predict every file and write the requested outputs; a file that cannot be used is
    reported on stderr (``skipped FILE: reason``). Returns how many files were predicted;
    none at all is an error."""
    outputs.check()
    if (km_path is None) != (cluster_layer is None):
        raise FleaInputError("--clusters and --cluster-layer go together")
    if outputs.spans_path is not None:
        read_spans(outputs.spans_path)  # a bad spans file fails before the model loads
    recognizer = load_recognizer(checkpoint_path)  # an .onnx model runs without torch
    neutral = (
        neutral_class(recognizer.class_names, outputs.neutral_label)
        if outputs.segments.single_span or outputs.neutral_label is not None else None
    )
    frame_clusters = recognizer.load_frame_clusters(km_path, cluster_layer) if km_path is not None else None
    predictions: List[RecordingPrediction] = []
    segments: List[List[Segment]] = []
    plot_names: List[str] = []
    skipped: List[SkippedRecording] = []
    results = recognizer.iter_recordings(paths, frame_clusters, batch_seconds)
    # The bar only shows on a terminal; redirected stderr keeps just the skipped lines.
    for index, result in enumerate(tqdm.tqdm(results, total=len(paths), unit="file", disable=None), start=1):
        if isinstance(result, SkippedRecording):
            skipped.append(result)
            tqdm.tqdm.write(f"skipped {result.reason}", file=sys.stderr)
            continue
        predictions.append(result)
        segments.append(recording_segments(recognizer, result, outputs.segments, neutral))
        plot_names.append(plot_file_name(index, result.path, len(paths)))
    if not predictions:
        raise FleaInputError(f"none of the {len(paths)} files could be used")

    if outputs.plot_dir is not None:
        references = reference_spans_for(outputs.spans_path, predictions)
        for position, (prediction, recording, name) in enumerate(zip(predictions, segments, plot_names)):
            plot_recording(recognizer, prediction, os.path.join(outputs.plot_dir, name), recording, references.get(position))
    if outputs.json_path is not None:
        text = predictions_json(predictions, skipped, recognizer, checkpoint_path, frame_clusters, segments, outputs.segments)
        write_output(outputs.json_path, text)
    if outputs.csv_path is not None:
        write_output(outputs.csv_path, predictions_csv(predictions, recognizer.class_names, segments))
    if outputs.table_on_stdout:
        sys.stdout.write(prediction_table(predictions, recognizer.class_names, segments))
    return len(predictions)


def write_output(path: str, text: str) -> None:
    if path == STDOUT:
        sys.stdout.write(text)
    else:
        write_text_atomically(path, text)
