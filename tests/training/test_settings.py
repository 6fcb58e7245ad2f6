"""Typed pre-training settings (kikimimi.training.settings.PretrainSettings): resolved once, validated with one-line
errors, written to config.json as their asdict beside the run's decisions, rebuilt from it; methods that build
themselves; the first run's recipes by name."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from kikimimi.methods import METHODS
from kikimimi.training.settings import PretrainSettings, RunDecisions, resolve_settings

TINY = ["--size", "tiny", "--input-frames", "64", "--batch-size", "2", "--steps", "2", "--device", "cpu",
        "--norm-samples", "8", "--min-epoch-size", "4", "--no-progress", "--log-every", "1"]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_config_json_is_the_settings_asdict_and_reruns_the_same_run(tmp_path) -> None:
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp"))
    runs = tmp_path / "runs"
    assert main(["pretrain", "--method", "m2d", "--data", str(tmp_path / "audio"), "--out", str(runs),
                 "--run-name", "first", *TINY]) == 0
    config = json.loads((runs / "first" / "config.json").read_text())
    settings = PretrainSettings.from_dict(config, source="config.json")
    # the top level is exactly the settings (with what the run decided: statistics, auto values)…
    assert set(config) - set(PretrainSettings.names()) == {"decisions", "method_config", "frontend_preset",
                                                           "train_config"}
    assert asdict(settings) == {k: config[k] for k in PretrainSettings.names()}
    assert settings.ema_taus == [0.999, 0.9999] and settings.save_every == 1 and len(settings.norm_stats) == 2
    # …and the decisions say why, in their own record
    decisions = RunDecisions(**config["decisions"])
    assert "no CUDA device" in decisions.recipe_rule and "2 planned steps" in decisions.ema_taus_rule
    assert decisions.norm_stats == settings.norm_stats and decisions.norm_stats_from == "8 random crops of the corpus"
    assert decisions.epoch_items == 4 and decisions.run_dir == str(runs / "first")

    # the method builds itself from the settings read back: the same architecture and initial weights
    def build() -> torch.nn.Module:
        torch.manual_seed(settings.seed)
        return METHODS[settings.method].from_settings(settings, norm_stats=decisions.norm_stats)

    a, b = build(), build()
    assert a.config_dict() == config["method_config"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    # config.json as --config reruns the run bit for bit (the same seeded losses and weights)
    assert main(["pretrain", "--config", str(runs / "first" / "config.json"), "--run-name", "again"]) == 0
    assert _losses(runs / "again") == _losses(runs / "first") and len(_losses(runs / "first")) == 2
    w1 = torch.load(runs / "first" / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    w2 = torch.load(runs / "again" / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, w2[k]) for k, v in w1.items())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"batch_sise": 8}, r"^settings: unknown setting 'batch_sise'$"),
        ({"batch_size": "8"}, r"^setting 'batch_size': expected int \(or null\), got '8'$"),
        ({"batch_size": True}, r"^setting 'batch_size': expected int"),
        ({"steps": 0}, r"^setting 'steps' must be > 0, got 0$"),
        ({"lr": -1e-3}, r"^setting 'lr' must be >= 0, got -0.001$"),
        ({"amp": "fp8"}, r"^setting 'amp' must be one of auto, bf16, fp16, off; got 'fp8'$"),
        ({"mask_ratio": 1.0}, r"^setting 'mask_ratio' must be in \(0, 1\), got 1.0$"),
        ({"norm_stats": [1.0]}, r"^setting 'norm_stats' must hold 2 values, got \[1.0\]$"),
        ({"ema_taus": "fast"}, r"^setting 'ema_taus': expected a list of float or 'auto' \(or null\), got 'fast'$"),
        ({"patch_size": "16by16"}, r"^--patch-size must look like 16x16, got '16by16'$"),
    ],
)
def test_invalid_settings_are_one_line_errors_naming_the_setting(given, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu", **given})
    assert "\n" not in str(err.value)


def test_an_unknown_key_of_a_settings_file_is_named(tmp_path) -> None:
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"steps": 5, "wamrup_steps": 2}))
    with pytest.raises(ValueError, match=r"^--config file: unknown setting 'wamrup_steps'$"):
        resolve_settings({"method": "m2d", "data": ["x"], "config": str(cfg)})


def test_a_config_json_of_an_earlier_version_still_reads_as_settings(tmp_path) -> None:
    """Earlier runs wrote their decisions, the trainer's fields and global flags among the settings."""
    old = {"method": "m2d", "data": ["x"], "recipe": "cpu-small", "steps": 7, "size": "tiny", "input_frames": 64,
           "patch_size": [16, 16], "ema_taus": [0.999, 0.9999], "norm_stats": [-7.0, 4.0], "save_every": 1,
           "recipe_rule": "auto: no CUDA device", "ema_taus_rule": "auto: …", "save_every_rule": "auto: …",
           "run_dir": "/runs/x", "text_dim": None, "verbose": 0, "num_workers": 0, "out_dir": "/runs/x",
           "method_config": {"method": "m2d"}, "frontend_preset": "m2d-16k"}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(old))
    s = resolve_settings({"config": str(cfg), "device": "cpu"})
    assert (s.method, s.steps, s.size, s.input_frames, s.ema_taus, s.norm_stats) == (
        "m2d", 7, "tiny", 64, [0.999, 0.9999], [-7.0, 4.0])


