"""Speech-emotion metrics, computed by scikit-learn: UA (balanced accuracy, the mean recall
over the classes that occur), WA (accuracy), per-class recall, macro-F1 over the classes
that occur, and the confusion matrix."""

import warnings
from typing import Dict, Sequence

import numpy as np
from sklearn import metrics


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return metrics.confusion_matrix(true, predicted, labels=list(range(num_classes)))


def classification_scores(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> Dict[str, object]:
    """UA, WA, per-class recall (None for a class absent from ``true``) and macro-F1, as
    fractions; a class that does not occur counts in none of the averages."""
    present = sorted(set(true))
    if not present:
        return {"ua": None, "wa": 0.0, "per_class_recall": [None] * num_classes, "macro_f1": None, "n": 0}
    recall = metrics.recall_score(true, predicted, labels=list(range(num_classes)), average=None, zero_division=0)
    per_class_recall: list = [float(recall[k]) if k in present else None for k in range(num_classes)]
    with warnings.catch_warnings():
        # sklearn warns when a predicted class never occurs: by definition it has no recall to average.
        warnings.simplefilter("ignore")
        ua = metrics.balanced_accuracy_score(true, predicted)
    return {
        "ua": float(ua),
        "wa": float(metrics.accuracy_score(true, predicted)),
        "per_class_recall": per_class_recall,
        "macro_f1": float(metrics.f1_score(true, predicted, labels=present, average="macro", zero_division=0)),
        "n": len(true),
    }
