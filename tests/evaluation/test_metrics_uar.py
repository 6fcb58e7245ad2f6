"""Metrics that fit the task: UAR and W.acc against hand computations, chance / majority lines, and each
task's metric choice (sidecar, flag, murmur classes, multi-label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kikimimi.evaluation.metrics import chance_score, majority_score, metric_score, murmur_weighted_accuracy, uar
from kikimimi.evaluation.tasks import Task, TaskError, TaskItem


def _logits(pred: list[int], n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[pred]


def test_uar_by_hand():
    # class 0: 3 of 4 right, class 1: 1 of 2, class 2: 0 of 1  → (0.75 + 0.5 + 0) / 3
    y = [0, 0, 0, 0, 1, 1, 2]
    p = [0, 0, 0, 1, 1, 0, 0]
    assert uar(y, p) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert metric_score("uar", np.array(y), _logits(p, 3), ["a", "b", "c"]) == pytest.approx(0.41666667)
    assert metric_score("accuracy", np.array(y), _logits(p, 3), ["a", "b", "c"]) == pytest.approx(4 / 7)
    # a class that never occurs in y_true is not averaged in (it has no recall)
    assert uar([0, 0, 1], [0, 2, 1]) == pytest.approx((0.5 + 1.0) / 2)


def test_murmur_weighted_accuracy_by_hand():
    classes = ["Absent", "Present", "Unknown"]
    # Present: 2 of 3 right, Unknown: 1 of 2, Absent: 4 of 5
    t = ["Present"] * 3 + ["Unknown"] * 2 + ["Absent"] * 5
    p = ["Present", "Present", "Absent", "Unknown", "Absent", "Absent", "Absent", "Absent", "Absent", "Present"]
    hand = (5 * 2 + 3 * 1 + 1 * 4) / (5 * 3 + 3 * 2 + 1 * 5)
    assert murmur_weighted_accuracy(t, p) == pytest.approx(hand)
    idx = {c: i for i, c in enumerate(classes)}
    y = np.array([idx[v] for v in t])
    assert metric_score("wacc", y, _logits([idx[v] for v in p], 3), classes) == pytest.approx(hand)


def test_chance_and_majority_lines():
    classes = ["Absent", "Present", "Unknown"]
    y_train = np.array([0] * 8 + [1] * 3 + [2] * 2)  # Absent is the majority
    y_test = np.array([0] * 5 + [1] * 3 + [2] * 2)
    assert chance_score("accuracy", y_test, 3) == pytest.approx(1 / 3)
    assert chance_score("uar", y_test, 3) == pytest.approx(1 / 3)
    assert majority_score("accuracy", y_train, y_test, classes) == pytest.approx(0.5)
    assert majority_score("uar", y_train, y_test, classes) == pytest.approx(1 / 3)
    # always "Absent": 5·0 + 3·0 + 1·5 over 5·3 + 3·2 + 1·5
    assert majority_score("wacc", y_train, y_test, classes) == pytest.approx(5 / 26)
    # mAP of a random ranking = positive rate per class
    y_ml = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    assert chance_score("mAP", y_ml, 2) == pytest.approx(0.5)


def _items(labels_by_split):
    return [TaskItem(Path(f"/x/{s}{i}.wav"), tuple(lab.split(",")), s, None, f"{s}{i}")
            for s, labs in labels_by_split.items() for i, lab in enumerate(labs)]


def test_task_metric_defaults_and_overrides(tmp_path):
    murmur = Task("heart", _items({"train": ["Absent", "Present", "Unknown"], "test": ["Absent"]}), 5.0)
    assert murmur.metric == "wacc"
    multi = Task("tags", _items({"train": ["a,b", "b"], "test": ["a"]}), 1.0, multi_label=True)
    assert multi.metric == "mAP"
    assert Task("physionet2016", _items({"train": ["normal", "abnormal"], "test": ["normal"]}), 5.0).metric == "uar"
    plain = Task("digits", _items({"train": ["0", "1"], "test": ["1"]}), 1.0)
    assert plain.metric == "accuracy"
    plain.set_metric("uar")
    assert plain.metric == "uar"
    with pytest.raises(TaskError, match="wacc needs the murmur classes"):
        plain.set_metric("wacc")
    with pytest.raises(TaskError, match="single-label"):
        plain.set_metric("mAP")
    # the task definition carries its metric: a <stem>.task.json sidecar beside the CSV
    csv = tmp_path / "beats.csv"
    csv.write_text("file_name,label,split\na.wav,normal,train\nb.wav,abnormal,train\nc.wav,normal,test\n")
    (tmp_path / "beats.task.json").write_text(json.dumps({"metric": "uar", "unit_s": 3.0}))
    task = Task.from_csv(csv)
    assert task.metric == "uar" and task.unit_s == 3.0
    assert Task.from_csv(csv, metric="accuracy").metric == "accuracy"  # --metric wins
    (tmp_path / "beats.task.json").write_text(json.dumps({"metrics": "uar"}))
    with pytest.raises(TaskError, match="beats.task.json"):
        Task.from_csv(csv)


def test_heart_reference_lines():
    from kikimimi.apps.heart import reference_lines

    # 33 normal, 7 abnormal (82.5 % normal): always "normal" is 82.5 % accurate but only 50 % UAR
    ref = reference_lines(["normal"] * 33 + ["abnormal"] * 7, "normal", ["abnormal", "normal"])
    assert ref["majority_uar"] == pytest.approx(0.5) and ref["chance"] == 0.5 and ref["majority_w_acc"] is None
    murmur = reference_lines(["Present", "Unknown", "Absent", "Absent"], "Absent", ["Absent", "Present", "Unknown"])
    assert murmur["majority_w_acc"] == pytest.approx(2 / (5 + 3 + 2))