def test_every_method_builds_itself_from_settings() -> None:
    facts = {"norm_stats": [-7.0, 4.0], "text_dim": 24, "epoch_samples": 8}
    for name, cls in METHODS.items():
        if cls.trains_on_stage1:
            continue  # needs a stage-1 encoder: tests/methods/test_m2d2.py
        given = {"method": name, "data": ["x"], "device": "cpu", "size": "tiny", "input_frames": 64,
                 "byola_dim": 1088 if name == "byola2" else 64}
        if cls.caption_input is not None:
            given["captions"] = "c.safetensors"
        settings = resolve_settings({k: v for k, v in given.items() if k != "byola_dim" or "byola" in name})
        settings = settings.updated(ema_taus=[0.99, 0.999], mlp_lr_scale=None)
        method = cls.from_settings(settings, **facts)
        assert isinstance(method, cls) and method.config_dict()["method"] == name


def test_training_names_no_method() -> None:
    """Methods build themselves (``METHODS[name].from_settings``): the run assembly tests no method name."""
    src = Path(__file__).resolve().parents[2] / "src" / "kikimimi" / "training" / "pretrain.py"
    names = "|".join(re.escape(n) for n in METHODS)
    assert not re.findall(rf"""["']({names})["']""", src.read_text())


# ------------------------------------------------------------------------------------------ recipes by name
def _cli_settings(argv: list[str]) -> PretrainSettings:
    """What `kikimimi pretrain ARGV` resolves (the command's own parsing, before any training)."""
    from kikimimi.commands import pretrain as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in (*PretrainSettings.names(), "config")}
    return resolve_settings(given)


@pytest.mark.parametrize("recipe", ["first-run-m2d", "first-run-byola", "first-run-clap"])
def test_pretrain_recipe_reproduces_the_first_runs_settings(recipe, tmp_path) -> None:
    from kikimimi.apps.first_run import clap_stage, pipeline
    from kikimimi.apps.first_run.pretraining import first_run_given, intermediate_settings

    assert recipe in (pipeline.M2D_RECIPE, pipeline.BYOLA_RECIPE, clap_stage.CLAP_RECIPE)
    steps, name, data = 50, "run", tmp_path / "pool"
    extra = {**intermediate_settings(steps, False), "device": "cpu"}
    flags = ["--device", "cpu"]
    if recipe == "first-run-clap":  # what clap_stage gives: its caption table and CLAP weight
        extra.update(captions=str(tmp_path / "captions.csv"), clap_weight=clap_stage.DEMO_CLAP_WEIGHT)
        flags += ["--captions", str(tmp_path / "captions.csv"), "--clap-weight", str(clap_stage.DEMO_CLAP_WEIGHT)]
    stage = resolve_settings(first_run_given(tmp_path, data, recipe, name, steps, extra))
    cli = _cli_settings(["--recipe", recipe, "--data", str(data), "--out", str(tmp_path / "pretrain"),
                         "--run-name", name, "--steps", str(steps), "--no-progress", *flags])
    assert asdict(stage) == asdict(cli)
    assert stage.recipe == recipe and stage.method == {"first-run-m2d": "m2d", "first-run-byola": "byola",
                                                       "first-run-clap": "m2d_clap"}[recipe]


