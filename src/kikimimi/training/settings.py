"""The settings of a pre-training run: a plain dict of JSON values, keyed by the long option names of
``kikimimi pretrain`` with ``_`` (``batch_size``, ``ema_taus``…), written to the run's ``config.json``.

A new run resolves them in this order (:func:`resolve_settings`): explicit values > a JSON settings file
(``config``: its path) > the method's recipe (``official`` = :data:`kikimimi.methods.recipes.METHOD_DEFAULTS`, or
``cpu-small``; ``recipe: auto`` picks by the device, :func:`kikimimi.methods.recipes.choose_recipe`) >
:data:`COMMON_DEFAULTS`. With ``steps`` and no explicit warm-up, the warm-up keeps the recipe's fraction of
the run (M2D: 20/300 of the steps). A resumed run (:func:`resume_settings`) takes every setting from its
checkpoint; only :data:`RESUME_OVERRIDES` may change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.runs import find_resume_checkpoint
from kikimimi.device import resolve_device
from kikimimi.methods.recipes import (
    BYOLA_METHODS,
    CAPTION_METHODS,
    M2D_METHODS,
    METHOD_DEFAULTS,
    choose_recipe,
    recipe_defaults,
)
from kikimimi.training.trainer import load_training_checkpoint

__all__ = ["COMMON_DEFAULTS", "RESUME_OVERRIDES", "is_embedding_cache", "resolve_settings", "resume_settings"]

#: settings every method has (``None`` = off / decided when the run starts)
COMMON_DEFAULTS: dict[str, Any] = {
    "recipe": "auto",
    "steps": None,
    "warmup_steps": None,
    "warmup_epochs": None,
    "workers": 0,
    "device": "auto",
    "amp": "auto",
    "save_every": "auto",
    "keep_checkpoints": None,
    "log_every": 10,
    "norm_stats": None,
    "norm_samples": 10000,
    "pad_mode": None,
    "frontend_on_device": False,
    "init_from": None,
    "accept_licence": False,
    "byola_dim": None,
    "run_name": None,
    "progress": True,
    "captions": None,
    "text_encoder": None,
    "clap_weight": None,
    "missing_captions": "error",
    "unfreeze_audio": False,
    "sem_mode": None,
    "text_dim": None,
    "vit_config": None,
}
#: settings that may change when resuming
RESUME_OVERRIDES = ("steps", "epochs", "workers", "device", "amp", "progress", "save_every", "log_every")
#: keys of ``given`` that are not settings (argparse bookkeeping, the settings file itself)
_NOT_SETTINGS = ("config", "_run", "command")


def _parse_pair(text: Any, what: str) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        a, b = str(text).lower().split("x")
        return [int(a), int(b)]
    except ValueError:
        raise ValueError(f"{what} must look like 16x16, got {text!r}") from None


def _read_settings_file(path: Path) -> dict[str, Any]:
    """A JSON object of settings; ``-`` in keys reads as ``_`` (``"batch-size"`` = ``"batch_size"``)."""
    try:
        file_cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config '{path}': cannot read JSON settings: {err}") from None
    if not isinstance(file_cfg, dict):
        raise ValueError(f"--config '{path}': expected a JSON object of settings")
    return {k.replace("-", "_"): v for k, v in file_cfg.items()}


def resolve_settings(given: dict[str, Any]) -> dict[str, Any]:
    """Settings of a new run: ``given`` values (``config`` = path of a JSON settings file) over the method defaults.

    Raises:
        ValueError: no or an unknown ``method``, no ``data``, a setting of another method, an unreadable
            settings file or missing caption settings (``captions``, ``text_encoder``, ``init_from``).
    """
    file_cfg = _read_settings_file(Path(given["config"])) if given.get("config") else {}
    method = given.get("method") or file_cfg.get("method")
    if method not in METHOD_DEFAULTS:
        raise ValueError("--method is required: m2d, byola, byola2, m2d_clap, m2d2_stage1 or m2d2_stage2")
    explicit = {k: v for k, v in given.items() if k not in _NOT_SETTINGS}
    device_name = explicit.get("device") or file_cfg.get("device") or "auto"
    recipe, recipe_rule = choose_recipe(explicit.get("recipe") or file_cfg.get("recipe"),
                                        resolve_device(device_name).type)
    s: dict[str, Any] = {"out": "runs", **COMMON_DEFAULTS, **recipe_defaults(method, recipe)}
    for layer in (file_cfg, explicit):  # each layer over the one below it
        if "steps" in layer or "epochs" in layer:  # a length setting replaces the other one
            s["steps"] = s["epochs"] = None
        if "blr" in layer and "lr" not in layer:  # a base lr replaces an absolute one below it
            s["lr"] = None
        s.update(layer)
    s["method"] = method
    s["recipe"], s["recipe_rule"] = recipe, recipe_rule
    if s.get("steps") is not None:
        s["epochs"] = None
        warm_given = any(k in src for src in (explicit, file_cfg) for k in ("warmup_steps", "warmup_epochs"))
        if not warm_given:  # keep the recipe's warm-up fraction (M2D 20/300 epochs) for step-based runs
            d = METHOD_DEFAULTS[method]
            frac = (d.get("warmup_epochs") or 0) / d["epochs"]
            s["warmup_epochs"], s["warmup_steps"] = None, int(round(frac * int(s["steps"])))
    if not s.get("data") and not s.get("resume"):
        raise ValueError("--data is required (audio folders, CSV lists or prep caches)")
    if s.get("grad_clip") == 0:
        s["grad_clip"] = None
    if s.get("lr") is not None:
        s["blr"] = None
    if s.get("mlp_lr_scale") is not None and method not in BYOLA_METHODS:
        raise ValueError(f"--mlp-lr-scale is a BYOL-A setting, not one of --method {method}")
    if s.get("pre_norm") is not None and method not in BYOLA_METHODS:
        raise ValueError(f"--pre-norm is a BYOL-A setting; --method {method} normalises with corpus statistics")
    if method in M2D_METHODS:
        s["patch_size"] = _parse_pair(s["patch_size"], "--patch-size")
    if method in CAPTION_METHODS and not s.get("resume"):
        _check_caption_settings(s)
    return s


def resume_settings(given: dict[str, Any]) -> dict[str, Any]:
    """Settings of a resumed run: those saved in the checkpoint of ``given["resume"]`` (a run folder or
    checkpoint file), with the :data:`RESUME_OVERRIDES` found in ``given``; ``resume`` becomes the file.

    Raises:
        FileNotFoundError: nothing to resume from; ValueError: not a kikimimi training checkpoint.
    """
    resume_path = find_resume_checkpoint(given["resume"])
    saved = load_training_checkpoint(resume_path)["args"]
    known = {*COMMON_DEFAULTS, *METHOD_DEFAULTS["m2d"], *METHOD_DEFAULTS["byola"], "data", "method", "out"}
    settings = {k: v for k, v in saved.items() if k in known}
    for key in RESUME_OVERRIDES:
        if key in given:
            settings[key] = given[key]
    if "steps" in given:
        settings["epochs"] = None
    if "epochs" in given:
        settings["steps"] = None
    settings["workers"] = given.get("workers", saved.get("num_workers", 0))
    settings["progress"] = given.get("progress", True)
    settings["resume"] = str(resume_path)
    return settings


def is_embedding_cache(path: Any) -> bool:
    """True for a caption-embedding cache, False for a caption table (``.csv``/``.json``/``.tsv``)."""
    return Path(str(path)).suffix.lower() not in (".csv", ".json", ".tsv")


def _check_caption_settings(s: dict[str, Any]) -> None:
    """Required settings of the caption methods (before any data is read)."""
    method = s["method"]
    if not s.get("captions"):
        raise ValueError(f"--method {method} needs --captions (caption table .csv/.json or embedding cache)")
    if method == "m2d2_stage2":
        if not s.get("init_from"):
            raise ValueError("--method m2d2_stage2 needs --init-from STAGE1_RUN_OR_CHECKPOINT")
        if not s.get("text_encoder"):
            raise ValueError("--method m2d2_stage2 needs --text-encoder SPEC (the text encoder to train)")
        if is_embedding_cache(s["captions"]):
            raise ValueError(
                f"--captions {s['captions']}: m2d2_stage2 trains its text encoder and needs caption texts "
                "(a .csv/.json caption table), not an embedding cache"
            )
    elif not is_embedding_cache(s["captions"]) and not s.get("text_encoder"):
        raise ValueError(
            f"--captions {s['captions']} is a caption table: give --text-encoder SPEC to embed it "
            "(or pass a caption-embedding cache)"
        )
