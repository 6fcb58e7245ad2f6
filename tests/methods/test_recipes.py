"""Named pre-training recipes (`--recipe official|cpu-small|auto`) and the run-time estimate."""

from __future__ import annotations

import json

import pytest

from kikimimi.methods.recipes import (
    COMMON_DEFAULTS,
    CPU_SMALL_OVERRIDES,
    METHOD_DEFAULTS,
    choose_recipe,
    recipe_defaults,
)
from kikimimi.training.settings import resolve_settings
from kikimimi.training.trainer import LONG_CPU_RUN_S, estimate_line


def test_auto_chooses_by_device_and_says_why():
    assert choose_recipe("auto", "cuda")[0] == "official"
    name, why = choose_recipe(None, "cpu")
    assert name == "cpu-small" and "no CUDA" in why and "--recipe official" in why
    assert choose_recipe("official", "cpu") == ("official", "chosen with --recipe")
    with pytest.raises(ValueError, match="--recipe must be one of auto, official, cpu-small"):
        choose_recipe("fast", "cpu")


def test_every_method_has_a_cpu_small_recipe_that_changes_its_length_and_batch():
    assert set(CPU_SMALL_OVERRIDES) == set(METHOD_DEFAULTS)
    for method in METHOD_DEFAULTS:
        small, official = recipe_defaults(method, "cpu-small"), recipe_defaults(method, "official")
        assert official == {**COMMON_DEFAULTS, **METHOD_DEFAULTS[method]}
        assert small["steps"] is not None and small["epochs"] is None
        assert small["batch_size"] < official["batch_size"]


def test_a_cpu_run_without_tuning_flags_gets_cpu_small():
    s = resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu"})
    assert s.recipe == "cpu-small" and "no CUDA" in s.decisions.recipe_rule
    assert (s.size, s.input_frames, s.batch_size, s.steps, s.lr) == ("tiny", 208, 64, 2000, 5e-4)
    assert s.epochs is None and s.blr is None
    assert s.warmup_steps == round(20 / 300 * 2000)  # the official warm-up fraction of the run

    clap = resolve_settings({"method": "m2d_clap", "data": ["x"], "device": "cpu", "captions": "c.npz"})
    assert clap.clap_weight == 1.0
    official = resolve_settings({"method": "m2d_clap", "data": ["x"], "device": "cpu", "captions": "c.npz",
                                 "recipe": "official"})
    assert (official.clap_weight, official.batch_size, official.epochs) == (0.01, 512, 300)


def test_flags_and_settings_files_override_the_recipe(tmp_path):
    s = resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu", "batch_size": 8, "blr": 1e-2,
                          "epochs": 3})
    assert (s.batch_size, s.blr, s.lr, s.epochs, s.steps) == (8, 1e-2, None, 3, None)
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps({"steps": 7, "size": "small"}))
    s = resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu", "config": str(cfg)})
    assert (s.steps, s.size, s.batch_size) == (7, "small", 64)


def test_estimate_line_warns_only_for_long_cpu_runs():
    short = estimate_line(0.5, 3, 100, "cpu")
    assert "0.50 s per step" in short and "remaining 97 of 100 steps" in short and "warning" not in short
    long_cpu = estimate_line(52.0, 3, 2003, "cpu")
    assert 52.0 * 2000 > LONG_CPU_RUN_S and "warning" in long_cpu and "--recipe cpu-small" in long_cpu
    assert "warning" not in estimate_line(52.0, 3, 2003, "cuda")


def test_pretrain_prints_its_run_folder_recipe_and_estimate(tmp_path, capsys):
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp"))
    code = main(["pretrain", "--method", "byola", "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"),
                 "--steps", "5", "--batch-size", "2", "--byola-dim", "64", "--norm-samples", "8",
                 "--min-epoch-size", "4", "--no-progress", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "runs").iterdir())
    assert f"run folder: {run_dir}" in out
    assert "recipe cpu-small (auto: no CUDA device" in out
    assert "s per step" in out and "remaining 2 of 5 steps" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"] == "cpu-small"
    # saved periodically by default (a tenth of the run, at least every step here), only the newest kept
    assert (config["save_every"], config["keep_checkpoints"]) == (1, 1)
    assert "auto" in config["decisions"]["save_every_rule"]
    assert sorted(p.name for p in run_dir.glob("checkpoint-*.pth")) == ["checkpoint-5.pth"]


def test_save_every_auto_is_a_tenth_of_the_run_and_explicit_values_stay():
    from kikimimi.methods.recipes import auto_save_every

    s = resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu", "steps": 2000})
    assert (s.save_every, s.keep_checkpoints) == ("auto", None)
    changes, why = auto_save_every(s, 10_000)
    assert changes == {"save_every": 200, "keep_checkpoints": 1} and "every 200 steps" in why["save_every_rule"]
    assert auto_save_every(s.updated(save_every=7), 10_000) == ({}, {})


def test_a_warm_up_as_long_as_the_run_is_warned_about(tmp_path):
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone",))
    with pytest.warns(UserWarning, match=r"warm-up \(10 steps\) is as long as the run \(3 steps\)"):
        main(["pretrain", "--method", "byola", "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"),
              "--steps", "3", "--warmup-steps", "10", "--batch-size", "2", "--byola-dim", "64", "--norm-samples", "4",
              "--min-epoch-size", "4", "--no-progress", "--device", "cpu"])


def test_open_m2d_tiny_recipe_resolves_from_the_command_line_to_its_documented_values(tmp_path):
    """`kikimimi pretrain --recipe open-m2d-tiny` (benchmarks/open_suite/README.md, "Open models: recipe search")."""
    import argparse

    from kikimimi.commands import pretrain as command
    from kikimimi.methods.recipes import RECIPES
    from kikimimi.training.settings import PretrainSettings

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--recipe", "open-m2d-tiny", "--data", str(tmp_path / "cache"), "--device", "cpu"])
    s = resolve_settings({k: v for k, v in vars(args).items() if k in PretrainSettings.names()})
    assert (s.recipe, s.method, s.size, s.input_frames, s.batch_size, s.lr, s.blr) == (
        "open-m2d-tiny", "m2d", "tiny", 208, 64, 5e-4, None)
    assert (s.mask_ratio, s.steps, s.epochs, s.warmup_steps) == (0.7, 7_500, None, round(20 / 300 * 7_500))
    assert (s.norm_samples, s.save_every, s.keep_checkpoints, s.ema_taus) == (10_000, 250, None, "auto")
    assert "recipe search" in RECIPES["open-m2d-tiny"].source