def test_first_run_recipes_keep_the_first_runs_values() -> None:
    """The values the first run used before its recipes moved to kikimimi.methods.recipes."""
    m2d = resolve_settings({"recipe": "first-run-m2d", "data": ["x"], "steps": 50})
    assert (m2d.size, m2d.input_frames, m2d.batch_size, m2d.lr, m2d.blr, m2d.warmup_steps) == (
        "tiny", 160, 32, 1e-3, None, 5)  # warm-up: 20 steps, at most a tenth of the run
    assert resolve_settings({"recipe": "first-run-m2d", "data": ["x"], "steps": 300}).warmup_steps == 20
    assert (m2d.min_epoch_size, m2d.norm_samples) == (1000, 500)
    byola = resolve_settings({"recipe": "first-run-byola", "data": ["x"], "steps": 100})
    assert (byola.method, byola.batch_size, byola.byola_dim, byola.lr, byola.warmup_steps) == ("byola", 32, 512,
                                                                                               None, 0)
    clap = resolve_settings({"recipe": "first-run-clap", "data": ["x"], "steps": 4, "captions": "c.csv"})
    assert (clap.input_frames, clap.batch_size, clap.lr, clap.warmup_steps, clap.ema_taus, clap.clap_weight,
            clap.text_encoder, clap.missing_captions) == (64, 16, 1e-3, 5, [0.99, 0.999], 1.0, "minilm", "skip")
    with pytest.raises(ValueError, match=r"--recipe first-run-m2d is a recipe for --method m2d, not byola"):
        resolve_settings({"recipe": "first-run-m2d", "method": "byola", "data": ["x"]})


def test_the_command_offers_every_named_recipe() -> None:
    from kikimimi.commands import pretrain as command
    from kikimimi.methods.recipes import RECIPES

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "recipe"]
    assert tuple(action.choices) == ("auto", *RECIPES)
    assert all(r.source for r in RECIPES.values())


# ------------------------------------------------------------------------------------------ captioner settings
def test_captioner_settings_resolve_over_defaults_and_round_trip() -> None:
    from kikimimi.training.captioner import CAPTIONER_DEFAULTS, MAPPER_DEFAULTS, CaptionerSettings

    s = CaptionerSettings.from_dict({"steps": 30, "mapper": {"width": 64}, "lora": {"rank": 4}})
    assert s.steps == 30 and s.mapper == {**MAPPER_DEFAULTS, "width": 64} and s.lora["rank"] == 4
    assert set(s.lora) >= {"rank", "alpha", "targets"}  # the LoRA defaults filled in
    assert CaptionerSettings.from_dict(asdict(s)) == s  # what a checkpoint stores reads back the same
    assert asdict(CaptionerSettings()) == CAPTIONER_DEFAULTS
    with pytest.raises(ValueError, match=r"^captioner settings: unknown setting 'stesp'$"):
        CaptionerSettings.from_dict({"stesp": 30})
    with pytest.raises(ValueError, match=r"^setting 'mapper': unknown key 'widht'"):
        CaptionerSettings.from_dict({"mapper": {"widht": 64}})
    with pytest.raises(ValueError, match=r"^setting 'batch_size' must be > 0, got 0$"):
        CaptionerSettings.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match=r"^setting 'lr': expected float \(or null\), got '1e-3'$"):
        CaptionerSettings.from_dict({"lr": "1e-3"})
