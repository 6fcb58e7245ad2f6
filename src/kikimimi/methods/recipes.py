"""Each method's training recipe: its default settings and the rules that pick a value by run length.

:data:`METHOD_DEFAULTS` holds, per method name, the settings a run starts from (M2D, BYOL-A, M2D-CLAP / M2D2:
docs/reference.md §7.1–7.3). Keys are the long option names of ``kikimimi pretrain`` with ``_``. A few settings are
``"auto"`` (or ``None`` for the BYOL-A ``lr``) and depend on the run: :func:`resolve_ema_taus` and
:func:`resolve_byola_auto` fill them in once the number of training items is known, by the run-length rule of
:func:`run_length_rule`.

The official recipes are tuned for AudioSet-scale runs on GPUs (hundreds of thousands of optimiser steps).
For short runs kikimimi uses other values, measured on the open suite; the figures are in ``docs/usage.md``,
section "Short runs on a CPU".

Two named recipes (:data:`RECIPES`, ``kikimimi pretrain --recipe``): ``official`` = :data:`METHOD_DEFAULTS`, the
papers' settings; ``cpu-small`` = those with :data:`CPU_SMALL_OVERRIDES` on top, the measured short CPU runs of
docs/usage.md. ``auto`` (:func:`choose_recipe`) picks ``official`` on a CUDA device and ``cpu-small`` otherwise.
"""

from __future__ import annotations

from typing import Any

from kikimimi.methods.byola import OFFICIAL_LR

__all__ = [
    "AUTO_CHECKPOINTS",
    "BYOLA_METHODS",
    "CAPTION_METHODS",
    "CPU_SMALL_OVERRIDES",
    "M2D_METHODS",
    "METHOD_DEFAULTS",
    "OFFICIAL_EMA_TAUS",
    "OFFICIAL_RECIPE_MIN_STEPS",
    "RECIPES",
    "SHORT_RUN_BYOLA_MLP_LR_SCALE",
    "SHORT_RUN_EMA_TAUS",
    "choose_recipe",
    "frontend_preset",
    "planned_steps",
    "recipe_defaults",
    "resolve_auto_settings",
    "resolve_byola_auto",
    "resolve_ema_taus",
    "resolve_save_every",
    "run_length_rule",
]

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "m2d": {
        "size": "base",
        "input_frames": 608,
        "patch_size": "16x16",
        "sample_rate": 16000,
        "mask_ratio": 0.7,
        "ema_taus": "auto",
        "epochs": 300,
        "warmup_epochs": 20,
        "batch_size": 512,
        "accum_iter": 1,
        "blr": 3e-4,
        "lr": None,
        "min_lr": 0.0,
        "optimizer": "adamw",
        "betas": [0.9, 0.95],
        "weight_decay": 0.05,
        "schedule": "cosine",
        "grad_clip": 3.0,
        "seed": 3,
        "min_epoch_size": 10000,
    },
    "byola": {
        "size": None,
        "input_frames": 96,
        "sample_rate": 16000,
        "epochs": 100,
        "batch_size": 256,
        "accum_iter": 1,
        "lr": None,  # the version's official rate (kikimimi.methods.byola.OFFICIAL_LR), set when a run starts
        "blr": None,
        "min_lr": 0.0,
        "optimizer": "adam",
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "schedule": "constant",
        "grad_clip": None,
        "seed": 42,
        "min_epoch_size": 0,
        "pre_norm": "running",
        "mlp_lr_scale": "auto",
    },
}
METHOD_DEFAULTS["byola2"] = {**METHOD_DEFAULTS["byola"], "pre_norm": "precomputed"}
# M2D-CLAP 2024: the M2D recipe + CLAP weight 0.01 (docs/reference.md §7.3); M2D2 stage 1 is the same objective
METHOD_DEFAULTS["m2d_clap"] = {**METHOD_DEFAULTS["m2d"], "clap_weight": 0.01}
METHOD_DEFAULTS["m2d2_stage1"] = {**METHOD_DEFAULTS["m2d_clap"]}
# M2D2 stage 2: training hyper-parameters are not public (docs/reference.md §7.3); kikimimi's choice: 30 epochs
# (the release is checkpoint-30.pth), a text-encoder fine-tuning lr, sizes come from the stage-1 file
METHOD_DEFAULTS["m2d2_stage2"] = {
    **{k: v for k, v in METHOD_DEFAULTS["m2d"].items() if k not in ("mask_ratio", "ema_taus")},  # no masking/EMA
    "epochs": 30,
    "warmup_epochs": 1,
    "batch_size": 128,
    "lr": 5e-5,
    "blr": None,
    "min_epoch_size": 0,
    "sem_mode": 1,
}
#: The named recipes of ``kikimimi pretrain --recipe``.
RECIPES = ("official", "cpu-small")
#: ``cpu-small``: what each method changes from its official recipe for a short run on a CPU (docs/usage.md,
#: "Short runs on a CPU": tiny M2D, 208 frames, batch 64, lr 5e-4, 2000 steps ≈ 20 CPU-minutes; BYOL-A v1
#: batch 64, 640 steps ≈ 22 CPU-minutes; v2 480 steps). M2D-CLAP and M2D2 stage 1 also weight the CLAP loss 1:
#: at the official 0.01 a 300-step tiny run barely moves zero-shot accuracy above chance.
#: The corpus statistics come from 2000 crops instead of 10000 (their mean and std settle long before).
_CPU_SMALL_M2D = {"size": "tiny", "input_frames": 208, "batch_size": 64, "lr": 5e-4, "steps": 2000,
                  "norm_samples": 2000}
