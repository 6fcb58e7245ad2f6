"""kikimimi.audio.synthetic: seeded labelled sounds, the dataset writer and the speech-like signal."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from kikimimi.audio.decode import load_audio
from kikimimi.audio.synthetic import SOUND_CLASSES, make_dataset, make_sound, speech_like

SR = 16000


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("kind", SOUND_CLASSES)
def test_sound_shape_range_and_determinism(kind):
    x = make_sound(kind, 0.75, SR, _rng(3))
    assert x.dtype == np.float32 and x.shape == (12000,)
    assert np.isfinite(x).all() and np.abs(x).max() <= 0.9
    np.testing.assert_array_equal(x, make_sound(kind, 0.75, SR, _rng(3)))
    if kind == "silence":
        assert not x.any()
    else:
        assert np.abs(x).max() >= 0.25
        assert not np.array_equal(x, make_sound(kind, 0.75, SR, _rng(4)))


@pytest.mark.parametrize("kind", SOUND_CLASSES)
def test_low_sample_rate_stays_below_nyquist(kind):
    x = make_sound(kind, 0.5, 8000, _rng(0))
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / 8000)
    if kind not in ("silence", "clicks", "noise_burst"):  # broadband classes excepted
        assert spec[f > 3700].sum() <= 1e-3 * spec.sum()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown sound class"):
        make_sound("dog_bark", 1.0, SR, _rng(0))
    with pytest.raises(ValueError):
        make_sound("tone", 0.0, SR, _rng(0))


def _features(x: np.ndarray) -> np.ndarray:
    """Pitch-invariant descriptors: relative bandwidth, flatness, envelope variation, centroid motion
    (frame-to-frame and overall trend) and crest factor."""
    n, hop = 512, 256
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10
    f = np.fft.rfftfreq(n, 1 / SR)
    energy = power.sum(1)
    w = energy / energy.sum()
    centroid = (power * f).sum(1) / energy
    spread = np.sqrt((power * (f - centroid[:, None]) ** 2).sum(1) / energy)
    flatness = np.exp(np.log(power).mean(1)) / power.mean(1)
    rms = np.sqrt((frames**2).mean(1)) + 1e-9
    lc = np.log(centroid + 1)
    trend = np.polyfit(np.arange(lc.size), lc, 1, w=w)[0] * lc.size
    return np.array([
        np.log(np.sum(w * spread) / np.sum(w * centroid)),
        np.sum(w * np.log(flatness)),
        np.std(np.log(rms)),
        np.sum(w * np.abs(np.diff(lc, prepend=lc[0]))),
        abs(trend),
        np.log(np.abs(x).max() / np.sqrt(np.mean(x**2))),
    ])


def test_classes_are_separable():
    """A nearest-class-mean classifier on six generic descriptors tells held-out sounds apart."""
    kinds = [k for k in SOUND_CLASSES if k != "silence"]
    X, y = [], []
    for ci, kind in enumerate(kinds):
        for i in range(12):
            X.append(_features(make_sound(kind, 1.0, SR, _rng(100 * ci + i))))
            y.append(ci)
    X, y = np.array(X), np.array(y)
    train = np.arange(y.size) % 2 == 0
    mu, sd = X[train].mean(0), X[train].std(0)
    Z = (X - mu) / sd
    means = np.stack([Z[train & (y == c)].mean(0) for c in range(len(kinds))])
    pred = np.argmin(((Z[~train, None] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == y[~train]).mean())
    assert accuracy >= 0.85, accuracy
    # and the obvious physical differences hold on average
    centroid = X[:, 0]
    assert centroid[y == kinds.index("tone")].mean() < centroid[y == kinds.index("clicks")].mean()
    env_var = X[:, 2]
    assert env_var[y == kinds.index("am_tone")].mean() > 5 * env_var[y == kinds.index("tone")].mean()


def test_make_dataset_deterministic_and_stratified(tmp_path):
    classes = ("tone", "clicks", "silence")
    csv_a = make_dataset(tmp_path / "a", n_per_class=5, duration_s=0.25, seed=7, classes=classes)
    csv_b = make_dataset(tmp_path / "b", n_per_class=5, duration_s=0.25, seed=7, classes=classes)
    make_dataset(tmp_path / "c", n_per_class=5, duration_s=0.25, seed=8, classes=classes)
    assert csv_a == tmp_path / "a" / "labels.csv"

    with open(csv_a, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file_name", "label", "split"] and len(rows) == 15
    for kind in classes:
        splits = Counter(r["split"] for r in rows if r["label"] == kind)
        assert splits == {"train": 3, "valid": 1, "test": 1}
    a, b, c = (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    for r in rows:
        assert r["file_name"].startswith(f"{r['label']}/{r['label']}_") and r["file_name"].endswith(".wav")
        wave, sr = load_audio(tmp_path / "a" / r["file_name"])
        assert sr == SR and wave.size == 4000
        # same seed -> same bytes
        assert (a / r["file_name"]).read_bytes() == (b / r["file_name"]).read_bytes()
    assert csv_a.read_bytes() == csv_b.read_bytes()
    differ = [(a / r["file_name"]).read_bytes() != (c / r["file_name"]).read_bytes()
              for r in rows if r["label"] != "silence"]
    assert all(differ)


def test_make_dataset_items_independent_of_count_and_flac(tmp_path):
    make_dataset(tmp_path / "small", n_per_class=2, duration_s=0.2, classes=("chirp",), seed=1)
    make_dataset(tmp_path / "big", n_per_class=4, duration_s=0.2, classes=("chirp",), seed=1, fmt="flac")
    small, _ = load_audio(tmp_path / "small" / "chirp" / "chirp_1.wav")
    big, _ = load_audio(tmp_path / "big" / "chirp" / "chirp_1.flac")
    np.testing.assert_array_equal(small, big)  # both 16-bit PCM
    with pytest.raises(ValueError, match="fmt"):
        make_dataset(tmp_path / "x", 1, fmt="mp4")


def test_speech_like():
    x = speech_like(2.0, SR, _rng(5))
    assert x.dtype == np.float32 and x.shape == (32000,) and np.abs(x).max() <= 0.9
    np.testing.assert_array_equal(x, speech_like(2.0, SR, _rng(5)))
    assert not np.array_equal(x, speech_like(2.0, SR, _rng(6)))
    # energy mostly below 4 kHz, pauses between syllables, and a pitch period of 4.5-12 ms
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    assert spec[f < 4000].sum() > 0.95 * spec.sum()
    rms = np.sqrt((x[: x.size // 160 * 160].reshape(-1, 160) ** 2).mean(1))  # 10 ms frames
    assert (rms < 0.01 * rms.max()).mean() > 0.05
    loud = int(np.argmax(rms))
    seg = x[max(loud * 160 - 400, 0): loud * 160 + 400].astype(np.float64)
    ac = np.correlate(seg, seg, "full")[seg.size - 1:]
    lag = int(np.argmax(ac[int(0.0045 * SR): int(0.012 * SR)])) + int(0.0045 * SR)
    assert ac[lag] > 0.5 * ac[0]
