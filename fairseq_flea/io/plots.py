"""Figures written as PNG files (matplotlib's Agg canvas: no display, no pyplot state)."""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fairseq_flea.io.atomic_files import atomic_outputs

# A run of one cluster id shorter than this share of the recording gets no number on it.
MIN_LABELLED_RUN_SHARE = 0.04
LabelledSpan = Tuple[str, float, float]  # (label, start s, end s)
REFERENCE_SHADE = "tab:green"


def label_colours(labels: Sequence[str]) -> Dict[str, str]:
    """One colour per label, the same in every figure of a model: neutral grey, the others tab10."""
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 is grey
    colours, others = {}, 0
    for label in labels:
        if label.lower().startswith("neu"):
            colours[label] = "lightgrey"
        else:
            colours[label] = palette[others % len(palette)]
            others += 1
    return colours


def save_png(figure: Figure, path: str) -> None:
    FigureCanvasAgg(figure)
    with atomic_outputs(path) as (partial,):
        figure.savefig(partial, format="png", dpi=100)


def plot_attention_over_time(
    path: str,
    waveform: np.ndarray,
    sample_rate: int,
    frame_weights: np.ndarray,
    frame_seconds: float,
    probabilities: Dict[str, float],
    title: str,
    weight_label: str = "attention weight",
    cluster_ids: Optional[np.ndarray] = None,
    segments: Optional[Sequence[LabelledSpan]] = None,
    reference_spans: Optional[Sequence[LabelledSpan]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> None:
    """A PNG of the waveform, the pooling weight of each frame and (optionally) each frame's
    cluster id and the predicted emotion segments on one time axis, the predicted class and
    all probabilities in the title. ``reference_spans`` (the known emotional events) are
    shaded on the waveform and the weights and drawn under the predicted segments."""
    height_ratios = [2, 2] + ([0.8] if cluster_ids is not None else [])
    if segments is not None or reference_spans is not None:
        height_ratios.append(0.5 * ((segments is not None) + (reference_spans is not None)) + 0.3)
    strips = len(height_ratios)
    figure = Figure(figsize=(10, 1.6 + 1.7 * strips), layout="constrained")
    axes = figure.subplots(strips, 1, sharex=True, height_ratios=height_ratios)
    duration = len(waveform) / sample_rate

    predicted = max(probabilities, key=probabilities.get)
    ranked = "  ".join(f"{name} {p:.3f}" for name, p in sorted(probabilities.items(), key=lambda item: -item[1]))
    figure.suptitle(f"{title}\npredicted: {predicted} ({probabilities[predicted]:.3f})   |   {ranked}", fontsize=11)

    draw_waveform(axes[0], waveform, sample_rate)
    peak = float(np.abs(waveform).max()) if len(waveform) else 0.0
    axes[0].set_ylim(-1.05 * peak - 1e-6, 1.05 * peak + 1e-6)

    frame_edges = np.arange(len(frame_weights) + 1) * frame_seconds
    axes[1].stairs(frame_weights, frame_edges, fill=True, color="tab:orange")
    # Uniform weights (mean pooling) are 1/N: the line shows where a frame stands against that.
    if len(frame_weights):
        axes[1].axhline(1.0 / len(frame_weights), color="grey", linewidth=0.8, linestyle="--", label="uniform 1/N")
        axes[1].legend(loc="upper right", fontsize=8, frameon=False)
    axes[1].set_ylabel(weight_label)
    # Headroom keeps the legend clear of the bars.
    axes[1].set_ylim(0, 1.25 * float(frame_weights.max()) if len(frame_weights) else 1.0)

    if cluster_ids is not None:
        draw_cluster_strip(axes[2], cluster_ids, frame_seconds)
    if reference_spans:
        for axis in axes[:2]:
            for _, start, end in reference_spans:
                axis.axvspan(start, end, color=REFERENCE_SHADE, alpha=0.15, linewidth=0, zorder=0)
        axes[1].plot([], [], color=REFERENCE_SHADE, alpha=0.3, linewidth=6, label="reference span")
        axes[1].legend(loc="upper right", fontsize=8, frameon=False)
    if segments is not None or reference_spans is not None:
        rows = [(name, spans) for name, spans in (("predicted", segments), ("reference", reference_spans)) if spans is not None]
        labels = list(class_names or []) + sorted({label for _, spans in rows for label, _, _ in spans} - set(class_names or []))
        draw_segment_strip(axes[-1], rows, label_colours(labels))
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, max(duration, len(frame_weights) * frame_seconds))
    save_png(figure, path)


def draw_waveform(axis, waveform: np.ndarray, sample_rate: int, columns: int = 2000) -> None:
    """The waveform, or for a long one its min-max envelope per column (a plot of every
    sample of a minute of audio would take long and look the same)."""
    per_column = len(waveform) // columns
    if per_column < 4:
        axis.plot(np.arange(len(waveform)) / sample_rate, waveform, linewidth=0.4, color="tab:blue")
    else:
        columns = len(waveform) // per_column  # what is left over is shorter than one column
        blocks = waveform[: per_column * columns].reshape(columns, per_column)
        times = (np.arange(columns) + 0.5) * per_column / sample_rate
        axis.fill_between(times, blocks.min(axis=1), blocks.max(axis=1), color="tab:blue", linewidth=0)
    axis.set_ylabel("waveform")


def draw_cluster_strip(axis, cluster_ids: np.ndarray, frame_seconds: float) -> None:
    """Cluster ids as coloured frames, each long enough run labelled with its id."""
    end = len(cluster_ids) * frame_seconds
    axis.imshow(
        (np.asarray(cluster_ids) % 20)[None, :], aspect="auto", cmap="tab20", vmin=0, vmax=19,
        extent=(0, end, 0, 1), interpolation="nearest",
    )
    axis.set_yticks([])
    axis.set_ylabel("cluster", rotation=0, ha="right", va="center")
    run_starts = np.flatnonzero(np.diff(cluster_ids, prepend=-1) != 0)
    run_ends = np.append(run_starts[1:], len(cluster_ids))
    for start, stop in zip(run_starts, run_ends):
        if (stop - start) >= MIN_LABELLED_RUN_SHARE * len(cluster_ids):
            axis.text((start + stop) / 2 * frame_seconds, 0.5, str(cluster_ids[start]), ha="center", va="center", fontsize=8)


def draw_segment_strip(axis, rows: List[Tuple[str, Sequence[LabelledSpan]]], colours: Dict[str, str]) -> None:
    """One row of labelled coloured spans per entry of ``rows`` (top first), each long enough
    span labelled; spans of a reference leave the neutral time blank."""
    total = max((end for _, spans in rows for _, _, end in spans), default=0.0)
    for row, (_, spans) in enumerate(rows):
        bottom = len(rows) - 1 - row
        for label, start, end in spans:
            axis.broken_barh([(start, end - start)], (bottom + 0.1, 0.8), facecolors=colours.get(label, "white"),
                             edgecolor="black", linewidth=0.5)
            if end - start >= MIN_LABELLED_RUN_SHARE * total:
                axis.text((start + end) / 2, bottom + 0.5, label, ha="center", va="center", fontsize=8, clip_on=True)
    axis.set_ylim(0, len(rows))
    axis.set_yticks([len(rows) - 0.5 - row for row in range(len(rows))], [name for name, _ in rows], fontsize=8)


def plot_confusion_matrix(confusion: np.ndarray, labels: Sequence[str], title: str, path: str) -> None:
    """Counts with row-normalised shading: the diagonal reads as per-class recall."""
    totals = confusion.sum(axis=1, keepdims=True)
    recall = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    figure = Figure(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5), layout="constrained")
    axes = figure.subplots()
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
    save_png(figure, path)