CPU_SMALL_OVERRIDES: dict[str, dict[str, Any]] = {
    "m2d": _CPU_SMALL_M2D,
    "m2d_clap": {**_CPU_SMALL_M2D, "clap_weight": 1.0},
    "m2d2_stage1": {**_CPU_SMALL_M2D, "clap_weight": 1.0},
    "m2d2_stage2": {"batch_size": 32, "steps": 300},
    "byola": {"batch_size": 64, "steps": 640, "norm_samples": 2000},
    "byola2": {"batch_size": 64, "steps": 480, "norm_samples": 2000},
}
#: BYOL-A methods (64-bin front end, ``pre_norm``)
BYOLA_METHODS = ("byola", "byola2")
#: methods built on the M2D ViT (80-bin M2D front end, patch sizes, official-style run names)
M2D_METHODS = ("m2d", "m2d_clap", "m2d2_stage1", "m2d2_stage2")
#: methods that pair each item with a caption
CAPTION_METHODS = ("m2d_clap", "m2d2_stage1", "m2d2_stage2")

#: M2D target EMA schedules: the official one (docs/reference.md §7.1, tuned for ~300k steps of batch 2048)
#: and kikimimi's short-run one. With 0.99995 the target of a few-thousand-step run barely moves from its
#: random init; the short-run schedule probed better on the open suite (figures in docs/usage.md,
#: "Short runs on a CPU").
OFFICIAL_EMA_TAUS = (0.99995, 0.99999)
SHORT_RUN_EMA_TAUS = (0.999, 0.9999)
#: runs with at least this many optimiser steps get the official value of ``auto`` settings (M2D EMA,
#: BYOL-A MLP lr scale)
OFFICIAL_RECIPE_MIN_STEPS = 100_000
#: kikimimi's short-run lr multiplier of the BYOL-A v1 encoder's MLP (``encoder.fc``): 0 keeps it at its random
#: initialisation while the conv stack, projector and predictor train at the official rate. In the first few
#: hundred steps a trained MLP loses rank while the conv stack improves; kept at init, the EVAR probe beat
#: random init on drum type, instrument family and the shifted soundfont at two seeds (measurements in
#: docs/usage.md, "Short runs on a CPU"). v2 keeps 1: its output includes the conv features, and a
#: kept-at-init MLP did not beat the trained one.
SHORT_RUN_BYOLA_MLP_LR_SCALE = {"byola": 0.0}


def choose_recipe(requested: str | None, device_type: str) -> tuple[str, str]:
    """``(recipe, why)`` for ``--recipe requested`` (``None``/``"auto"``: by the training device's type).

    Raises:
        ValueError: an unknown recipe name.
    """
    if requested in (None, "auto"):
        if device_type == "cuda":
            return "official", "auto: a CUDA device; the papers' settings"
        return "cpu-small", ("auto: no CUDA device; the measured short-run settings for a CPU "
                             "(--recipe official for the papers' settings)")
    if requested not in RECIPES:
        raise ValueError(f"--recipe must be one of auto, {', '.join(RECIPES)}; got {requested!r}")
    return requested, "chosen with --recipe"


def recipe_defaults(method: str, recipe: str) -> dict[str, Any]:
    """The settings a run of ``method`` starts from under ``recipe`` (a copy; see :data:`RECIPES`)."""
    base = dict(METHOD_DEFAULTS[method])
    if recipe == "cpu-small":
        base.update(CPU_SMALL_OVERRIDES.get(method, {}))
        if base.get("lr") is not None and method in M2D_METHODS:
            base["blr"] = None
        if base.get("steps") is not None:
            base["epochs"] = None
    return base


def frontend_preset(method: str, sample_rate: int) -> str:
    """The log-mel front end a method trains on: ``m2d-16k`` / ``m2d-32k`` (80 bins) or ``byola`` (64 bins)."""
    if method in M2D_METHODS:
        return "m2d-32k" if int(sample_rate) == 32000 else "m2d-16k"
    return "byola"


