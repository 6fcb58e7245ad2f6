"""The informed masking strategies of NTT's IJCNN 2026 paper (fact-sheet-m2d2-2026.md §5), each on its defining
property: visible counts, dispersion weights, cluster scores, block shapes, the hint swap and its schedule."""

from __future__ import annotations

import pytest
import torch

from kikimimi.methods.masking import (
    dispersion_masking,
    hint_ratio,
    hint_swap,
    inverse_block_masking,
    object_centric_masking,
    patch_dispersion,
    random_masking,
)

GRID = (5, 38)  # 80 x 608 with 16 x 16 patches
L = GRID[0] * GRID[1]
KEEP = int(L * (1 - 0.7))  # 57


def _check(ids, keep: int = KEEP, n: int = L) -> None:
    assert ids.visible.shape[1] == keep and ids.masked.shape[1] == n - keep
    full = torch.cat([ids.visible, ids.masked], 1).gather(1, ids.restore)
    assert torch.equal(full, torch.arange(n).expand(ids.visible.shape[0], -1))


def test_hint_ratio_schedule_values() -> None:
    assert hint_ratio(0, 300) == 1.0 and hint_ratio(49, 300) == 1.0  # before --masking_start_epoch 50
    assert hint_ratio(150, 300) == pytest.approx(0.75)  # 1 - (150/300)^2
    assert hint_ratio(150, 300, k=1) == pytest.approx(0.5) and hint_ratio(150, 300, k=8) == pytest.approx(1 - 0.5**8)
    assert hint_ratio(10, 300, absolute=0.5) == 0.5 and hint_ratio(299, 300, absolute=0.0) == 0.0


def test_patch_dispersion_is_per_patch_mad_or_variance() -> None:
    lms = torch.zeros(1, 32, 32)
    lms[0, :16, 16:] = torch.arange(256.0).reshape(16, 16) % 2  # patch (0, 1): half 0, half 1
    mad, var = patch_dispersion(lms, (16, 16), "mad"), patch_dispersion(lms, (16, 16), "var")
    assert mad.tolist() == [[0.0, 0.5, 0.0, 0.0]] and var.tolist() == [[0.0, 0.25, 0.0, 0.0]]


def test_dispersion_masking_masks_dispersed_patches() -> None:
    g = torch.Generator().manual_seed(0)
    lms = torch.zeros(4, 80, 608)
    lms[:, :, :304] = torch.randn(4, 80, 304, generator=g)  # the left 19 columns vary, the right ones are flat
    ids = dispersion_masking(lms, (16, 16), 0.7, generator=g)
    _check(ids)
    flat = {f * 38 + t for f in range(5) for t in range(19, 38)}  # weight 1e-12: drawn only when nothing else is left
    n_flat_masked = sum(int(i) in flat for i in ids.masked.flatten())
    assert n_flat_masked == 4 * (L - KEEP - 95)  # 95 dispersed patches, all masked first
    det = dispersion_masking(lms, (16, 16), 0.7, deterministic=True, kind="var", generator=g)
    _check(det)
    # the hint swap keeps the count; h = 1 is plain random masking
    _check(dispersion_masking(lms, (16, 16), 0.7, h=0.5, generator=g))
    _check(dispersion_masking(lms, (16, 16), 0.7, h=1.0, generator=g))


def test_hint_swap_reveals_and_remasks_the_same_number() -> None:
    g = torch.Generator().manual_seed(1)
    masked = torch.zeros(3, L, dtype=torch.bool)
    masked[:, : L - KEEP] = True
    for h in (0.0, 0.3, 0.9):
        out = hint_swap(masked, h, generator=g)
        assert (out.sum(1) == L - KEEP).all()
        kept = (out & masked).sum(1)
        assert (kept >= (L - KEEP) - int((L - KEEP) * h)).all()  # at most int(M·h) informed patches revealed
    assert torch.equal(hint_swap(masked, 0.0, generator=g), masked)


def test_object_centric_masking_masks_the_outliers() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    feats = torch.stack([a] * 90 + [b] * 90 + [torch.randn(64, generator=g) for _ in range(10)])[None]
    feats = feats + 0.01 * torch.randn(feats.shape, generator=g)
    ids = object_centric_masking(feats, 0.05, generator=g)  # mask 190 - int(190 · 0.95) = 10 patches
    _check(ids, keep=int(L * 0.95))
    assert set(ids.masked[0].tolist()) == set(range(180, 190))  # the ten that fit neither cluster


def test_inverse_block_masking_visible_blocks() -> None:
    g = torch.Generator().manual_seed(3)
    ids = inverse_block_masking(8, GRID, 0.7, generator=g)
    _check(ids)
    vis = torch.zeros(8, L, dtype=torch.bool).scatter_(1, ids.visible, True).reshape(8, *GRID)
    # the visible patches come in blocks (2 centres × 5 × 5 here, topped up at random to 57): most have a visible
    # vertical neighbour, far more than under random masking
    neighbour = torch.zeros_like(vis)
    neighbour[:, 1:] |= vis[:, :-1]
    neighbour[:, :-1] |= vis[:, 1:]
    share = (vis & neighbour).sum() / vis.sum()
    rand = random_masking(8, L, 0.7, generator=g)
    rvis = torch.zeros(8, L, dtype=torch.bool).scatter_(1, rand.visible, True).reshape(8, *GRID)
    rneigh = torch.zeros_like(rvis)
    rneigh[:, 1:] |= rvis[:, :-1]
    rneigh[:, :-1] |= rvis[:, 1:]
    random_share = (rvis & rneigh).sum() / rvis.sum()  # about 1 - 0.7² ≈ 0.5
    assert share > 0.7 and share > random_share + 0.15
    _check(inverse_block_masking(2, GRID, 0.7, h=1.0, generator=g))
