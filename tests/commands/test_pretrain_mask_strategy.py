"""`kikimimi pretrain --mask-strategy` (docs/masking.md): a tiny run records the strategy and the hint schedule in
its config.json; strategies and hint flags of another method are refused in one line."""

from __future__ import annotations

import json

import pytest

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main
from kikimimi.training.pretrain import _resume_step, _run_length
from kikimimi.training.settings import resolve_settings


def test_tiny_pretrain_records_the_mask_strategy(tmp_path) -> None:
    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    argv = ["pretrain", "--method", "m2d", "--size", "tiny", "--input-frames", "64", "--data", str(tmp_path / "audio"),
            "--out", str(tmp_path / "runs"), "--steps", "2", "--batch-size", "2", "--device", "cpu",
            "--norm-samples", "4", "--min-epoch-size", "4", "--no-progress", "--mask-strategy", "dwm",
            "--hint-start-epoch", "0", "--hint-k", "4"]  # fmt: skip
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["mask_strategy"], cfg["hint_start_epoch"], cfg["hint_k"], cfg["hint_ratio"]) == ("dwm", 0, 4.0, None)
    assert cfg["method_config"]["mask_strategy"] == "dwm" and cfg["method_config"]["hint_k"] == 4.0


def test_defaults_and_refusals(tmp_path) -> None:
    base = {"data": [str(tmp_path)], "recipe": "official", "device": "cpu"}
    s = resolve_settings({**base, "method": "m2d"})
    assert (s.mask_strategy, s.hint_start_epoch, s.hint_k, s.hint_ratio) == ("random", 50, 2.0, None)
    assert (
        resolve_settings({**base, "method": "m2d2_stage1", "captions": "c.npy", "mask_strategy": "sgim"}).mask_strategy
        == "sgim"
    )
    with pytest.raises(ValueError, match="'mask_strategy' of --method m2d must be one of random, dwm"):
        resolve_settings({**base, "method": "m2d", "mask_strategy": "structured"})
    with pytest.raises(ValueError, match="'mask_strategy' of --method byola must be unset"):
        resolve_settings({**base, "method": "byola", "mask_strategy": "dwm"})
    with pytest.raises(ValueError, match="--hint-k is a setting of the M2D masking strategies"):
        resolve_settings({**base, "method": "byola", "hint_k": 1.0})


def test_run_length_is_the_trainers_clock(tmp_path) -> None:
    base = {"data": [str(tmp_path)], "method": "m2d", "device": "cpu", "batch_size": 10}
    assert _run_length(resolve_settings({**base, "steps": 25}), 100, 1) == (2.5, 25)  # 10 steps per epoch
    assert _run_length(resolve_settings({**base, "epochs": 3}), 100, 1) == (3.0, 30)
    assert _resume_step(str(tmp_path / "checkpoint-40.pth")) == 40 and _resume_step(None) == 0