def planned_steps(settings: dict[str, Any], n_items: int, world_size: int = 1) -> int:
    """Optimiser steps the trainer will run (``steps``, or epochs × items per epoch / global batch)."""
    if settings.get("steps") is not None:
        return int(settings["steps"])
    per_rank = n_items // max(1, world_size)
    iters = per_rank // int(settings["batch_size"])
    return max(1, int(float(settings["epochs"]) * iters) // int(settings.get("accum_iter") or 1))


def run_length_rule(settings: dict[str, Any], n_items: int, world_size: int) -> tuple[bool, str]:
    """``(official, why)``: whether a run gets the official (long-run) value of an ``auto`` setting.

    Official for further pre-training (``init_from``: the networks are trained already) and for runs of
    at least :data:`OFFICIAL_RECIPE_MIN_STEPS` planned optimiser steps; the short-run value otherwise.
    """
    total = planned_steps(settings, n_items, world_size)
    if settings.get("init_from"):
        return True, "--init-from"
    if total >= OFFICIAL_RECIPE_MIN_STEPS:
        return True, f"{total} planned steps ≥ {OFFICIAL_RECIPE_MIN_STEPS}"
    return False, f"{total} planned steps < {OFFICIAL_RECIPE_MIN_STEPS}"


def resolve_ema_taus(settings: dict[str, Any], n_items: int, world_size: int = 1) -> None:
    """Replace ``ema_taus: "auto"`` by the official schedule for long runs and further pre-training
    (``init_from``), and by the short-run schedule otherwise; an ``ema_taus_rule`` entry says why."""
    if settings.get("ema_taus") not in (None, "auto"):
        return
    official, why = run_length_rule(settings, n_items, world_size)
    taus = OFFICIAL_EMA_TAUS if official else SHORT_RUN_EMA_TAUS
    settings["ema_taus"] = list(taus)
    settings["ema_taus_rule"] = f"auto: {why} → {taus[0]} → {taus[1]}"


def resolve_byola_auto(settings: dict[str, Any], n_items: int, world_size: int = 1) -> None:
    """Fill in BYOL-A's run-dependent defaults.

    - ``lr`` unset: the version's official Adam rate (v1 3e-4, v2 1e-4);
    - ``mlp_lr_scale: "auto"``: by the run-length rule (:func:`run_length_rule`), 1 (official) for long
      runs and further pre-training, otherwise :data:`SHORT_RUN_BYOLA_MLP_LR_SCALE` for methods that have
      one (1 for the others); written back with an ``mlp_lr_scale_rule`` entry that says why.

    Explicit values stay.
    """
    method = settings["method"]
    if settings.get("lr") is None:
        settings["lr"] = OFFICIAL_LR[2 if method == "byola2" else 1]
    if settings.get("mlp_lr_scale") == "auto":
        official, why = run_length_rule(settings, n_items, world_size)
        scale = 1.0 if official else SHORT_RUN_BYOLA_MLP_LR_SCALE.get(method, 1.0)
        settings["mlp_lr_scale"] = scale
        settings["mlp_lr_scale_rule"] = f"auto: {why} → {scale:g}"


#: ``save_every: "auto"``: about this many evenly spaced checkpoints over a run (only the newest is kept), so a
#: killed run loses at most a tenth of its steps
AUTO_CHECKPOINTS = 10


def resolve_save_every(settings: dict[str, Any], n_items: int, world_size: int = 1) -> None:
    """Replace ``save_every: "auto"`` by a tenth of the planned steps (at least 1) and, unless given,
    ``keep_checkpoints`` by 1; a ``save_every_rule`` entry says why. Explicit values stay."""
    if settings.get("save_every") != "auto":
        return
    total = planned_steps(settings, n_items, world_size)
    settings["save_every"] = max(1, total // AUTO_CHECKPOINTS)
    if settings.get("keep_checkpoints") is None:
        settings["keep_checkpoints"] = 1
    settings["save_every_rule"] = (f"auto: {total} planned steps / {AUTO_CHECKPOINTS} → every "
                                   f"{settings['save_every']} steps, newest {settings['keep_checkpoints']} kept")


def resolve_auto_settings(settings: dict[str, Any], n_items: int, world_size: int = 1) -> None:
    """Fill in every run-dependent default of the run's method: the checkpoint period
    (:func:`resolve_save_every`), the M2D EMA schedule (:func:`resolve_ema_taus`) and BYOL-A's lr and MLP lr
    scale (:func:`resolve_byola_auto`)."""
    method = settings["method"]
    resolve_save_every(settings, n_items, world_size)
    if "ema_taus" in METHOD_DEFAULTS.get(method, {}):
        resolve_ema_taus(settings, n_items, world_size)
    if method in BYOLA_METHODS:
        resolve_byola_auto(settings, n_items, world_size)
