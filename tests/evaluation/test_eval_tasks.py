"""Task CSV / folder loading, folds, classes, crops and embedding extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.evaluation.embeddings import embed_task, extract_embeddings
from kikimimi.evaluation.tasks import (
    Task,
    TaskError,
    crop_or_pad,
    group_split,
    stratified_split,
    unit_samples,
)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_split_csv_classes_and_paths(tmp_path):
    csv = write_csv(
        tmp_path / "t.csv",
        """
file_name,label,split,speaker
a/1.wav,dog,train,s1
a/2.wav,cat,train,s2
a/3.wav,dog,valid,s3
/abs/4.wav,cat,test,s4
""",
    )
    task = Task.from_csv(csv, unit_s=2.0)
    assert not task.is_cv and task.has_valid and not task.multi_label
    assert task.classes == ["cat", "dog"]
    assert task.items[0].path == tmp_path / "a/1.wav"
    assert task.items[3].path == Path("/abs/4.wav")
    assert task.items[0].meta == {"speaker": "s1"}
    (fold,) = list(task.folds())
    assert [it.key for it in fold.train] == ["a/1.wav", "a/2.wav"]
    assert [it.key for it in fold.valid] == ["a/3.wav"]
    assert [it.key for it in fold.test] == ["/abs/4.wav"]
    np.testing.assert_array_equal(task.targets(fold.train), [1, 0])
    # audio root override
    other = Task.from_csv(csv, unit_s=2.0, audio_root=tmp_path / "elsewhere")
    assert other.items[0].path == tmp_path / "elsewhere/a/1.wav"


def test_multilabel_detected_and_encoded(tmp_path):
    csv = write_csv(
        tmp_path / "m.csv",
        """
