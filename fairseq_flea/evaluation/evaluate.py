"""Evaluating a fine-tuned emotion classifier on one split: predictions, scores, pictures,
and with reference spans the frame-level scores (EDER, frame accuracy, attention in span)."""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.io.spans import SpanEntry, match_spans, read_spans
from fairseq_flea.tasks.classification_data import read_class_indices
from fairseq_flea.inference.recognizer import EmotionRecognizer, UtterancePrediction
from fairseq_flea.inference.segments import SegmentOptions, frame_labels, labels_to_segments, neutral_class
from fairseq_flea.io.manifest import read_manifest
from fairseq_flea.evaluation.frame_metrics import score_utterance, summarise_frame_scores
from fairseq_flea.evaluation.metrics import classification_scores, confusion_matrix
from fairseq_flea.io.plots import plot_confusion_matrix

RESULTS_FILE = "results.json"
SEGMENTS_FILE = "segments.json"


def format_confusion(confusion: np.ndarray, labels: List[str]) -> str:
    width = max(8, *(len(label) + 2 for label in labels))
    lines = ["true \\ predicted".ljust(18) + "".join(label.rjust(width) for label in labels)]
    for label, row in zip(labels, confusion):
        lines.append(label.ljust(18) + "".join(str(count).rjust(width) for count in row))
    return "\n".join(lines) + "\n"


def evaluate_split(
    checkpoint_path: str,
    tsv_dir: str,
    split: str,
    out_dir: Optional[str] = None,
    label_name: str = "emo",
    batch_seconds: float = 100.0,
    spans_path: Optional[str] = None,
    segment_options: SegmentOptions = SegmentOptions(),
    neutral_label: Optional[str] = None,
    spans_of_other_utterances: bool = False,
) -> Dict[str, object]:
    """Predict every utterance of ``{tsv_dir}/{split}.tsv`` at full length and score it against
    ``{split}.{label_name}``. Writes ``predictions.tsv``, ``results.json``,
    ``confusion.txt`` and ``confusion.png`` into ``out_dir`` (default: next to the checkpoint).

    With ``spans_path`` (ZED-style reference spans, matched by wav file name) results.json
    also has the frame-level scores of the utterances that have spans, and ``segments.json``
    the predicted segments and per-utterance scores. An entry for no utterance of the split is
    an error unless ``spans_of_other_utterances`` (a spans file for the whole corpus)."""
    segment_options.check()
    spans = read_spans(spans_path) if spans_path is not None else None
    recognizer = EmotionRecognizer.load(checkpoint_path)
    manifest = read_manifest(os.path.join(tsv_dir, f"{split}.tsv"))
    true = read_class_indices(os.path.join(tsv_dir, f"{split}.{label_name}"), manifest, recognizer.class_names)
    paths = [os.path.join(manifest.root, name) for name in manifest.names]
    neutral = neutral_class(recognizer.class_names, neutral_label) if spans is not None else None
    if spans is not None:  # checked before the model runs: spans for files it will not see fail at once
        durations = [n / recognizer.sample_rate for n in manifest.num_samples]
        matched = match_spans(spans, paths, durations, spans_path, every_entry=not spans_of_other_utterances)
    predictions = recognizer.predict_files(paths, batch_seconds)
    predicted = [p.predicted_index() for p in predictions]
    labels = recognizer.class_names
    confusion = confusion_matrix(true, predicted, len(labels))
    results = {
        **classification_scores(true, predicted, len(labels)),
        "confusion": confusion.tolist(),
        "labels": labels,
        "checkpoint": checkpoint_path,
        "split": os.path.join(tsv_dir, split),
    }
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), f"eval_{split}")
    os.makedirs(out_dir, exist_ok=True)
    if spans is not None:
        if not matched:
            raise FleaInputError(f"{spans_path}: names none of the {len(paths)} utterances of {manifest.path}")
        frame_results, per_utterance = frame_level_scores(
            recognizer, predictions, paths, matched, segment_options, neutral, spans_path)
        results.update(frame_results)
        results.update({"spans": spans_path, "neutral_label": recognizer.class_names[neutral],
                        "segment_options": segment_options.as_dict()})
        write_text_atomically(os.path.join(out_dir, SEGMENTS_FILE), json.dumps(per_utterance, indent=1) + "\n")
    header = "\t".join(["utterance", "true", "predicted", *(f"p_{label}" for label in labels)])
    rows = [
        "\t".join([name, labels[t], labels[p.predicted_index()], *(f"{x:.6f}" for x in p.probabilities)])
        for name, t, p in zip(manifest.names, true, predictions)
    ]
    write_text_atomically(os.path.join(out_dir, "predictions.tsv"), "\n".join([header, *rows]) + "\n")
    write_text_atomically(os.path.join(out_dir, "confusion.txt"), format_confusion(confusion, labels))
    title = f"{split}: UA {100 * results['ua']:.1f} / WA {100 * results['wa']:.1f} (n={results['n']})"
    plot_confusion_matrix(confusion, labels, title, os.path.join(out_dir, "confusion.png"))
    write_text_atomically(os.path.join(out_dir, RESULTS_FILE), json.dumps(results, indent=2) + "\n")
    return results


def frame_level_scores(
    recognizer: EmotionRecognizer,
    predictions: Sequence[UtterancePrediction],
    paths: Sequence[str],
    matched: Dict[int, SpanEntry],
    options: SegmentOptions,
    neutral: int,
    source: str,
) -> Tuple[Dict[str, object], Dict[str, object]]:
    """(results.json's frame-level figures, segments.json): every utterance with spans
    segmented as tools/predict.py segments it and scored against its reference."""
    timing = recognizer.frame_timing
    names = recognizer.class_names
    scores, per_utterance = [], {}
    for position in sorted(matched):
        entry, prediction = matched[position], predictions[position]
        labels = frame_labels(prediction.frame_logits, options, timing.step, neutral)
        edges = timing.edges(len(labels), entry.duration)
        segments = labels_to_segments(labels, edges, names)
        centres = np.arange(len(labels)) * timing.step + timing.receptive_field / 2
        raw = [names[k] for k in prediction.frame_logits.argmax(axis=1)]
        score = score_utterance(entry, segments, raw, prediction.frame_weights, edges, centres, names,
                                names[neutral], source)
        scores.append(score)
        per_utterance[entry.utt_id] = {
            "wav": paths[position], "duration": entry.duration,
            "segments": [segment.as_dict() for segment in segments],
            "reference": [{"emo": e.emo, "start": e.start, "end": e.end} for e in entry.events],
            "eder": score.eder, "frame_accuracy": score.frame_accuracy,
            "attention_in_span": score.attention_in_span, "uniform_in_span": score.uniform_in_span,
        }
    return summarise_frame_scores(scores), per_utterance


def format_frame_scores(results: Dict[str, object]) -> str:
    """The frame-level line of tools/evaluate.py's printout."""
    line = (f"EDER {100 * results['eder']:.2f}  frame accuracy {100 * results['frame_accuracy']:.2f}  "
            f"({results['span_utterances']} utterances with spans)")
    if results["attention_in_span"] is None:
        return line + "  attention in span: - (no utterance with a partial emotional span)"
    return line + (f"  attention in span {results['attention_in_span']:.3f} (uniform {results['uniform_in_span']:.3f}; "
                   f"above uniform in {results['attention_above_uniform']} of {results['partial_span_utterances']})")
