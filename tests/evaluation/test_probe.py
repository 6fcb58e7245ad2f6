"""Linear probe (EVAR protocol) on synthetic embeddings, plus an end-to-end run on generated audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.evaluation.baselines import LogMelStats
from kikimimi.evaluation.embeddings import FoldEmbeddings
from kikimimi.evaluation.probe import (
    ProbeConfig,
    evaluate_task,
    holdout_split,
    probe_embeddings,
    train_probe,
)
from kikimimi.evaluation.tasks import Task, TaskItem

FAST = ProbeConfig(lr=1e-2, epochs=60, patience=10)


def blobs(n_per_class: int, n_classes: int, dim: int, seed: int, spread: float = 0.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + rng.normal(0, spread, (len(y), dim))
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def make_task(
    y_by_split: dict[str, np.ndarray], classes: list[str]
) -> tuple[Task, dict[str, list[TaskItem]]]:
    items: dict[str, list[TaskItem]] = {}
    for split, y in y_by_split.items():
        items[split] = [
            TaskItem(Path(f"/x/{split}{i}.wav"), (classes[int(c)],), split, None, f"{split}{i}")
            for i, c in enumerate(y)
        ]
    all_items = [it for v in items.values() for it in v]
    return Task("synthetic", all_items, 1.0), items


def test_probe_separable_blobs_near_perfect():
    x, y = blobs(40, 5, 16, seed=0)
    xte, yte = blobs(20, 5, 16, seed=0)  # same centres (same seed), new noise order
    classes = [f"c{i}" for i in range(5)]
    task, items = make_task({"train": y, "test": yte}, classes)
    fold = FoldEmbeddings(0, x, items["train"], None, None, xte, items["test"])
    res = probe_embeddings([fold], task, config=FAST, seeds=(1,))
    assert res.metric == "accuracy"
    assert res.score >= 0.97
    assert set(res.per_class_accuracy) == set(classes)
    assert len(res.predictions) == len(yte)
    assert {"key", "label", "prediction"} <= set(res.predictions[0])


def test_probe_shuffled_labels_near_chance():
    x, y = blobs(60, 4, 16, seed=1)
    rng = np.random.default_rng(5)
    y_shuf = rng.permutation(y)
    xte, yte = blobs(50, 4, 16, seed=2)
    r = train_probe(x, y_shuf, None, None, xte, rng.permutation(yte), n_classes=4, config=FAST, seed=3)
    assert r.score < 0.45  # chance = 0.25


def test_binary_task_scored_correctly():
    # Two classes, labels 0/1: a correct one-hot of width 2 must reach ~100% (the single-column
    # LabelBinarizer bug would leave accuracy at the share of class 0).
    x, y = blobs(50, 2, 8, seed=3)
    xte, yte = blobs(30, 2, 8, seed=3)
    r = train_probe(x, y, None, None, xte, yte, n_classes=2, config=FAST, seed=0)
    assert r.y_score.shape == (len(yte), 2)
    assert r.score >= 0.97
    assert set(np.unique(r.y_pred)) == {0, 1}


def test_probe_deterministic_for_seed_and_seed_repeats():
    x, y = blobs(30, 3, 8, seed=4, spread=3.0)
    xte, yte = blobs(20, 3, 8, seed=4, spread=3.0)
    a = train_probe(x, y, None, None, xte, yte, n_classes=3, config=FAST, seed=7)
    b = train_probe(x, y, None, None, xte, yte, n_classes=3, config=FAST, seed=7)
    np.testing.assert_array_equal(a.y_score, b.y_score)
    cfg = ProbeConfig(lr=1e-2, epochs=30, patience=5, hidden=(16,))
    classes = ["a", "b", "c"]
    task, items = make_task({"train": y, "test": yte}, classes)
    fold = FoldEmbeddings(0, x, items["train"], None, None, xte, items["test"])
    res = probe_embeddings([fold], task, config=cfg, seeds=(42, 43, 44))
    assert len(res.seed_scores) == 3
    assert res.score == pytest.approx(np.mean(res.seed_scores))
    assert res.std == pytest.approx(np.std(res.seed_scores))
    assert res.settings["hidden"] == [16] and res.settings["seeds"] == [42, 43, 44]


def test_holdout_contains_every_class():
    rng = np.random.default_rng(0)
    # unbalanced: 3 classes with only 2 items each among 200
    y = np.concatenate([np.zeros(194, int), [1, 1, 2, 2, 3, 3]])
    y = rng.permutation(y)
    for seed in range(5):
        tr, va = holdout_split(y, multi_label=False, ratio=0.1, seed=seed)
        assert set(y[tr]) == set(y[va]) == {0, 1, 2, 3}
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    # a singleton class stays in training
    y2 = np.array([0] * 20 + [1] * 20 + [2])
    tr, va = holdout_split(y2, multi_label=False, seed=0)
    assert 40 in tr and {0, 1} <= set(y2[va])


def test_multilabel_map():
    rng = np.random.default_rng(0)
    n, c, d = 300, 4, 12
    w = rng.normal(size=(d, c))
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ w > 0.5).astype(np.float32)
    xte = rng.normal(size=(150, d)).astype(np.float32)
    yte = (xte @ w > 0.5).astype(np.float32)
    r = train_probe(x, y, None, None, xte, yte, n_classes=c, multi_label=True, config=FAST, seed=0)
    assert r.score > 0.9
    r_shuf = train_probe(
        x, y[rng.permutation(n)], None, None, xte, yte, n_classes=c, multi_label=True, config=FAST, seed=0
    )
    assert r_shuf.score < r.score - 0.2


def _write_class_audio(root: Path, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    rows = ["file_name,label,fold"]
    t = np.arange(int(0.5 * sr)) / sr
    for i in range(12):
        for label in ("low", "high", "noise"):
            if label == "noise":
                wave = rng.normal(0, 0.3, t.size)
            else:
                f0 = (300 if label == "low" else 3000) * (1 + 0.05 * rng.random())
                wave = 0.5 * np.sin(2 * np.pi * f0 * t) + rng.normal(0, 0.01, t.size)
            name = f"{label}_{i}.wav"
            sf.write(root / name, wave.astype(np.float32), sr)
            rows.append(f"{name},{label},{i % 3 + 1}")
    (root / "broken.wav").write_bytes(b"not audio")
    rows.append("broken.wav,low,1")
    csv = root / "task.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_evaluate_task_end_to_end_with_cache(tmp_path):
    csv = _write_class_audio(tmp_path)
    task = Task.from_csv(csv, unit_s=0.4)
    assert task.is_cv and task.fold_ids() == [1, 2, 3]
    calls = []
    base = LogMelStats("m2d-16k")

    def embed(waves, sr):
        calls.append(len(waves))
        assert all(w.shape == (int(0.4 * sr),) for w in waves)
        return base(waves, sr)

    # real loader (kikimimi.audio.decode.load_audio): broken.wav raises AudioDecodeError and is skipped
    kwargs = dict(sample_rate=16000, config=FAST, seeds=(42,), cache_dir=tmp_path / "cache", model_id="lms")
    res, embs = evaluate_task(embed, task, **kwargs)
    n_calls = len(calls)
    res2, _ = evaluate_task(embed, task, **kwargs)
    assert res.score >= 0.9
    assert len(res.fold_scores) == 3
    assert any("broken.wav" in e for e in res.settings["errors"])
    assert sum(len(f.test) for f in embs.folds) == 36  # broken file skipped
    assert len(calls) == n_calls  # second run entirely from the cache
    assert res2.score == pytest.approx(res.score)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_log_mel_stats_shape_and_content():
    base = LogMelStats("m2d-16k")
    sr = 16000
    t = np.arange(sr) / sr
    quiet = 0.01 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    loud = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    e = base([quiet, loud, loud[:100]], sr)
    assert e.shape == (3, 160) and e.dtype == np.float32
    # louder → larger mean log-mel in every band near 440 Hz, std part non-negative
    assert e[1, :80].mean() > e[0, :80].mean()
    assert (e[:, 80:] >= 0).all()


def test_logistic_probe_with_a_validation_split_fits_once_for_every_seed(monkeypatch):
    # With a validation split the logistic probe has nothing seeded, so probe_embeddings fits it once per fold
    # and reuses the fit for the other seeds; the result must equal a separate fit per seed. Without a
    # validation split the seed draws the hold-out, so every seed is fitted.
    import kikimimi.evaluation.probe as P

    x, y = blobs(30, 3, 8, seed=4, spread=3.0)
    xva, yva = blobs(10, 3, 8, seed=4, spread=3.0)
    xte, yte = blobs(20, 3, 8, seed=4, spread=3.0)
    classes = ["a", "b", "c"]
    task, items = make_task({"train": y, "valid": yva, "test": yte}, classes)
    cfg = ProbeConfig(probe="logistic")
    calls = []
    real = P.fit_logistic
    monkeypatch.setattr(P, "fit_logistic", lambda *a, **k: calls.append(1) or real(*a, **k))
    fold = FoldEmbeddings(0, x, items["train"], xva, items["valid"], xte, items["test"])
    res = probe_embeddings([fold], task, config=cfg, seeds=(42, 43, 44))
    assert len(calls) == 1  # one C search for the fold, not one per seed
    separate = [train_probe(x, y, xva, yva, xte, yte, n_classes=3, config=cfg, seed=s).score for s in (42, 43, 44)]
    assert res.seed_scores == pytest.approx(separate)
    assert [r.seed for r in res.folds] == [42, 43, 44]
    calls.clear()
    no_valid = FoldEmbeddings(0, x, items["train"], None, None, xte, items["test"])
    probe_embeddings([no_valid], task, config=cfg, seeds=(42, 43))
    assert len(calls) == 2
