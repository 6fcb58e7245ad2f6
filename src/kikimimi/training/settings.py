"""The settings of a pre-training run, typed: :class:`PretrainSettings`, resolved once and validated; what the run
decides from them (the statistics, the rule that picked each ``auto`` value, the epoch size) in
:class:`RunDecisions`.

A new run resolves its settings in this order (:meth:`PretrainSettings.resolve`): explicit values > a JSON
settings file (``config``: its path) > the named recipe (``official``, ``cpu-small``, ``first-run-m2d``…;
``recipe: auto`` picks by the device) > the method's official recipe > the settings every method has — the last
three from :mod:`kikimimi.methods.recipes`, the one home of recipes. With ``steps`` and no explicit warm-up,
the warm-up follows the recipe's rule (by default the official fraction of the run: M2D 20/300 of the steps). A
resumed run (:meth:`PretrainSettings.resumed`) takes every setting from its checkpoint; only
:data:`RESUME_OVERRIDES` may change.

The run writes ``asdict(settings)`` to its ``config.json`` (the keys are the long option names of
``kikimimi pretrain`` with ``_``, so the file is a ``--config`` of the same run) and its decisions beside them, in
the ``decisions`` section.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from kikimimi.checkpoints.runs import find_resume_checkpoint
from kikimimi.data.official_lists import caption_source_kind
from kikimimi.device import AMP_MODES, resolve_device
from kikimimi.methods import METHODS
from kikimimi.methods.recipes import (
    BYOLA_METHODS,
    METHOD_DEFAULTS,
    RECIPES,
    choose_recipe,
    recipe_defaults,
)
from kikimimi.optim import SCHEDULES
from kikimimi.training.trainer import load_training_checkpoint

__all__ = [
    "RESUME_OVERRIDES",
    "PretrainSettings",
    "RunDecisions",
    "check_types",
    "is_embedding_cache",
    "recipe_values",
    "resolve_settings",
    "resume_settings",
]

#: settings that may change when resuming
RESUME_OVERRIDES = ("steps", "epochs", "workers", "device", "amp", "progress", "save_every", "log_every")
#: keys of ``given`` that are not settings (argparse bookkeeping, the settings file itself)
_NOT_SETTINGS = ("config", "_run", "command")


@dataclass
class RunDecisions:
    """What a run decided from its settings and its data, and why (``config.json``'s ``decisions`` section).

    Attributes:
        recipe_rule: why the recipe was chosen (``auto: no CUDA device…``, ``chosen with --recipe``).
        norm_stats: the log-mel ``(mean, std)`` the run used; norm_stats_from: where they came from.
        epoch_items: training items per epoch (corpus files, repeated up to ``min_epoch_size``).
        epoch_samples: BYOL-A ``pre_norm: running``: the running statistics' epoch (2 × files).
        text_dim: width of the caption embeddings (M2D-CLAP, M2D2 stage 1).
        ema_taus_rule, mlp_lr_scale_rule, save_every_rule: why an ``auto`` setting got its value.
        init_from_ignored_keys: keys of the ``init_from`` file the method did not use.
        caption_cache: the caption embeddings the run made from a caption table.
        data_cache, data_cache_rule: the log-mel cache ``kikimimi pretrain`` prepared (or reused) for audio
            ``--data``, and why; a resumed run trains from it again.
        run_dir: the run folder.
    """

    recipe_rule: str | None = None
    norm_stats: list[float] | None = None
    norm_stats_from: str | None = None
    epoch_items: int | None = None
    epoch_samples: int | None = None
    text_dim: int | None = None
    ema_taus_rule: str | None = None
    mlp_lr_scale_rule: str | None = None
    save_every_rule: str | None = None
    init_from_ignored_keys: int | None = None
    caption_cache: str | None = None
    data_cache: str | None = None
    data_cache_rule: str | None = None
    run_dir: str | None = None


@dataclass
class PretrainSettings:
    """Every setting of a pre-training run; the options of ``kikimimi pretrain`` (docs/usage.md) with ``_``.

    ``None`` = not set: off, the method's default, or decided when the run starts. Three settings may be
    ``"auto"`` until then: ``ema_taus``, ``mlp_lr_scale``, ``save_every``
    (:func:`kikimimi.methods.recipes.resolve_auto_settings`). A method reads the settings it has
    (``METHODS[method].from_settings(settings, …)``). ``decisions`` (:class:`RunDecisions`) is not a setting: it is
    not in ``asdict`` and is kept by :meth:`updated`.

    Raises (on construction):
        ValueError: one line naming the setting: a wrong type, a value out of range or not among the choices.
    """

    method: str
    data: list[str] = field(default_factory=list)
    out: str | None = None
    run_name: str | None = None
    recipe: str | None = None
    resume: str | None = None
    init_from: str | None = None
    accept_licence: bool | None = None
    # run length and optimisation
    steps: int | None = None
    epochs: float | None = None
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    batch_size: int | None = None
    accum_iter: int | None = None
    lr: float | None = None
    blr: float | None = None
    min_lr: float | None = None
    optimizer: Literal["adamw", "adam"] | None = None
    betas: list[float] | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    grad_clip: float | None = None
    seed: int | None = None
    # data and front end
    input_frames: int | None = None
    sample_rate: int | None = None
    min_epoch_size: int | None = None
    pad_mode: Literal["wave_zero", "log_silence", "log_zero"] | None = None
    norm_stats: list[float] | None = None
    norm_samples: int | None = None
    frontend_on_device: bool | None = None
    workers: int | None = None
    # M2D (and M2D-CLAP, M2D2)
    size: str | None = None
    patch_size: list[int] | None = None
    mask_ratio: float | None = None
    mask_strategy: str | None = None
    hint_start_epoch: int | None = None
    hint_k: float | None = None
    hint_ratio: float | None = None
    ema_taus: list[float] | Literal["auto"] | None = None
    vit_config: dict[str, Any] | None = None
    # BYOL-A
    byola_dim: int | None = None
    pre_norm: Literal["running", "precomputed"] | None = None
    mlp_lr_scale: float | Literal["auto"] | None = None
    # captions (M2D-CLAP, M2D2)
    captions: str | None = None
    text_encoder: str | None = None
    clap_weight: float | None = None
    missing_captions: Literal["error", "skip"] | None = None
    unfreeze_audio: bool | None = None
    sem_mode: int | None = None
    # devices, checkpoints, logs
    device: str | None = None
    amp: str | None = None
    save_every: int | Literal["auto"] | None = None
    keep_checkpoints: int | None = None
    log_every: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [self.data]
        self.data = [str(d) if isinstance(d, os.PathLike) else d for d in self.data]
        for name in _PATH_SETTINGS:
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, str(getattr(self, name)))
        if isinstance(self.patch_size, str):
            self.patch_size = _parse_pair(self.patch_size, "--patch-size")
        if isinstance(self.betas, tuple):
            self.betas = list(self.betas)
        if self.grad_clip == 0:
            self.grad_clip = None  # --grad-clip 0 = off
        self._validate()
        self.decisions = RunDecisions()

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names (the dataclass fields)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "settings") -> PretrainSettings:
        """Settings from ``values`` (e.g. a run's ``config.json``); other keys than settings raise, except the
        sections a run writes beside them (``decisions``, ``method_config``, ``frontend_preset``, ``train_config``).

        Raises:
            ValueError: an unknown key (naming it and ``source``), a missing ``method``, an invalid value.
        """
        known = set(cls.names())
        unknown = sorted(k for k in values if k not in known and k not in _RUN_SECTIONS)
        if unknown:
            raise ValueError(f"{source}: unknown setting {unknown[0]!r}"
                             + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        if not values.get("method"):
            raise ValueError(f"{source}: no 'method'")
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def resolve(cls, given: Mapping[str, Any]) -> PretrainSettings:
        """Settings of a new run: ``given`` values (``config`` = path of a JSON settings file) over the recipe.

        Raises:
            ValueError: no or an unknown ``method``, no ``data``, an unknown setting, a setting of another
                method, an invalid value, an unreadable settings file or missing caption settings (``captions``,
                ``text_encoder``, ``init_from``).
        """
        file_cfg = _read_settings_file(Path(given["config"])) if given.get("config") else {}
        explicit = {k: v for k, v in given.items() if k not in _NOT_SETTINGS}
        for source, layer in (("--config file", file_cfg), ("settings", explicit)):
            unknown = sorted(k for k in layer if k not in cls.names())
            if unknown:
                raise ValueError(f"{source}: unknown setting {unknown[0]!r}")
        requested = explicit.get("recipe") or file_cfg.get("recipe")
        method = explicit.get("method") or file_cfg.get("method") or _method_of_recipe(requested)
        if method not in METHOD_DEFAULTS:
            raise ValueError("--method is required: m2d, byola, byola2, m2d_clap, m2d2_stage1 or m2d2_stage2")
        device_name = explicit.get("device") or file_cfg.get("device") or "auto"
        recipe, recipe_rule = choose_recipe(requested, resolve_device(device_name).type)
        s: dict[str, Any] = recipe_defaults(method, recipe)
        for layer in (file_cfg, explicit):  # each layer over the one below it
            if "steps" in layer or "epochs" in layer:  # a length setting replaces the other one
                s["steps"] = s["epochs"] = None
            if "blr" in layer and "lr" not in layer:  # a base lr replaces an absolute one below it
                s["lr"] = None
            s.update(layer)
        s["method"], s["recipe"] = method, recipe
        if s.get("steps") is not None:
            s["epochs"] = None
            warm_given = any(k in src for src in (explicit, file_cfg) for k in ("warmup_steps", "warmup_epochs"))
            if not warm_given:  # the recipe's warm-up rule (by default the official fraction of the run)
                s["warmup_epochs"], s["warmup_steps"] = None, RECIPES[recipe].warmup(method, int(s["steps"]))
        if not s.get("data"):
            raise ValueError("--data is required (audio folders, CSV lists or prep caches)")
        if s.get("lr") is not None:
            s["blr"] = None
        if s.get("mlp_lr_scale") is not None and method not in BYOLA_METHODS:
            raise ValueError(f"--mlp-lr-scale is a BYOL-A setting, not one of --method {method}")
        hints = [k for k in ("hint_start_epoch", "hint_k", "hint_ratio") if s.get(k) is not None]
        if hints and "hint_k" not in METHOD_DEFAULTS[method]:
            raise ValueError(f"--{hints[0].replace('_', '-')} is a setting of the M2D masking strategies, not one of "
                             f"--method {method}")
        if s.get("pre_norm") is not None and method not in BYOLA_METHODS:
            raise ValueError(f"--pre-norm is a BYOL-A setting; --method {method} normalises with corpus statistics")
        settings = cls(**s)
        if METHODS[method].caption_input is not None:
            _check_caption_settings(settings)
        settings.decisions.recipe_rule = recipe_rule
        return settings

    @classmethod
    def resumed(cls, given: Mapping[str, Any]) -> PretrainSettings:
        """Settings of a resumed run: those saved in the checkpoint of ``given["resume"]`` (a run folder or
        checkpoint file), with the :data:`RESUME_OVERRIDES` found in ``given``; ``resume`` becomes the file.

        Raises:
            FileNotFoundError: nothing to resume from; ValueError: not a kikimimi training checkpoint.
        """
        resume_path = find_resume_checkpoint(given["resume"])
        saved = load_training_checkpoint(resume_path)["args"]
        values = {k: v for k, v in saved.items() if k in cls.names()}
        for key in RESUME_OVERRIDES:
            if key in given:
                values[key] = given[key]
        if "steps" in given:
            values["epochs"] = None
        if "epochs" in given:
            values["steps"] = None
        values["workers"] = given.get("workers", saved.get("num_workers", 0))
        values["progress"] = given.get("progress", True)
        values["resume"] = str(resume_path)
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"'{resume_path}': {err}") from None

    def updated(self, **changes: Any) -> PretrainSettings:
        """A copy with ``changes`` (validated), keeping :attr:`decisions`."""
        new = replace(self, **changes)
        new.decisions = self.decisions
        return new

    def to_dict(self) -> dict[str, Any]:
        """``asdict(self)``: JSON values, the keys of ``--config``."""
        return asdict(self)

    # ------------------------------------------------------------------------------------ checks
    def _validate(self) -> None:
        check_types(self)
        for name, low, strict in _RANGES:
            value = getattr(self, name)
            if value is None or isinstance(value, str):
                continue
            if value < low or (strict and value == low):
                raise ValueError(f"setting {name!r} must be {'>' if strict else '>='} {low:g}, got {value!r}")
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ValueError(f"setting {name!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        if self.method == "m2d2_stage2":  # a training mask of 0 is stage 2.1
            if self.mask_ratio is not None and not 0.0 <= self.mask_ratio < 1.0:
                raise ValueError(f"setting 'mask_ratio' must be in [0, 1), got {self.mask_ratio!r}")
        elif self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"setting 'mask_ratio' must be in (0, 1), got {self.mask_ratio!r}")
        strategies = getattr(METHODS.get(self.method), "mask_strategies", ())
        if self.mask_strategy is not None and self.mask_strategy not in strategies:
            allowed = f"one of {', '.join(strategies)}" if strategies else "unset (no patch masking)"
            raise ValueError(f"setting 'mask_strategy' of --method {self.method} must be {allowed}; "
                             f"got {self.mask_strategy!r}")
        for name, size in (("betas", 2), ("norm_stats", 2), ("patch_size", 2), ("ema_taus", 2)):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != size:
                raise ValueError(f"setting {name!r} must hold {size} values, got {value!r}")
        if self.norm_stats is not None and not self.norm_stats[1] > 0:
            raise ValueError(f"setting 'norm_stats' needs a std > 0, got {self.norm_stats!r}")


#: ``(setting, lowest value, lowest excluded)``
_RANGES = (
    ("steps", 0, True), ("epochs", 0, True), ("warmup_steps", 0, False), ("warmup_epochs", 0, False),
    ("batch_size", 0, True), ("accum_iter", 0, True), ("lr", 0, False), ("blr", 0, False), ("min_lr", 0, False),
    ("weight_decay", 0, False), ("grad_clip", 0, True), ("input_frames", 0, True), ("sample_rate", 0, True),
    ("min_epoch_size", 0, False), ("norm_samples", 0, True), ("workers", 0, False), ("byola_dim", 0, True),
    ("mlp_lr_scale", 0, False), ("clap_weight", 0, False), ("save_every", 0, True), ("keep_checkpoints", 0, True),
    ("log_every", 0, True), ("hint_start_epoch", 0, False), ("hint_k", 0, True),
    ("hint_ratio", 0, False),
)  # fmt: skip
_CHOICES: dict[str, tuple[Any, ...]] = {
    "method": tuple(METHOD_DEFAULTS),
    "schedule": tuple(SCHEDULES),
    "amp": tuple(AMP_MODES),
    "sem_mode": (0, 1, 2, 3, 4),
}
#: sections a run writes into ``config.json`` beside its settings
_RUN_SECTIONS = ("decisions", "method_config", "frontend_preset", "train_config")
#: what earlier versions wrote among the settings of a run's ``config.json`` (decisions, trainer fields, global
#: flags): skipped when such a file is read as ``--config``
_OLD_RUN_KEYS = ("recipe_rule", "ema_taus_rule", "mlp_lr_scale_rule", "save_every_rule", "run_dir", "text_dim",
                 "epoch_samples", "init_from_ignored_keys", "caption_cache", "num_workers", "out_dir", "verbose")
#: settings that name a file or folder (a ``Path`` is kept as its string)
_PATH_SETTINGS = ("out", "resume", "init_from", "captions")


def check_types(settings: Any) -> None:
    """Check every field of a settings dataclass against its annotation.

    Raises:
        ValueError: ``setting 'NAME': expected TYPE, got VALUE`` for the first field that does not fit.
    """
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        value = getattr(settings, f.name)
        if not _matches(value, hints[f.name]):
            raise ValueError(f"setting {f.name!r}: expected {_describe(hints[f.name])}, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-like ``value`` fits the type ``hint`` (ints count as floats, bools as neither)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    """``int | None`` → ``an int (or null)``-style words for an error message."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts) + (" (or null)" if type(None) in typing.get_args(hint) else "")
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        return "an object"
    return getattr(hint, "__name__", str(hint))


def _method_of_recipe(recipe: Any) -> str | None:
    """The method of a recipe made for one method (``first-run-m2d`` → ``m2d``), else ``None``."""
    named = RECIPES.get(recipe) if isinstance(recipe, str) else None
    return named.methods[0] if named is not None and named.methods and len(named.methods) == 1 else None


def _parse_pair(text: Any, what: str) -> list[int]:
    try:
        a, b = str(text).lower().split("x")
        return [int(a), int(b)]
    except ValueError:
        raise ValueError(f"{what} must look like 16x16, got {text!r}") from None


def _read_settings_file(path: Path) -> dict[str, Any]:
    """A JSON object of settings; ``-`` in keys reads as ``_`` (``"batch-size"`` = ``"batch_size"``). The sections
    a run writes beside its settings in ``config.json`` are skipped, so a run's ``config.json`` is a settings file.
    """
    try:
        file_cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config '{path}': cannot read JSON settings: {err}") from None
    if not isinstance(file_cfg, dict):
        raise ValueError(f"--config '{path}': expected a JSON object of settings")
    skipped = (*_RUN_SECTIONS, *_OLD_RUN_KEYS)
    return {k.replace("-", "_"): v for k, v in file_cfg.items() if k not in skipped}


def recipe_values(recipe: str) -> dict[str, Any]:
    """The settings a run starts from under a named recipe made for one method (``first-run-m2d``: M2D's), e.g.
    for what a caller prints about the run.

    Raises:
        ValueError: not a recipe for one method.
    """
    method = _method_of_recipe(recipe)
    if method is None:
        raise ValueError(f"--recipe {recipe!r} is not a recipe for one method")
    return recipe_defaults(method, recipe)


def resolve_settings(given: Mapping[str, Any]) -> PretrainSettings:
    """:meth:`PretrainSettings.resolve`: the settings of a new run."""
    return PretrainSettings.resolve(given)


def resume_settings(given: Mapping[str, Any]) -> PretrainSettings:
    """:meth:`PretrainSettings.resumed`: the settings of a resumed run."""
    return PretrainSettings.resumed(given)


def is_embedding_cache(path: Any) -> bool:
    """True for a caption-embedding cache (official ``capembs_*.npy`` and folders of them included), False for a
    caption table (``.csv``/``.json``/``.tsv``, official ``rawcap_*.csv`` and folders of them)."""
    official = caption_source_kind(str(path))
    if official is not None:
        return official == "capembs"
    return Path(str(path)).suffix.lower() not in (".csv", ".json", ".tsv")


def _check_caption_settings(s: PretrainSettings) -> None:
    """Required settings of the methods that pair items with captions (before any data is read)."""
    method, cls = s.method, METHODS[s.method]
    if not s.captions:
        raise ValueError(f"--method {method} needs --captions (caption table .csv/.json or embedding cache)")
    if cls.trains_on_stage1 and not s.init_from:
        raise ValueError(f"--method {method} needs --init-from STAGE1_RUN_OR_CHECKPOINT")
    if cls.caption_input == "texts":
        if not s.text_encoder:
            raise ValueError(f"--method {method} needs --text-encoder SPEC (the text encoder to train)")
        if is_embedding_cache(s.captions):
            raise ValueError(
                f"--captions {s.captions}: {method} trains its text encoder and needs caption texts "
                "(a .csv/.json caption table), not an embedding cache"
            )
    elif not is_embedding_cache(s.captions) and not s.text_encoder:
        raise ValueError(
            f"--captions {s.captions} is a caption table: give --text-encoder SPEC to embed it "
            "(or pass a caption-embedding cache)"
        )
