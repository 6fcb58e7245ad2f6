"""Confusion-matrix figures of probe results: test counts summed over every seed and fold, row-normalised."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from kikimimi.evaluation.metrics import confusion_matrix, metric_label
from kikimimi.evaluation.probe import ProbeResult
from kikimimi.evaluation.tasks import Task
from kikimimi.fileio import atomic_write_bytes

__all__ = ["summed_confusion", "plot_confusion", "confusion_title"]


def summed_confusion(result: ProbeResult) -> np.ndarray:
    """Confusion counts ``[C, C]`` (row = true class) summed over every seed and fold of ``result``."""
    n = len(result.classes)
    cm = np.zeros((n, n), np.int64)
    for f in result.folds:
        cm += confusion_matrix(f.y_true, f.y_pred, n)
    return cm


def confusion_title(spec_name: str, task: Task, result: ProbeResult) -> str:
    """Title stating what the cells are (summed over seeds and folds) and the mean score they go with."""
    seeds = result.settings.get("seeds", [])
    n_folds = result.settings.get("n_folds", 1)
    return (f"{spec_name} — {task.name} ({result.probe} probe)\n"
            f"test counts summed over seeds {seeds}" + (f" × {n_folds} folds" if n_folds > 1 else "")
            + f", row-normalised\n{metric_label(result.metric)} mean over seeds {100 * result.score:.1f}%")


def plot_confusion(result: ProbeResult, title: str, out_png: Path) -> None:
    """Row-normalised confusion matrix of the test predictions summed over all seeds and folds, written as a PNG
    (the title should say so: :func:`confusion_title`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = result.classes
    cm = summed_confusion(result).astype(float)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(12.0, 2.5 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j] > 0:
                    ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")  # long titles and labels stay whole
    atomic_write_bytes(out_png, buf.getvalue())
    plt.close(fig)