file_name,label,split
1.wav,"Speech,Music",train
2.wav,Music,train
3.wav,"Dog,Speech",test
""",
    )
    task = Task.from_csv(csv, unit_s=1.0)
    assert task.multi_label
    assert task.classes == ["Music", "Speech"]
    y = task.targets(task.split_items("test"))
    np.testing.assert_array_equal(y, [[0, 1]])  # unseen "Dog" cannot be scored
    (fold,) = list(task.folds())
    assert fold.valid is None


def test_fold_csv_folds_leak_no_file(tmp_path):
    rows = ["file_name,label,fold"] + [f"f{i}.wav,{'ab'[i % 2]},{i % 3 + 1}" for i in range(12)]
    task = Task.from_csv(write_csv(tmp_path / "esc50.csv", "\n".join(rows)))
    assert task.unit_s == 5.0  # default for a known task name
    assert task.is_cv and task.fold_ids() == [1, 2, 3]
    folds = list(task.folds())
    assert len(folds) == 3
    seen_test = []
    for f in folds:
        assert f.valid is None
        tr = {it.key for it in f.train}
        te = {it.key for it in f.test}
        assert not tr & te
        assert len(tr) + len(te) == 12
        assert all(it.fold == f.index for it in f.test)
        seen_test += sorted(te)
    assert sorted(seen_test) == sorted(f"f{i}.wav" for i in range(12))


@pytest.mark.parametrize(
    "text, match",
    [
        ("file,label,split\na.wav,x,train", "missing column"),
        ("file_name,label\na.wav,x", "split.*fold"),
        ("file_name,label,split\na.wav,x,train\nb.wav,y,dev", r"line 3: unknown split 'dev'"),
        ("file_name,label,fold\na.wav,x,1\nb.wav,y,one", r"line 3: fold must be an integer"),
        ("file_name,label,split\na.wav,,train", r"line 2: empty label"),
        ("file_name,label,split", "no rows"),
        ("file_name,label,split\na.wav,x,test", "no training rows"),
    ],
)
def test_bad_csv_errors_name_file_and_row(tmp_path, text, match):
    csv = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(TaskError, match=match) as info:
        Task.from_csv(csv, unit_s=1.0)
    assert "bad.csv" in str(info.value)


def test_missing_csv_and_unknown_test_label(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        Task.from_csv(tmp_path / "nope.csv")
    task = Task.from_csv(
        write_csv(tmp_path / "u.csv", "file_name,label,split\na.wav,x,train\nb.wav,y,test"), unit_s=1.0
    )
    with pytest.raises(TaskError, match="'y'.*does not occur"):
        task.targets(task.split_items("test"))


def test_folder_task_stratified_and_seeded(tmp_path):
    for cls, n in (("birds", 10), ("cars", 20)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / cls / f"{i}.wav").write_bytes(b"")
    t1 = Task.from_folder(tmp_path / "data", unit_s=1.0, seed=3)
    t2 = Task.from_folder(tmp_path / "data", unit_s=1.0, seed=3)
    t3 = Task.from_folder(tmp_path / "data", unit_s=1.0, seed=4)
    assert [it.split for it in t1.items] == [it.split for it in t2.items]
    assert [it.split for it in t1.items] != [it.split for it in t3.items]
    assert t1.classes == ["birds", "cars"]
    for cls, n in (("birds", 10), ("cars", 20)):
        splits = [it.split for it in t1.items if it.label == cls]
        assert splits.count("test") == round(0.2 * n) and splits.count("valid") == round(0.1 * n)
    with pytest.raises(TaskError, match="no class sub-folders"):
        Task.from_folder(tmp_path / "data" / "birds")


def test_split_helpers():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"]
    s = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert s[-1] == "train"  # a singleton class stays in training
    assert s[:10].count("train") == 6
    g = group_split([f"spk{i % 7}" for i in range(50)], (0.6, 0.2, 0.2), seed=1)
    assert sorted(g) == [f"spk{i}" for i in range(7)]
    assert set(g.values()) == {"train", "valid", "test"}


def test_crops_first_segment_padding_and_random():
    assert unit_samples(16000, 7.6358) == 122172
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(wave, 4), [0, 1, 2, 3])  # test: first segment
    padded = crop_or_pad(wave[:3], 5)
    np.testing.assert_array_equal(padded, [0, 1, 2, 0, 0])  # pad at the end
    starts = set()
    for s in range(30):
        c = crop_or_pad(wave, 4, np.random.default_rng(s))
        np.testing.assert_array_equal(np.diff(c), 1)  # contiguous
        starts.add(int(c[0]))
    assert starts <= set(range(7)) and len(starts) > 3
    a = crop_or_pad(wave, 4, np.random.default_rng(1))
    b = crop_or_pad(wave, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def _load(path, sr):
    wave, file_sr = sf.read(str(path), dtype="float32")
    return wave, file_sr


def test_extraction_crops_batches_errors_and_cache_keys(tmp_path):
    sr = 1000
    rows = ["file_name,label,split"]
    for i in range(5):
        sf.write(tmp_path / f"{i}.wav", (np.arange(3000) / 3000.0 * (i + 1)).astype(np.float32) * 0.1, sr)
        rows.append(f"{i}.wav,{'xy'[i % 2]},{'train' if i < 3 else 'test'}")
    rows.append("missing.wav,x,train")
    task = Task.from_csv(write_csv(tmp_path / "t.csv", "\n".join(rows)), unit_s=1.0)
    seen = []

    def embed(waves, rate):
        seen.append([w.copy() for w in waves])
        return np.stack([[w[0], w[-1], len(w)] for w in waves]).astype(np.float32)

    res = embed_task(embed, task, sample_rate=sr, seed=42, batch_size=2, load_fn=_load)
    (fold,) = res.folds
    assert [k for k, _ in res.errors] == ["missing.wav"]
    assert [it.key for it in fold.train] == ["0.wav", "1.wav", "2.wav"]
    assert max(len(b) for b in seen) == 2
    assert (fold.x_train[:, 2] == 1000).all()
    # test = first segment: starts at sample 0
    np.testing.assert_allclose(fold.x_test[:, 0], 0.0)
    # train crops are random (seeded): identical when repeated, different for another seed
    again = embed_task(embed, task, sample_rate=sr, seed=42, batch_size=3, load_fn=_load).folds[0]
    other = embed_task(embed, task, sample_rate=sr, seed=7, batch_size=2, load_fn=_load).folds[0]
    np.testing.assert_array_equal(fold.x_train, again.x_train)
    assert not np.array_equal(fold.x_train, other.x_train)
    with pytest.raises(ValueError, match="model_id"):
        extract_embeddings(
            embed,
            task.items,
            sample_rate=sr,
            unit_s=1.0,
            random_crop=False,
            cache_dir=tmp_path,
            load_fn=_load,
        )

    def bad_embed(waves, rate):
        return np.zeros((len(waves) + 1, 3), np.float32)

    with pytest.raises(ValueError, match=r"\[B, D\]"):
        extract_embeddings(
            bad_embed, task.items[:2], sample_rate=sr, unit_s=1.0, random_crop=False, load_fn=_load
        )
