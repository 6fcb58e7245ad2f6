"""Classification metrics for downstream evaluation (no retrieval metrics here).

Conventions: ``y_true`` / ``y_pred`` are integer class indices ``[N]``; multi-label targets are 0/1
``[N, C]`` with scores ``[N, C]`` (logits or probabilities — only the ranking matters for AP).

A task reports one of :data:`METRICS` (:func:`metric_score`): ``accuracy``; ``uar`` (unweighted average recall =
macro recall = scikit-learn's ``balanced_accuracy``, the usual heart-sound score); ``wacc`` (PhysioNet/CinC 2022
murmur weighted accuracy); ``mAP`` (macro average precision, multi-label). :func:`chance_score` and
:func:`majority_score` give the two reference lines every table shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kikimimi.evaluation.extras import require

__all__ = [
    "METRICS",
    "MURMUR_WEIGHTS",
    "accuracy",
    "chance_score",
    "average_precision",
    "confusion_matrix",
    "macro_map",
    "majority_score",
    "metric_label",
    "metric_score",
    "murmur_weighted_accuracy",
    "per_class_accuracy",
    "task_score",
    "uar",
    "weighted_accuracy",
]

#: PhysioNet/CinC 2022 murmur weights.
MURMUR_WEIGHTS: dict[str, float] = {"Present": 5.0, "Unknown": 3.0, "Absent": 1.0}


def _as_1d(name: str, y: Sequence | np.ndarray) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {arr.shape}")
    return arr


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Fraction of exact matches, ``mean(y_true == y_pred)``; ``nan`` for empty input."""
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """Counts ``[C, C]`` int64: row = true class, column = predicted class."""
    t = _as_1d("y_true", y_true).astype(np.int64)
    p = _as_1d("y_pred", y_pred).astype(np.int64)
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_accuracy(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """Per-class accuracy (= recall) ``[C]``; ``nan`` for classes absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def uar(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int | None = None) -> float:
    """Unweighted average recall: mean of per-class recall over the classes present in ``y_true``
    (scikit-learn ``recall_score(average="macro")`` restricted to those classes; ``n_classes`` is accepted for
    symmetry with :func:`per_class_accuracy`). ``nan`` for empty input."""
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if not t.size:
        return float("nan")
    recall_score = require("sklearn.metrics").recall_score
    return float(recall_score(t, p, labels=np.unique(t), average="macro", zero_division=0))


def average_precision(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float:
    """Average precision of one binary target ``[N]`` (0/1) ranked by ``scores`` ``[N]``.

    Same definition as scikit-learn's ``average_precision_score``: ``Σ_k (R_k − R_{k−1}) P_k`` over
    distinct score thresholds (tied scores form one threshold). ``nan`` when there is no positive.
    """
    t = _as_1d("y_true", y_true).astype(np.float64)
    s = _as_1d("scores", scores).astype(np.float64)
    n_pos = t.sum()
    if n_pos <= 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    t, s = t[order], s[order]
    tp = np.cumsum(t)
    # last index of each run of equal scores = one threshold
    last = np.r_[np.nonzero(np.diff(s))[0], t.size - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def macro_map(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean average precision over the classes that have at least one positive.

    Args:
        y_true: 0/1 targets ``[N, C]``.
        scores: scores ``[N, C]``.
    """
    t, s = np.asarray(y_true), np.asarray(scores)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(
            f"macro_map needs y_true and scores of the same [N, C] shape, got {t.shape}, {s.shape}"
        )
    aps = [average_precision(t[:, c], s[:, c]) for c in range(t.shape[1]) if t[:, c].sum() > 0]
    return float(np.mean(aps)) if aps else float("nan")


def task_score(y_true: np.ndarray, logits: np.ndarray, multi_label: bool) -> float:
    """The score a downstream task reports: macro mAP for multi-label, else accuracy of the arg-max class.

    Args:
        y_true: ``[N]`` class indices, or ``[N, C]`` 0/1 targets when ``multi_label``.
        logits: ``[N, C]`` scores.
        multi_label: which of the two metrics.

    Returns:
        The score in ``[0, 1]``; ``nan`` for no items (or, multi-label, no class with a positive).
    """
    if len(y_true) == 0:
        return float("nan")
    return macro_map(y_true, logits) if multi_label else accuracy(y_true, logits.argmax(axis=1))


def weighted_accuracy(y_true: Sequence, y_pred: Sequence, weights: Mapping[str | int, float]) -> float:
    """Class-weighted accuracy ``Σ_c w_c·TP_c / Σ_c w_c·N_c`` (``N_c`` = number of true items of class c).

    Labels may be strings or ints; every true label must have a weight.
    """
    t, p = list(y_true), list(y_pred)
    if len(t) != len(p):
        raise ValueError(f"y_true ({len(t)}) and y_pred ({len(p)}) differ in length")
    missing = sorted({str(x) for x in t if x not in weights})
    if missing:
        raise ValueError(f"no weight for label(s) {missing}; weights cover {sorted(map(str, weights))}")
    num = sum(weights[a] for a, b in zip(t, p, strict=True) if a == b)
    den = sum(weights[a] for a in t)
    return float(num / den) if den > 0 else float("nan")


def murmur_weighted_accuracy(
    y_true: Sequence, y_pred: Sequence, class_names: Sequence[str] | None = None
) -> float:
    """PhysioNet 2022 murmur W.acc = (5·TP_P + 3·TP_U + TP_A) / (5·N_P + 3·N_U + N_A).

    Args:
        y_true, y_pred: ``"Present"``/``"Unknown"``/``"Absent"`` strings, or indices into ``class_names``.
        class_names: names for integer labels (e.g. ``["Absent", "Present", "Unknown"]``).
    """
    if class_names is not None:
        y_true = [class_names[int(i)] for i in y_true]
        y_pred = [class_names[int(i)] for i in y_pred]
    return weighted_accuracy(y_true, y_pred, MURMUR_WEIGHTS)


#: Metric names a task can report, with their table labels.
METRICS: dict[str, str] = {"accuracy": "acc", "uar": "UAR", "wacc": "W.acc", "mAP": "mAP"}


def metric_label(metric: str) -> str:
    """Short table label of ``metric`` (``"acc"``, ``"UAR"``, ``"W.acc"``, ``"mAP"``)."""
    return METRICS[metric]


def metric_score(metric: str, y_true: np.ndarray, logits: np.ndarray, classes: Sequence[str]) -> float:
    """The score of ``logits`` under ``metric``.

    Args:
        metric: one of :data:`METRICS`.
        y_true: ``[N]`` class indices (``[N, C]`` 0/1 for ``mAP``).
        logits: ``[N, C]`` scores; single-label metrics use the arg-max.
        classes: class names (``wacc`` needs ``Present`` / ``Unknown`` / ``Absent``).

    Returns:
        The score in ``[0, 1]``; ``nan`` for no items.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if len(y_true) == 0:
        return float("nan")
    if metric == "mAP":
        return macro_map(y_true, logits)
    y_pred = np.asarray(logits).argmax(axis=1)
    if metric == "accuracy":
        return accuracy(y_true, y_pred)
    if metric == "uar":
        return uar(y_true, y_pred, len(classes))
    return murmur_weighted_accuracy(y_true, y_pred, list(classes))


def chance_score(metric: str, y_true: np.ndarray, n_classes: int) -> float:
    """Expected score of guessing uniformly at random: ``1/C`` for accuracy, UAR and W.acc (each class is
    hit with probability ``1/C`` whatever its weight); for mAP the mean positive rate of the classes present
    (the expected AP of a random ranking)."""
    if metric == "mAP":
        y = np.asarray(y_true, dtype=np.float64)
        present = y.sum(axis=0) > 0
        return float(y.mean(axis=0)[present].mean()) if present.any() else float("nan")
    return 1.0 / n_classes


def majority_score(metric: str, y_train: np.ndarray, y_true: np.ndarray, classes: Sequence[str]) -> float:
    """Score of always answering the most frequent training class (for mAP: constant scores, equal to
    the chance line)."""
    if metric == "mAP":
        return chance_score(metric, y_true, len(classes))
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=len(classes))
    logits = np.zeros((len(y_true), len(classes)), np.float32)
    logits[:, int(counts.argmax())] = 1.0
    return metric_score(metric, np.asarray(y_true), logits, classes)
