"""Tests of the BYOL-A augmentation blocks (kikimimi.features.augment)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kikimimi.features.augment import (
    BYOLAAugment,
    MixupFIFO,
    RandomLinearFader,
    RandomResizeCrop,
    post_normalize,
)
from kikimimi.features.frontend import FLOAT32_EPS


def _item(seed: int, f: int = 16, t: int = 24) -> torch.Tensor:
    return torch.randn(f, t, generator=torch.Generator().manual_seed(seed))


def test_mixup_first_call_is_identity_and_fills_bank() -> None:
    mix = MixupFIFO(ratio=0.4, n_memory=4)
    x = _item(0)
    out = mix(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    assert mix.last_lambda is None
    assert len(mix.bank) == 1 and torch.equal(mix.bank[0], x)


def test_mixup_lambda_range_and_formula() -> None:
    mix = MixupFIFO(ratio=0.4, n_memory=1)
    g = torch.Generator().manual_seed(1)
    z = _item(1)
    mix(z, g)  # bank = [z]
    lams = []
    for k in range(200):
        x = _item(100 + k)
        out = mix(x, g)
        lam = mix.last_lambda
        assert lam is not None
        lams.append(lam)
        # with n_memory=1 the background is always the previous input
        expected = torch.log((1 - lam) * torch.exp(x) + lam * torch.exp(z) + FLOAT32_EPS)
        torch.testing.assert_close(out, expected)
        z = x
    assert min(lams) >= 0.0 and max(lams) <= 0.4
    assert max(lams) > 0.3 and min(lams) < 0.1  # spread over the range, not a constant


def test_mixup_bank_fifo_order() -> None:
    mix = MixupFIFO(ratio=0.2, n_memory=3)
    g = torch.Generator().manual_seed(2)
    items = [_item(10 + k) for k in range(5)]
    for k, x in enumerate(items):
        mix(x, g)
        assert len(mix.bank) == min(k + 1, 3)
        assert torch.equal(mix.bank[-1], x)  # each item appended at the end
    # oldest dropped: items 2, 3, 4 remain in order
    for stored, orig in zip(mix.bank, items[2:], strict=True):
        assert torch.equal(stored, orig)


def test_mixup_update_false_keeps_bank() -> None:
    mix = MixupFIFO(ratio=0.2, n_memory=3)
    mix(_item(0))
    mix(_item(1), update=False)
    assert len(mix.bank) == 1


def test_mixup_bank_state_roundtrip() -> None:
    mix = MixupFIFO(ratio=0.2, n_memory=8)
    for k in range(5):
        mix(_item(k))
    sd = mix.state_dict()
    other = MixupFIFO(ratio=0.2, n_memory=8)
    other.load_state_dict(sd)
    assert len(other.bank) == 5
    for a, b in zip(mix.bank, other.bank, strict=True):
        assert torch.equal(a, b)


def test_rrc_identity_case() -> None:
    x = _item(3)
    rrc = RandomResizeCrop(virtual_crop_scale=(1.0, 1.0), freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    out = rrc(x, torch.Generator().manual_seed(0))
    assert rrc.last_crop == (0, 0, 16, 24)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_rrc_full_canvas_matches_manual_crop() -> None:
    f, t = 16, 24
    x = _item(4, f, t)
    rrc = RandomResizeCrop()
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        out = rrc(x, g)
        assert out.shape == (f, t)
        i, j, h, w = rrc.last_crop
        assert 1 <= h <= f and 1 <= w <= int(1.5 * t)
        assert int(0.6 * f) - 1 <= h and int(0.6 * t) - 1 <= w
        assert 0 <= i <= f - h and 0 <= j <= int(1.5 * t) - w
        canvas = torch.zeros(f, int(1.5 * t))
        t0 = (int(1.5 * t) - t) // 2
        canvas[:, t0 : t0 + t] = x
        ref = F.interpolate(canvas[i : i + h, j : j + w][None, None], size=(f, t), mode="bicubic", align_corners=True)[
            0, 0
        ]
        torch.testing.assert_close(out, ref)


def test_rrc_crop_sizes_vary() -> None:
    rrc = RandomResizeCrop()
    g = torch.Generator().manual_seed(6)
    sizes = set()
    for _ in range(30):
        rrc(_item(0), g)
        sizes.add(rrc.last_crop[2:])
    assert len(sizes) > 5


def test_linear_fader_ramp() -> None:
    x = _item(7)
    fader = RandomLinearFader(gain=1.0)
    g = torch.Generator().manual_seed(8)
    heads = []
    for _ in range(50):
        out = fader(x, g)
        head, tail = fader.last_ramp
        heads.append(head)
        assert -1.0 <= head <= 1.0 and -1.0 <= tail <= 1.0
        diff = out - x
        # identical ramp in every bin, from head to tail, linear in time
        torch.testing.assert_close(diff, diff[:1].expand_as(diff))
        assert math.isclose(float(diff[0, 0]), head, abs_tol=1e-5)
        assert math.isclose(float(diff[0, -1]), tail, abs_tol=1e-5)
        second = diff[0, 2:] - 2 * diff[0, 1:-1] + diff[0, :-2]
        assert float(second.abs().max()) < 1e-5
    assert min(heads) < -0.5 and max(heads) > 0.5


def test_fader_gain_scales_range() -> None:
    fader = RandomLinearFader(gain=0.1)
    g = torch.Generator().manual_seed(9)
    for _ in range(20):
        fader(_item(0), g)
        assert all(abs(v) <= 0.1 for v in fader.last_ramp)


def test_post_normalize_joint_stats() -> None:
    x = torch.randn(6, 1, 8, 10) * 3 + 5
    y = post_normalize(x)
    assert abs(float(y.mean())) < 1e-5
    assert abs(float(y.std(unbiased=True)) - 1.0) < 1e-5
    const = torch.full((2, 4, 4), 3.0)
    assert torch.isfinite(post_normalize(const)).all()


@pytest.mark.parametrize("version", [1, 2])
def test_pipeline_shapes_and_bank(version: int) -> None:
    aug = BYOLAAugment(version=version, n_memory=64)
    assert aug.mixup.ratio == (0.4 if version == 1 else 0.2)
    assert (aug.fader is not None) == (version == 2)
    lms = torch.randn(5, 16, 24, generator=torch.Generator().manual_seed(10))
    a, b = aug(lms, torch.Generator().manual_seed(11))
    assert a.shape == lms.shape and b.shape == lms.shape
    both = torch.cat([a, b])
    assert abs(float(both.mean())) < 1e-4
    assert abs(float(both.std()) - 1.0) < 1e-4
    assert not torch.allclose(a, b)
    assert len(aug.mixup.bank) == 10  # each item appended twice (once per view)
    assert torch.equal(aug.mixup.bank[0], lms[0]) and torch.equal(aug.mixup.bank[1], lms[0])
    assert torch.equal(aug.mixup.bank[-1], lms[-1])


def test_pipeline_deterministic_with_generator() -> None:
    lms = torch.randn(3, 16, 24, generator=torch.Generator().manual_seed(12))
    outs = []
    for _ in range(2):
        aug = BYOLAAugment(version=2)
        aug(lms, torch.Generator().manual_seed(0))
        outs.append(aug(lms, torch.Generator().manual_seed(1)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
