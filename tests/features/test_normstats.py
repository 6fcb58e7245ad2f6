"""NormStats arithmetic and compute_norm_stats on data with known statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kikimimi.features.normstats import M2D_DEFAULT, NormStats, compute_norm_stats, crop_or_pad_frames


def test_default_and_roundtrips():
    assert M2D_DEFAULT.to_list() == [-7.1, 4.2]
    stats = NormStats(-7.261779308319092, 4.3511505126953125)
    assert NormStats.from_list(stats.to_list()) == stats
    t = stats.to_tensor()
    assert t.dtype == torch.float32 and t.shape == (2,)
    assert NormStats.from_list(t).mean == pytest.approx(stats.mean, abs=1e-6)
    assert NormStats.from_list(np.array([[1.0, 2.0]])) == NormStats(1.0, 2.0)
    with pytest.raises(ValueError, match="2 values"):
        NormStats.from_list([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="std > 0"):
        NormStats(0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        NormStats(float("nan"), 1.0)


def test_normalize_numpy_and_torch():
    stats = NormStats(-7.1, 4.2)
    x = np.array([[-7.1, -2.9, -15.5]], dtype=np.float32)
    np.testing.assert_allclose(stats.normalize(x), [[0.0, 1.0, -2.0]], atol=1e-6)
    np.testing.assert_allclose(stats.denormalize(stats.normalize(x)), x, atol=1e-5)
    xt = torch.from_numpy(x)
    out = stats.normalize(xt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(stats.denormalize(out), xt)


def test_known_gaussian_data():
    rng = np.random.default_rng(0)
    items = [rng.normal(-6.0, 3.0, size=(8, int(n))).astype(np.float32) for n in rng.integers(50, 80, 40)]
    stats = compute_norm_stats(items, crop_frames=32, n_samples=200, seed=1)
    assert stats.mean == pytest.approx(-6.0, abs=0.05)
    assert stats.std == pytest.approx(3.0, abs=0.05)


def test_exact_on_constant_blocks_with_padding():
    # Two items, each a constant, long enough to never be padded: with many draws the mean is the
    # average of the constants and the std is half their distance.
    items = [np.full((4, 10), -10.0), np.full((4, 10), -4.0)]
    stats = compute_norm_stats(items, crop_frames=10, n_samples=4000, seed=0)
    assert stats.mean == pytest.approx(-7.0, abs=0.2)
    assert stats.std == pytest.approx(3.0, abs=0.05)
    # One item shorter than the crop: half of every crop is the 0 padding (log domain, not silence).
    padded = compute_norm_stats([np.full((4, 5), -8.0)], crop_frames=10, n_samples=3)
    assert padded.mean == pytest.approx(-4.0)
    assert padded.std == pytest.approx(4.0)


def test_draws_without_replacement_when_enough_items():
    # 5 items, 5 draws: every item used exactly once, so the result equals the plain pooled statistics.
    rng = np.random.default_rng(3)
    items = [rng.normal(i, 1.0 + i, size=(3, 7)) for i in range(5)]
    pooled = np.concatenate([x.ravel() for x in items])
    stats = compute_norm_stats(items, crop_frames=7, n_samples=5, seed=9)
    assert stats.mean == pytest.approx(pooled.mean(), rel=1e-9)
    assert stats.std == pytest.approx(pooled.std(), rel=1e-9)


def test_seeded_and_accepts_generators():
    rng = np.random.default_rng(4)
    items = [rng.normal(0, 1, size=(5, 40)) for _ in range(6)]
    a = compute_norm_stats(items, crop_frames=12, n_samples=50, seed=5)
    b = compute_norm_stats((x for x in items), crop_frames=12, n_samples=50, seed=5)
    c = compute_norm_stats(items, crop_frames=12, n_samples=50, seed=6)
    assert a == b
    assert a != c


def test_crop_or_pad():
    rng = np.random.default_rng(0)
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    starts = set()
    for _ in range(200):
        crop = crop_or_pad_frames(x, 4, rng)
        assert crop.shape == (2, 4)
        starts.add(int(crop[0, 0]))
        np.testing.assert_array_equal(crop, x[:, crop[0, 0].astype(int) : crop[0, 0].astype(int) + 4])
    assert starts == set(range(7))  # every start 0..T-crop is reachable
    padded = crop_or_pad_frames(x, 13, rng)
    assert padded.shape == (2, 13)
    np.testing.assert_array_equal(padded[:, :10], x)
    assert (padded[:, 10:] == 0).all()


def test_errors_are_actionable():
    with pytest.raises(ValueError, match="no log-mel arrays"):
        compute_norm_stats([], crop_frames=10)
    with pytest.raises(ValueError, match="mel bins"):
        compute_norm_stats([np.zeros((4, 10)), np.ones((5, 10))], crop_frames=10, n_samples=20)
    with pytest.raises(ValueError, match="zero spread"):
        compute_norm_stats([np.full((4, 10), -15.942)], crop_frames=10, n_samples=3)
    with pytest.raises(ValueError, match=r"\[F, T\]"):
        compute_norm_stats([np.zeros(10)], crop_frames=10, n_samples=1)
