"""The logistic-regression probe: scikit-learn ``LogisticRegression`` (L2, lbfgs) on standardised embeddings.

A second, optimiser-free protocol next to the EVAR-style linear probe (:mod:`kikimimi.evaluation.probe`): the
inverse regularisation strength ``C`` is chosen on the validation part from :data:`DEFAULT_C_GRID` (the task's
metric; ties → the smaller ``C``, i.e. the stronger regularisation) and the model fit with that ``C`` on the
training part is the one scored on test — the same rows the linear probe trains on, so the two protocols differ
only in the classifier. Multi-label tasks fit one binary model per class (one-vs-rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kikimimi.evaluation.extras import require
from kikimimi.evaluation.metrics import metric_score

__all__ = ["DEFAULT_C_GRID", "LogisticFit", "fit_logistic"]

#: ``C`` values searched on the validation part (log grid, 1e-4 … 1e2).
DEFAULT_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class LogisticFit:
    """The selected model's test logits ``[N, C]``, its ``C``, its validation score and every ``C``'s score."""

    test_logits: np.ndarray
    c: float
    valid_score: float
    valid_scores: dict[float, float]


def _model(c: float, multi_label: bool, max_iter: int):
    linear_model = require("sklearn.linear_model")
    clf = linear_model.LogisticRegression(C=c, max_iter=max_iter)
    if multi_label:
        return require("sklearn.multiclass").OneVsRestClassifier(clf)
    return clf


def _logits(model, x: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    """Decision values ``[N, n_classes]`` (columns of classes absent from training get −inf-like values)."""
    out = np.full((len(x), n_classes), -1e9, np.float32)
    if len(x) == 0:
        return out
    scores = np.asarray(model.decision_function(x), np.float32)
    if multi_label:
        return scores.reshape(len(x), -1)
    seen = np.asarray(model.classes_, dtype=np.int64)
    if scores.ndim == 1:  # binary: sklearn returns the score of classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    out[:, seen] = scores
    return out


def fit_logistic(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
                 x_test: np.ndarray, *, n_classes: int, metric: str, classes: Sequence[str],
                 multi_label: bool = False, c_grid: Sequence[float] = DEFAULT_C_GRID,
                 max_iter: int = 1000) -> LogisticFit:
    """Fit one model per ``C`` on the (already standardised) training rows, keep the best on validation.

    Args:
        x_train, x_valid, x_test: ``[N, D]`` float32 standardised embeddings.
        y_train, y_valid: ``[N]`` class indices, or ``[N, C]`` 0/1 for multi-label.
        metric: selection metric (the task's, :func:`kikimimi.evaluation.metrics.metric_score`).

    Returns:
        :class:`LogisticFit` of the selected ``C``.
    """
    import warnings

    exceptions = require("sklearn.exceptions")
    best: tuple[float, float, object] | None = None
    scores: dict[float, float] = {}
    for c in sorted(c_grid):
        model = _model(c, multi_label, max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # one-vs-rest: a class without positives
            model.fit(x_train, y_train)
        val = metric_score(metric, y_valid, _logits(model, x_valid, n_classes, multi_label), classes)
        val = -np.inf if np.isnan(val) else float(val)
        scores[float(c)] = val
        if best is None or val > best[1]:
            best = (float(c), val, model)
    assert best is not None, "c_grid is empty"
    c, val, model = best
    return LogisticFit(_logits(model, x_test, n_classes, multi_label), c, val, scores)
