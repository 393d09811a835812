"""What tools/predict.py writes: a table, JSON, CSV and per-file attention plots."""

import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

import tqdm

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.audio import read_audio_for_model
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.inference.recognizer import (
    EmotionRecognizer,
    FrameClusters,
    RecordingPrediction,
    SkippedRecording,
)
from fairseq_flea.io.frames import FRAME_SECONDS
from fairseq_flea.io.plots import plot_attention_over_time

STDOUT = "-"


@dataclass
class PredictionOutputs:
    json_path: Optional[str] = None  # "-" for stdout
    csv_path: Optional[str] = None  # "-" for stdout
    plot_dir: Optional[str] = None

    def check(self) -> None:
        if self.json_path == STDOUT and self.csv_path == STDOUT:
            raise FleaInputError("--json - and --csv - both ask for stdout; write one of them to a file")

    @property
    def table_on_stdout(self) -> bool:
        return STDOUT not in (self.json_path, self.csv_path)


def prediction_table(predictions: Sequence[RecordingPrediction], class_names: List[str]) -> str:
    header = ["file", "predicted", *class_names, "notes"]
    rows = [
        [p.path, p.predicted_class, *(f"{x:.4f}" for x in p.probabilities), "; ".join(p.notes)]
        for p in predictions
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def predictions_csv(predictions: Sequence[RecordingPrediction], class_names: List[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "predicted_class", *(f"p_{name}" for name in class_names), "notes"])
    for p in predictions:
        writer.writerow([p.path, p.predicted_class, *(repr(float(x)) for x in p.probabilities), "; ".join(p.notes)])
    return buffer.getvalue()


def predictions_json(
    predictions: Sequence[RecordingPrediction],
    skipped: Sequence[SkippedRecording],
    recognizer: EmotionRecognizer,
    checkpoint_path: str,
    frame_clusters: Optional[FrameClusters],
) -> str:
    document = {
        "checkpoint": checkpoint_path,
        "class_names": recognizer.class_names,
        "sample_rate": recognizer.sample_rate,
        "frame_seconds": FRAME_SECONDS,
        "frame_weights": recognizer.pooling,
        "clusters": None if frame_clusters is None else {"km_path": frame_clusters.km_path, "layer": frame_clusters.layer},
        "predictions": [
            {
                "file": p.path,
                "predicted_class": p.predicted_class,
                "probabilities": p.probability_by_class(),
                "notes": p.notes,
                "frame_weights": p.frame_weights.tolist(),
                **({} if p.cluster_ids is None else {"cluster_ids": p.cluster_ids.tolist()}),
            }
            for p in predictions
        ],
        "skipped": [{"file": s.path, "reason": s.reason} for s in skipped],
    }
    return json.dumps(document, indent=1) + "\n"


def plot_file_name(index: int, path: str, count: int) -> str:
    """``{index}_{stem}.png``: the input's position keeps equal names from different folders apart."""
    stem = os.path.splitext(os.path.basename(path))[0] or "audio"
    return f"{index:0{len(str(count))}d}_{stem}.png"


def plot_recording(recognizer: EmotionRecognizer, prediction: RecordingPrediction, png_path: str) -> None:
    waveform, _ = read_audio_for_model(prediction.path, recognizer.sample_rate)
    plot_attention_over_time(
        png_path,
        waveform,
        recognizer.sample_rate,
        prediction.frame_weights,
        FRAME_SECONDS,
        prediction.probability_by_class(),
        title=prediction.path + (f"  ({'; '.join(prediction.notes)})" if prediction.notes else ""),
        weight_label="attention weight" if recognizer.pooling == "attention" else f"frame weight ({recognizer.pooling} pooling)",
        cluster_ids=prediction.cluster_ids,
    )


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
    recognizer = EmotionRecognizer.load(checkpoint_path)
    frame_clusters = recognizer.load_frame_clusters(km_path, cluster_layer) if km_path is not None else None
    predictions: List[RecordingPrediction] = []
    skipped: List[SkippedRecording] = []
    results = recognizer.iter_recordings(paths, frame_clusters, batch_seconds)
    # The bar only shows on a terminal; redirected stderr keeps just the skipped lines.
    for index, result in enumerate(tqdm.tqdm(results, total=len(paths), unit="file", disable=None), start=1):
        if isinstance(result, SkippedRecording):
            skipped.append(result)
            tqdm.tqdm.write(f"skipped {result.reason}", file=sys.stderr)
            continue
        predictions.append(result)
        if outputs.plot_dir is not None:
            plot_recording(recognizer, result, os.path.join(outputs.plot_dir, plot_file_name(index, result.path, len(paths))))
    if not predictions:
        raise FleaInputError(f"none of the {len(paths)} files could be used")

    if outputs.json_path is not None:
        text = predictions_json(predictions, skipped, recognizer, checkpoint_path, frame_clusters)
        write_output(outputs.json_path, text)
    if outputs.csv_path is not None:
        write_output(outputs.csv_path, predictions_csv(predictions, recognizer.class_names))
    if outputs.table_on_stdout:
        sys.stdout.write(prediction_table(predictions, recognizer.class_names))
    return len(predictions)


def write_output(path: str, text: str) -> None:
    if path == STDOUT:
        sys.stdout.write(text)
    else:
        write_text_atomically(path, text)
