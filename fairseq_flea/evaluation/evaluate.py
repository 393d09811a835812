"""Evaluating a fine-tuned emotion classifier on one split: predictions, scores, pictures."""

import json
import os
from typing import Dict, List, Optional

import numpy as np

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.tasks.classification_data import read_class_indices
from fairseq_flea.inference.recognizer import EmotionRecognizer
from fairseq_flea.io.manifest import read_manifest
from fairseq_flea.evaluation.metrics import classification_scores, confusion_matrix
from fairseq_flea.io.plots import plot_confusion_matrix

RESULTS_FILE = "results.json"


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
) -> Dict[str, object]:
    """Predict every utterance of ``{tsv_dir}/{split}.tsv`` at full length and score it against
    ``{split}.{label_name}``. Writes ``predictions.tsv``, ``results.json``,
    ``confusion.txt`` and ``confusion.png`` into ``out_dir`` (default: next to the checkpoint)."""
    recognizer = EmotionRecognizer.load(checkpoint_path)
    manifest = read_manifest(os.path.join(tsv_dir, f"{split}.tsv"))
    true = read_class_indices(os.path.join(tsv_dir, f"{split}.{label_name}"), manifest, recognizer.class_names)
    paths = [os.path.join(manifest.root, name) for name in manifest.names]
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
