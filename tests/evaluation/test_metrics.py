"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from kikimimi.evaluation import metrics as M


def test_accuracy_and_binary_case():
    assert M.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(0.75)
    # binary task: both classes must be scorable (argmax over 2 logits, labels 0/1)
    y_true = np.array([1, 1, 1, 0])
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert M.accuracy(y_true, logits.argmax(1)) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0])


def test_confusion_and_per_class():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 0]
    cm = M.confusion_matrix(y_true, y_pred, 4)
    expected = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    pc = M.per_class_accuracy(y_true, y_pred, 4)
    np.testing.assert_allclose(pc[:3], [0.5, 2 / 3, 0.0])
    assert math.isnan(pc[3])
    # UAR ignores the class without support
    assert M.uar(y_true, y_pred, 4) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_average_precision_hand_case():
    # ranking: 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = (1/1 + 2/3) / 2
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert M.average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(M.average_precision(np.zeros(3), np.arange(3.0)))


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        y[0] = 1
        s = np.round(rng.random(30), 1)  # many ties
        assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_macro_map_skips_classes_without_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.1, 0.8, 0.2]])
    # class 0: ranks 0.9(+),0.2(-),0.1(+) → (1 + 2/3)/2; class 1: 0.8(+),0.3(+),0.1(-) → 1; class 2 skipped
    assert M.macro_map(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)


def test_murmur_weighted_accuracy():
    y_true = ["Present", "Present", "Unknown", "Absent", "Absent", "Absent"]
    y_pred = ["Present", "Absent", "Unknown", "Absent", "Present", "Absent"]
    # (5*1 + 3*1 + 1*2) / (5*2 + 3*1 + 1*3) = 10 / 16
    assert M.murmur_weighted_accuracy(y_true, y_pred) == pytest.approx(10 / 16)
    names = ["Absent", "Present", "Unknown"]
    idx_true = [names.index(x) for x in y_true]
    idx_pred = [names.index(x) for x in y_pred]
    assert M.murmur_weighted_accuracy(idx_true, idx_pred, names) == pytest.approx(10 / 16)
    with pytest.raises(ValueError, match="no weight"):
        M.weighted_accuracy(["X"], ["X"], M.MURMUR_WEIGHTS)
