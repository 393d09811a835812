"""Speech-emotion metrics: UA (mean per-class recall), WA (accuracy), confusion matrix."""

from typing import Dict, List, Optional, Sequence

import numpy as np

from fairseq_flea.criterions.emotion_cross_entropy import unweighted_accuracy


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(predicted)), 1)
    return matrix


def classification_scores(confusion: np.ndarray) -> Dict[str, object]:
    """UA, WA, per-class recall and macro-F1 from a confusion matrix (fractions, not percent)."""
    total_per_class = confusion.sum(axis=1)
    correct_per_class = np.diag(confusion)
    predicted_per_class = confusion.sum(axis=0)
    recall: List[Optional[float]] = [
        float(c / t) if t > 0 else None for c, t in zip(correct_per_class, total_per_class)
    ]
    f1 = []
    for c, t, p in zip(correct_per_class, total_per_class, predicted_per_class):
        if t > 0:
            f1.append(0.0 if c == 0 else float(2 * c / (t + p)))
    return {
        "ua": unweighted_accuracy(correct_per_class.tolist(), total_per_class.tolist()),
        "wa": float(correct_per_class.sum() / max(confusion.sum(), 1)),
        "per_class_recall": recall,
        "macro_f1": float(np.mean(f1)) if f1 else None,
        "n": int(confusion.sum()),
    }
