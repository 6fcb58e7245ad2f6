"""`--ema-taus auto`: the official M2D EMA schedule for long runs, the short-run one otherwise."""

from __future__ import annotations

from kikimimi.commands.pretrain import (
    OFFICIAL_EMA_TAUS,
    SHORT_RUN_EMA_TAUS,
    planned_steps,
    resolve_ema_taus,
    resolve_settings,
)


def test_planned_steps_from_steps_or_epochs():
    assert planned_steps({"steps": 1234, "epochs": None, "batch_size": 8}, 10_000) == 1234
    # 2M clips, batch 512 per GPU on 4 GPUs, 300 epochs: the official run (~293k steps)
    s = {"steps": None, "epochs": 300, "batch_size": 512, "accum_iter": 1}
    assert planned_steps(s, 2_000_000, world_size=4) == 300 * (500_000 // 512)
    assert planned_steps({**s, "accum_iter": 2}, 2_000_000, world_size=4) == 300 * (500_000 // 512) // 2


def test_auto_picks_the_schedule_by_run_length():
    official = resolve_settings({"method": "m2d", "data": ["x"], "epochs": 300})
    assert official["ema_taus"] == "auto"
    resolve_ema_taus(official, 2_000_000, world_size=4)
    assert tuple(official["ema_taus"]) == OFFICIAL_EMA_TAUS and "auto" in official["ema_taus_rule"]

    short = resolve_settings({"method": "m2d", "data": ["x"], "steps": 2000})
    resolve_ema_taus(short, 10_000)
    assert tuple(short["ema_taus"]) == SHORT_RUN_EMA_TAUS

    explicit = resolve_settings({"method": "m2d", "data": ["x"], "steps": 2000, "ema_taus": [0.9, 0.95]})
    resolve_ema_taus(explicit, 10_000)
    assert explicit["ema_taus"] == [0.9, 0.95] and "ema_taus_rule" not in explicit


def test_further_pretraining_keeps_the_official_schedule():
    s = resolve_settings({"method": "m2d", "data": ["x"], "steps": 10, "init_from": "checkpoint-300.pth"})
    resolve_ema_taus(s, 100)
    assert tuple(s["ema_taus"]) == OFFICIAL_EMA_TAUS and "--init-from" in s["ema_taus_rule"]
