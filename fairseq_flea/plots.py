"""Pictures next to the numbers: written as PNG under a temporary name, then renamed."""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fairseq_flea.atomic_files import atomic_outputs  # noqa: E402


def save_figure(figure, path: str) -> None:
    with atomic_outputs(path) as (partial,):
        figure.savefig(partial, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_confusion_matrix(confusion: np.ndarray, labels: Sequence[str], title: str, path: str) -> None:
    """Counts with row-normalised shading: the diagonal reads as per-class recall."""
    totals = confusion.sum(axis=1, keepdims=True)
    recall = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    axes.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(labels)):
        for column in range(len(labels)):
            axes.text(column, row, f"{confusion[row, column]}\n{100 * recall[row, column]:.0f}%", ha="center",
                      va="center", color="white" if recall[row, column] > 0.5 else "black", fontsize=9)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    save_figure(figure, path)
