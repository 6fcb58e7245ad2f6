"""Pre-training data: corpora, crops, padding modes, determinism, sharding, bad files, norm stats."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kikimimi.data.corpus import (
    Corpus,
    CropDataset,
    DeviceLogMel,
    EpochSampler,
    estimate_norm_stats,
    make_loader,
    resolve_corpus,
)
from kikimimi.features.frontend import get_preset, log_mel
from kikimimi.features.normstats import NormStats

SR = 16000
LOG_EPS = math.log(1.1920929e-07)


def _write_wave(path: Path, seconds: float, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SR, subtype="FLOAT")
    return wave


def _audio_corpus(root: Path, n: int = 4, seconds: float = 1.5) -> Corpus:
    for i in range(n):
        _write_wave(root / f"clip{i}.wav", seconds, freq=200.0 + 100 * i, seed=i)
    return resolve_corpus([root])


def _cache(root: Path, lengths: list[int], n_mels: int = 8, seed: int = 0, preset: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i, frames in enumerate(lengths):
        np.save(root / f"x{i}.npy", rng.normal(-6, 3, size=(n_mels, frames)).astype(np.float32))
    (root / "manifest.csv").write_text("file_name\n" + "".join(f"x{i}.npy\n" for i in range(len(lengths))))
    (root / "prep.json").write_text(json.dumps({"preset": preset}))
    return root


def _epoch_batches(ds, batch_size, workers, epoch=0, seed=0):
    loader, sampler = make_loader(ds, batch_size, seed=seed, num_workers=workers)
    sampler.set_epoch(epoch)
    return [b["lms"] for b in loader]


# ------------------------------------------------------------------------------------------ corpora
def test_resolve_corpus_kinds_and_errors(tmp_path):
    cache = _cache(tmp_path / "cache", [20, 30])
    corpus = resolve_corpus([cache])
    assert corpus.kind == "cache" and [p.name for p in corpus.files] == ["x0.npy", "x1.npy"]
    audio = _audio_corpus(tmp_path / "wav", n=2)
    assert audio.kind == "audio" and len(audio) == 2
    with pytest.raises(ValueError, match="cannot mix"):
        resolve_corpus([cache, tmp_path / "wav"])
    with pytest.raises(ValueError, match="no training data"):
        resolve_corpus([])


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_crops_regardless_of_workers(tmp_path):
    corpus = _audio_corpus(tmp_path / "wav", n=4)
    ds = CropDataset(corpus, 50, frontend="m2d-16k", seed=11, min_epoch_size=8)
    serial = _epoch_batches(ds, 2, workers=0, epoch=1)
    parallel = _epoch_batches(ds, 2, workers=2, epoch=1)
    assert len(serial) == 4
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)
    # another epoch or another seed gives other crops
    other_epoch = _epoch_batches(ds, 2, workers=0, epoch=2)
    assert not all(torch.equal(a, b) for a, b in zip(serial, other_epoch, strict=True))
    ds2 = CropDataset(corpus, 50, frontend="m2d-16k", seed=12, min_epoch_size=8)
    assert not torch.equal(ds[(1, 0)]["lms"], ds2[(1, 0)]["lms"])
    # an item depends only on (seed, epoch, index)
    assert torch.equal(ds[(3, 5)]["lms"], ds[(3, 5)]["lms"])


def test_crop_is_a_window_of_the_full_log_mel(tmp_path):
    cache = _cache(tmp_path / "cache", [40])
    ds = CropDataset(resolve_corpus([cache]), 16, seed=0)
    full = np.load(cache / "x0.npy")
    crop = ds[(0, 0)]["lms"].numpy()
    starts = [s for s in range(40 - 16 + 1) if np.array_equal(full[:, s : s + 16], crop)]
    assert len(starts) == 1
    rng = np.random.default_rng((0, 0, 0))
    assert starts[0] == int(rng.integers(0, 40 - 16 + 1))


def test_sharding_and_resume_offset(tmp_path):
    ds = CropDataset(resolve_corpus([_cache(tmp_path / "c", [20] * 10)]), 8, seed=0)
    s0 = EpochSampler(ds, num_replicas=2, rank=0, seed=3)
    s1 = EpochSampler(ds, num_replicas=2, rank=1, seed=3)
    for s in (s0, s1):
        s.set_epoch(4)
    k0, k1 = list(s0), list(s1)
    assert all(e == 4 for e, _ in k0 + k1)
    i0, i1 = {i for _, i in k0}, {i for _, i in k1}
    assert len(k0) == len(k1) == 5 and not (i0 & i1) and i0 | i1 == set(range(10))
    s0.set_start(3)
    assert list(s0) == k0[3:] and len(s0) == 2
    s0.set_epoch(5)
    assert [i for _, i in s0] != [i for _, i in k0]  # reshuffled per epoch


# ------------------------------------------------------------------------------------------ padding
def test_short_clip_is_zero_padded_in_the_waveform(tmp_path):
    wave = _write_wave(tmp_path / "wav" / "short.wav", 0.3)
    corpus = resolve_corpus([tmp_path / "wav"])
    crop = 100  # 1 s
    ds = CropDataset(corpus, crop, frontend="m2d-16k", seed=0)
    lms = ds[(0, 0)]["lms"].numpy()
    assert lms.shape == (80, crop)
    need = (crop - 1) * 160
    expected = log_mel(np.concatenate([wave, np.zeros(need - wave.size, np.float32)]), "m2d-16k")
    assert np.allclose(lms, expected, atol=1e-4)
    assert np.allclose(lms[:, 40:], LOG_EPS, atol=1e-3)  # digital silence after the clip
    # official fallback: pad the log-mel with 0 instead
    ds0 = CropDataset(corpus, crop, frontend="m2d-16k", seed=0, pad_mode="log_zero")
    lms0 = ds0[(0, 0)]["lms"].numpy()
    n_real = wave.size // 160 + 1
    assert np.array_equal(lms0[:, n_real:], np.zeros((80, crop - n_real), np.float32))
    assert np.allclose(lms0[:, :n_real], log_mel(wave, "m2d-16k"), atol=1e-5)


def test_cache_padding_modes(tmp_path):
    corpus = resolve_corpus([_cache(tmp_path / "c", [10])])
    silence = CropDataset(corpus, 16, seed=0)[(0, 0)]["lms"].numpy()
    zero = CropDataset(corpus, 16, seed=0, pad_mode="log_zero")[(0, 0)]["lms"].numpy()
    stored = np.load(tmp_path / "c" / "x0.npy")
    assert np.array_equal(silence[:, :10], stored) and np.array_equal(zero[:, :10], stored)
    assert np.allclose(silence[:, 10:], LOG_EPS) and np.array_equal(zero[:, 10:], np.zeros((8, 6)))
    with pytest.raises(ValueError, match="wave_zero"):
        CropDataset(corpus, 16, pad_mode="wave_zero")


def test_normalisation_applied(tmp_path):
    corpus = resolve_corpus([_cache(tmp_path / "c", [30])])
    raw = CropDataset(corpus, 16, seed=0)[(0, 0)]["lms"]
    normed = CropDataset(corpus, 16, seed=0, norm_stats=NormStats(-6.0, 3.0))[(0, 0)]["lms"]
    assert torch.allclose(normed, (raw + 6.0) / 3.0)


# ------------------------------------------------------------------------------------------ epochs
def test_min_epoch_size_repeats_the_file_list(tmp_path):
    corpus = resolve_corpus([_cache(tmp_path / "c", [12, 13, 14])])
    ds = CropDataset(corpus, 8, seed=0, min_epoch_size=10)
    assert len(ds) == 12  # whole copies: 4 × 3 files
    assert len(CropDataset(corpus, 8, seed=0)) == 3
    assert len(CropDataset(corpus, 8, seed=0, min_epoch_size=2)) == 3
    loader, sampler = make_loader(ds, 3, seed=1)
    sampler.set_epoch(0)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(12))
    per_file = np.bincount([i % 3 for _, i in keys])
    assert per_file.tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="fewer than the batch size"):
        make_loader(CropDataset(corpus, 8), 4)


# ------------------------------------------------------------------------------------------ bad files
def test_unreadable_files_are_skipped_with_a_warning(tmp_path):
    root = tmp_path / "wav"
    _audio_corpus(root, n=2)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    corpus = resolve_corpus([root])
    bad = [i for i, p in enumerate(corpus.files) if p.name == "broken.wav"][0]
    ds = CropDataset(corpus, 20, frontend="m2d-16k", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = ds[(0, bad)]["lms"]
    assert item.shape == (80, 20) and torch.isfinite(item).all()
    assert any("broken.wav" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = CropDataset(corpus, 20, frontend="m2d-16k", seed=0)[(0, bad)]["lms"]
    assert torch.equal(item, again)  # the replacement is deterministic
    only_bad = Corpus("audio", [root / "broken.wav"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="failed to load"):
            CropDataset(only_bad, 20, frontend="m2d-16k")[(0, 0)]


# ------------------------------------------------------------------------------------------ statistics
def test_norm_stats_estimate(tmp_path):
    corpus = resolve_corpus([_cache(tmp_path / "c", [40] * 6)])
    ds = CropDataset(corpus, 32, seed=0)
    stats = estimate_norm_stats(ds, n_samples=50, seed=0)
    assert stats == estimate_norm_stats(ds, n_samples=50, seed=0)
    assert abs(stats.mean - -6.0) < 0.2 and abs(stats.std - 3.0) < 0.2
    assert stats != estimate_norm_stats(ds, n_samples=50, seed=1)


def test_device_front_end_matches_worker_front_end(tmp_path):
    corpus = _audio_corpus(tmp_path / "wav", n=2)
    stats = NormStats(-7.0, 4.0)
    on_worker = CropDataset(corpus, 60, frontend="m2d-16k", seed=2, norm_stats=stats)
    waves = CropDataset(corpus, 60, frontend="m2d-16k", seed=2, output="wave")
    batch = {"wave": torch.stack([waves[(0, i)]["wave"] for i in range(2)])}
    out = DeviceLogMel(get_preset("m2d-16k"), 60, stats)(batch)["lms"]
    ref = torch.stack([on_worker[(0, i)]["lms"] for i in range(2)])
    assert out.shape == ref.shape == (2, 80, 60)
    assert torch.allclose(out, ref, atol=1e-4)
