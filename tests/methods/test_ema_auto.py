"""`auto` run-length settings: the official M2D EMA schedule / BYOL-A MLP lr scale for long runs,
short-run ones otherwise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kikimimi.methods.byola import OFFICIAL_LR
from kikimimi.methods.recipes import (
    OFFICIAL_EMA_TAUS,
    SHORT_RUN_BYOLA_MLP_LR_SCALE,
    SHORT_RUN_EMA_TAUS,
    auto_byola,
    auto_ema_taus,
    planned_steps,
)
from kikimimi.training.settings import resolve_settings

OFFICIAL_BYOLA_LR = {"byola": OFFICIAL_LR[1], "byola2": OFFICIAL_LR[2]}


def _applied(rule, settings, *args, **kwargs):
    """``(settings with the rule's values, the rule lines)``: what the run does with a rule's answer."""
    changes, why = rule(settings, *args, **kwargs)
    return settings.updated(**changes), why


def test_planned_steps_from_steps_or_epochs():
    assert planned_steps(SimpleNamespace(steps=1234, epochs=None, batch_size=8), 10_000) == 1234
    # 2M clips, batch 512 per GPU on 4 GPUs, 300 epochs: the official run (~293k steps)
    s = dict(steps=None, epochs=300, batch_size=512, accum_iter=1)
    assert planned_steps(SimpleNamespace(**s), 2_000_000, world_size=4) == 300 * (500_000 // 512)
    accum2 = SimpleNamespace(**{**s, "accum_iter": 2})
    assert planned_steps(accum2, 2_000_000, world_size=4) == 300 * (500_000 // 512) // 2


def test_auto_picks_the_schedule_by_run_length():
    official = resolve_settings({"method": "m2d", "data": ["x"], "epochs": 300})
    assert official.ema_taus == "auto"
    official, why = _applied(auto_ema_taus, official, 2_000_000, world_size=4)
    assert tuple(official.ema_taus) == OFFICIAL_EMA_TAUS and "auto" in why["ema_taus_rule"]

    short = resolve_settings({"method": "m2d", "data": ["x"], "steps": 2000})
    short, _ = _applied(auto_ema_taus, short, 10_000)
    assert tuple(short.ema_taus) == SHORT_RUN_EMA_TAUS

    explicit = resolve_settings({"method": "m2d", "data": ["x"], "steps": 2000, "ema_taus": [0.9, 0.95]})
    explicit, why = _applied(auto_ema_taus, explicit, 10_000)
    assert explicit.ema_taus == [0.9, 0.95] and "ema_taus_rule" not in why


def test_further_pretraining_keeps_the_official_schedule():
    s = resolve_settings({"method": "m2d", "data": ["x"], "steps": 10, "init_from": "checkpoint-300.pth"})
    s, why = _applied(auto_ema_taus, s, 100)
    assert tuple(s.ema_taus) == OFFICIAL_EMA_TAUS and "--init-from" in why["ema_taus_rule"]


def test_byola_lr_defaults_to_the_official_rate_per_version():
    for method, official_lr in (("byola", 3e-4), ("byola2", 1e-4)):
        for run in ({"steps": 640}, {"epochs": 100}, {"steps": 10, "init_from": "enc.pth"}):
            s = resolve_settings({"method": method, "data": ["x"], **run})
            assert s.lr is None
            s, _ = _applied(auto_byola, s, 2_000_000)
            assert s.lr == OFFICIAL_BYOLA_LR[method] == official_lr
    explicit = resolve_settings({"method": "byola", "data": ["x"], "steps": 640, "lr": 5e-4})
    explicit, _ = _applied(auto_byola, explicit, 10_000)
    assert explicit.lr == 5e-4


def test_byola_mlp_lr_scale_auto_by_run_length():
    short = resolve_settings({"method": "byola", "data": ["x"], "steps": 640})
    assert short.mlp_lr_scale == "auto"
    short, why = _applied(auto_byola, short, 10_000)
    assert short.mlp_lr_scale == SHORT_RUN_BYOLA_MLP_LR_SCALE["byola"] != 1.0
    assert "640 planned steps" in why["mlp_lr_scale_rule"]
    v2, _ = _applied(auto_byola, resolve_settings({"method": "byola2", "data": ["x"], "steps": 640}), 10_000)
    assert v2.mlp_lr_scale == 1.0  # v2's output includes the conv features; no short-run scale
    for official in (resolve_settings({"method": "byola", "data": ["x"], "epochs": 100}),
                     resolve_settings({"method": "byola", "data": ["x"], "steps": 10, "init_from": "enc.pth"})):
        official, _ = _applied(auto_byola, official, 2_000_000)
        assert official.mlp_lr_scale == 1.0
    explicit = resolve_settings({"method": "byola", "data": ["x"], "steps": 640, "mlp_lr_scale": 0.5})
    explicit, why = _applied(auto_byola, explicit, 10_000)
    assert explicit.mlp_lr_scale == 0.5 and "mlp_lr_scale_rule" not in why


def test_mlp_lr_scale_is_a_byola_setting():
    with pytest.raises(ValueError, match="--mlp-lr-scale is a BYOL-A setting"):
        resolve_settings({"method": "m2d", "data": ["x"], "steps": 10, "mlp_lr_scale": 0.0})
