"""`auto` run-length settings: the official M2D EMA schedule / BYOL-A lr for long runs, short-run ones otherwise."""

from __future__ import annotations

from kikimimi.commands.pretrain import (
    OFFICIAL_EMA_TAUS,
    SHORT_RUN_BYOLA_LR,
    SHORT_RUN_EMA_TAUS,
    planned_steps,
    resolve_byola_lr,
    resolve_ema_taus,
    resolve_settings,
)
from kikimimi.methods.byola import OFFICIAL_LR

OFFICIAL_BYOLA_LR = {"byola": OFFICIAL_LR[1], "byola2": OFFICIAL_LR[2]}


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


def test_byola_lr_auto_short_runs_use_the_short_run_rate():
    short = resolve_settings({"method": "byola", "data": ["x"], "steps": 640})
    assert short["lr"] == "auto"
    resolve_byola_lr(short, 10_000)
    assert short["lr"] == SHORT_RUN_BYOLA_LR["byola"] != OFFICIAL_BYOLA_LR["byola"]
    assert "640 planned steps" in short["lr_rule"]

    official = resolve_settings({"method": "byola", "data": ["x"], "epochs": 100})  # batch 256, 2M clips
    resolve_byola_lr(official, 2_000_000)
    assert official["lr"] == OFFICIAL_BYOLA_LR["byola"] == 3e-4

    further = resolve_settings({"method": "byola", "data": ["x"], "steps": 10, "init_from": "enc.pth"})
    resolve_byola_lr(further, 100)
    assert further["lr"] == OFFICIAL_BYOLA_LR["byola"]


def test_byola_lr_auto_keeps_explicit_rates_and_v2():
    explicit = resolve_settings({"method": "byola", "data": ["x"], "steps": 640, "lr": 5e-4})
    resolve_byola_lr(explicit, 10_000)
    assert explicit["lr"] == 5e-4 and "lr_rule" not in explicit
    v2 = resolve_settings({"method": "byola2", "data": ["x"], "steps": 640})
    resolve_byola_lr(v2, 10_000)
    assert v2["lr"] == OFFICIAL_BYOLA_LR["byola2"] == 1e-4
