"""The IJCNN 2026 masking strategies wired into M2D (``mask_strategy``, the hint schedule; docs/masking.md): each
strategy draws its mask with its own function of kikimimi.methods.masking (whose defining properties
test_masking_strategies.py checks), keeps int(L(1 − r)) visible, and the hint ratio follows the official schedule."""

from __future__ import annotations

import pytest
import torch

from kikimimi.methods.m2d import M2D, MASK_STRATEGIES
from kikimimi.methods.m2d_clap import M2DCLAP
from kikimimi.methods.masking import (
    dispersion_masking,
    inverse_block_masking,
    object_centric_masking,
    random_masking,
)

INPUT = (80, 64)  # 5 × 4 patch grid of 16 × 16
L = 20
KEEP = int(L * (1 - 0.7))  # 6


def _tiny(strategy: str, **kw) -> M2D:
    torch.manual_seed(0)
    return M2D("tiny", input_size=INPUT, mask_strategy=strategy, **kw)


def _inputs(model: M2D):
    g = torch.Generator().manual_seed(5)
    lms = torch.randn(3, *INPUT, generator=g)
    lms[:, :, 32:] = 0.0  # flat right half: no dispersion
    return lms, model.encoder.patchify_tokens(lms.unsqueeze(1)).detach()


@pytest.mark.parametrize("strategy", MASK_STRATEGIES)
def test_each_strategy_draws_with_its_own_masking_function(strategy: str) -> None:
    model = _tiny(strategy, hint_ratio=0.0)  # constant h = 0: the informed choice itself
    lms, tokens = _inputs(model)
    model.set_generator(torch.Generator().manual_seed(11))
    ids = model.draw_mask(lms, tokens)
    g = torch.Generator().manual_seed(11)
    if strategy == "random":
        want = random_masking(3, L, 0.7, generator=g)
    elif strategy in ("dwm", "var"):
        want = dispersion_masking(lms, (16, 16), 0.7, kind="mad" if strategy == "dwm" else "var", h=0.0, generator=g)
    elif strategy == "ibm":
        want = inverse_block_masking(3, (5, 4), 0.7, h=0.0, generator=g)
    else:
        with torch.no_grad():
            x = torch.cat([model._cls(3), tokens], 1)
            for blk in model.encoder.blocks:
                x = blk(x)
        want = object_centric_masking(model.encoder.norm(x)[:, 1:], 0.7, h=0.0, generator=g)
    assert torch.equal(ids.visible, want.visible) and torch.equal(ids.masked, want.masked)
    assert ids.visible.shape == (3, KEEP)
    if strategy in ("dwm", "var"):  # the 10 flat patches (weight 1e-12) are masked only after the 10 dispersed ones
        flat = {f * 4 + t for f in range(5) for t in (2, 3)}
        assert all(sum(int(i) in flat for i in row) == (L - KEEP) - 10 for row in ids.masked)
    loss = model({"lms": lms})["loss"]  # a whole training step runs with it
    assert torch.isfinite(loss)


def test_hint_schedule_follows_the_official_rule() -> None:
    model = _tiny("dwm")
    assert (model.hint_start_epoch, model.hint_k, model.hint_ratio) == (50, 2.0, None)  # official defaults
    model.set_schedule(300, 3000)  # 10 steps per epoch
    assert model.hint == 1.0
    model.set_progress(499)
    assert model.hint == 1.0  # epoch 49 < 50: plain random masking
    model.set_progress(1500)
    assert model.hint == pytest.approx(1 - 0.5**2)  # epoch 150 of 300
    model.on_after_step(2990, 3000)
    assert model.hint == pytest.approx(1 - (299 / 300) ** 2)
    k4 = _tiny("ibm", hint_k=4.0, hint_start_epoch=0)
    k4.set_schedule(2.5, 50, start_step=25)  # a run given in steps: 2.5 epochs of 20 steps, resumed at step 25
    assert k4.hint == pytest.approx(1 - (1 / 2.5) ** 4)
    const = _tiny("sgim", hint_ratio=0.5)
    const.set_schedule(300, 3000, start_step=10)
    assert const.hint == 0.5
    # h = 1 is plain random masking for every informed strategy
    ones = _tiny("var", hint_ratio=1.0)
    lms, tokens = _inputs(ones)
    ones.set_generator(torch.Generator().manual_seed(2))
    got = ones.draw_mask(lms, tokens)
    assert torch.equal(got.visible, random_masking(3, L, 0.7, generator=torch.Generator().manual_seed(2)).visible)


def test_strategy_is_recorded_and_rebuilt_and_checked() -> None:
    model = _tiny("ibm", hint_k=4.0)
    cfg = model.config_dict()
    assert (cfg["mask_strategy"], cfg["hint_start_epoch"], cfg["hint_k"], cfg["hint_ratio"]) == ("ibm", 50, 4.0, None)
    clap = M2DCLAP("tiny", input_size=INPUT, mask_strategy="sgim", sem_mode=1)
    assert clap.config_dict()["mask_strategy"] == "sgim"
    assert "mask_strategy" not in "".join(model.export_official_state_dict())  # the official layout is unchanged
    with pytest.raises(ValueError, match="mask_strategy must be one of"):
        _tiny("structured")
