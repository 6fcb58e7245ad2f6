"""Every named pre-training recipe, and the rules that pick a value by run length: the one home of recipes.

A run starts from :data:`COMMON_DEFAULTS` (the settings every method has) under the method's official recipe
(:data:`METHOD_DEFAULTS`: M2D, BYOL-A, M2D-CLAP / M2D2, docs/reference.md §7.1–7.3) under the overrides of the
named recipe it asks for (:data:`RECIPES`, ``kikimimi pretrain --recipe NAME``; :func:`recipe_defaults`). Keys are
the long option names of ``kikimimi pretrain`` with ``_``, the fields of
:class:`kikimimi.training.settings.PretrainSettings`.

The named recipes (each :class:`Recipe` says where its values come from):

- ``official``: the papers' settings, tuned for AudioSet-scale runs on GPUs (hundreds of thousands of steps); for
  M2D2 stage 2 the published ``clap_only`` settings (``../shared/docs/fact-sheet-m2d2-2026.md``);
- ``m2d2-stage2.1``: M2D2 stage 2.1 (stage 2 from a stage-2 file, no training mask);
- ``cpu-small``: :data:`CPU_SMALL_OVERRIDES`, the measured short CPU runs of docs/usage.md, "Short runs on a CPU";
- ``first-run-m2d``, ``first-run-byola``, ``first-run-clap``: the three pre-training runs of the first run
  (``kikimimi demo``, :mod:`kikimimi.apps.first_run`), which uses them by name; ``kikimimi pretrain --recipe
  first-run-m2d --data POOL --steps N`` reproduces its M2D run;
- ``open-m2d-tiny``: the final training of the open encoder on the open corpus, chosen by a recipe search on the
  open suite's validation splits (benchmarks/open_suite/README.md, "Open models: recipe search").

``auto`` (:func:`choose_recipe`) picks ``official`` on a CUDA device and ``cpu-small`` otherwise.

A few settings are ``"auto"`` (or ``None`` for the BYOL-A ``lr``) and depend on the run:
:func:`resolve_auto_settings` returns their values once the number of training items is known, by the
run-length rule of :func:`run_length_rule`, with a line that says why. These functions read a run's settings
by attribute (a :class:`~kikimimi.training.settings.PretrainSettings`) and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kikimimi.methods.byola import OFFICIAL_LR

__all__ = [
    "AUTO_CHECKPOINTS",
    "BYOLA_METHODS",
    "CAPTION_METHODS",
    "COMMON_DEFAULTS",
    "CPU_SMALL_OVERRIDES",
    "M2D_METHODS",
    "METHOD_DEFAULTS",
    "OFFICIAL_EMA_TAUS",
    "OFFICIAL_RECIPE_MIN_STEPS",
    "RECIPES",
    "Recipe",
    "SHORT_RUN_BYOLA_MLP_LR_SCALE",
    "SHORT_RUN_EMA_TAUS",
    "STAGE2_1_OVERRIDES",
    "auto_byola",
    "auto_ema_taus",
    "auto_save_every",
    "choose_recipe",
    "frontend_preset",
    "planned_steps",
    "recipe_defaults",
    "resolve_auto_settings",
    "run_length_rule",
]

#: Settings every method has (``None`` = off / decided when the run starts).
COMMON_DEFAULTS: dict[str, Any] = {
    "out": "runs",
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
    "mask_strategy": None,
    "hint_start_epoch": None,
    "hint_k": None,
    "hint_ratio": None,
    "vit_config": None,
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "m2d": {
        "size": "base",
        "input_frames": 608,
        "patch_size": "16x16",
        "sample_rate": 16000,
        "mask_ratio": 0.7,
        # masking: random (the released M2D) or an IJCNN 2026 strategy with the official hint schedule
        # (fact-sheet-m2d2-2026.md §5; kikimimi.methods.m2d.MASK_STRATEGIES)
        "mask_strategy": "random",
        "hint_start_epoch": 50,
        "hint_k": 2.0,
        "hint_ratio": None,
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
#: M2D2 stage 1 as published (``clap.train_clap``, fact-sheet-m2d2-2026.md §1–2): that objective with the
#: semantic-token projector (``--sem_mode 1``) and seed 7; caption embeddings from an LLM embedder (NV-Embed-v2)
METHOD_DEFAULTS["m2d2_stage1"] = {**METHOD_DEFAULTS["m2d_clap"], "sem_mode": 1, "seed": 7}
#: M2D2 stage 2 as published (``clap/clap_only.py``, NTT's 2026-02-23 release; ../shared/docs/fact-sheet-m2d2-2026.md
#: §1, §4): 30 epochs, base lr 3e-6 × effective batch / 256 (2.4e-5 at 512 × 4 GPUs), 5 warm-up epochs, half-cosine
#: to 0, AdamW (0.9, 0.95) wd 0.05, clip 3.0, seed 7; a training mask of 0.3 of the frozen encoder's input patches,
#: structured (the official code's variant); 1001-frame crops whatever the model input, short items padded with 0 in
#: the raw log domain; a fresh semantic projector (mode 1); the logit scale reset to ln 100 (in the method). The ViT
#: sizes and statistics come from the --init-from file. No EMA target.
METHOD_DEFAULTS["m2d2_stage2"] = {
    **{k: v for k, v in METHOD_DEFAULTS["m2d"].items() if k not in ("ema_taus", "hint_start_epoch", "hint_k")},
    "epochs": 30,
    "warmup_epochs": 5,
    "batch_size": 512,
    "lr": None,
    "blr": 3e-6,
    "min_lr": 0.0,
    "seed": 7,
    "mask_ratio": 0.3,
    "mask_strategy": "structured",
    "input_frames": 1001,
    "pad_mode": "log_zero",
    "min_epoch_size": 0,
    "sem_mode": 1,
}
#: M2D2 stage 2.1 (``--recipe m2d2-stage2.1``): stage 2 continued from a stage-2 file with no training mask and the
#: script's default seed 0 (fact sheet §1, §4)
STAGE2_1_OVERRIDES = {"mask_ratio": 0.0, "seed": 0}
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
    # stage 2 on a CPU: crops of the stage-1 input (not 1001 frames), kikimimi's earlier absolute lr 5e-5
    "m2d2_stage2": {"batch_size": 32, "steps": 300, "lr": 5e-5, "input_frames": None},
    "byola": {"batch_size": 64, "steps": 640, "norm_samples": 2000},
    "byola2": {"batch_size": 64, "steps": 480, "norm_samples": 2000},
}


def _official_warmup(method: str, steps: int) -> int:
    """Warm-up steps of a step-based run: the official recipe's fraction of the run (M2D 20/300 epochs)."""
    d = METHOD_DEFAULTS[method]
    return int(round((d.get("warmup_epochs") or 0) / d["epochs"] * int(steps)))


@dataclass(frozen=True)
class Recipe:
    """A named recipe: settings over each method's official ones.

    Attributes:
        name: the ``--recipe`` name. source: where its values come from (a measurement, a document).
        overrides: method → settings over :data:`METHOD_DEFAULTS` (a method absent here: the official
            recipe); with ``methods``, the only methods the recipe is for.
        methods: the methods it is for (``None`` = every method); a recipe for one method is that method's
            when no ``--method`` is given.
        warmup: warm-up steps of a run of ``steps`` steps when no warm-up is given,
            ``warmup(method, steps)`` (default: the official fraction of the run).
    """

    name: str
    source: str
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None
    warmup: Callable[[str, int], int] = _official_warmup


#: The first run's recipes (``kikimimi demo``, ``kikimimi.apps.first_run``) share the corpus statistics
#: (500 crops) and the epoch floor (1000 items: the pools hold a few hundred clips).
_FIRST_RUN_COMMON = {"min_epoch_size": 1000, "norm_samples": 500}
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("official", "the papers' settings: docs/reference.md §7.1 (M2D), §7.2 (BYOL-A), §7.3 (M2D-CLAP, M2D2); "
           "M2D2 stage 2 as NTT's published clap_only (../shared/docs/fact-sheet-m2d2-2026.md §1, §4)"),
    Recipe("cpu-small", "the measured short CPU runs of docs/usage.md, section \"Short runs on a CPU\"",
           CPU_SMALL_OVERRIDES),
    Recipe(
        "first-run-m2d",
        "the first run (README, \"The first run\"): a tiny M2D on 1.6-s crops (the drum clips are 1 s, the prompts "
        "≤ 3 s), batch 32, absolute lr 1e-3 — the compute of the earlier demo's 150 steps × 208 frames spent on "
        "more steps (200 by default); measured on a fresh clone: M2D beat its random init on drum type (logistic "
        "probe 66.7 % vs 63.0 %). Warm-up: 20 steps, at most a tenth of the run.",
        {"m2d": {"size": "tiny", "input_frames": 160, "batch_size": 32, "lr": 1e-3, "steps": 200,
                 **_FIRST_RUN_COMMON}},
        methods=("m2d",),
        warmup=lambda _method, steps: max(1, min(20, int(steps) // 10)),
    ),
    Recipe(
        "first-run-byola",
        "the first run (README, \"The first run\"): BYOL-A v1, 512-d, batch 32, 100 steps; lr and the MLP rule "
        "from the method's short-run defaults (resolve_auto_settings); measured on a fresh clone: BYOL-A beat "
        "its random init on language ID (linear probe 91.3 % vs 84.0 %).",
        {"byola": {"batch_size": 32, "byola_dim": 512, "steps": 100, **_FIRST_RUN_COMMON}},
        methods=("byola",),
    ),
    Recipe(
        "first-run-clap",
        "the first run's audio–language stage (README, \"The first run\"): a tiny M2D-CLAP on 80x64 crops, batch "
        "16, absolute lr 1e-3, 5 warm-up steps, EMA 0.99 → 0.999, CLAP weight 1 (with ~100 steps the CLAP term "
        "must dominate; the official 0.01 is for long runs), captions embedded with the frozen minilm; files "
        "without a caption (the valid/test clips) are skipped. These are the values of the 100-step run of "
        "tests/methods/test_m2d_clap.py (zero-shot above chance on generated sounds); on the real recordings of a "
        "fresh-clone first run: zero-shot 21.2 % on held-out clips (chance 9.1 %).",
        {"m2d_clap": {"size": "tiny", "input_frames": 64, "batch_size": 16, "lr": 1e-3, "ema_taus": [0.99, 0.999],
                      "steps": 100, "clap_weight": 1.0, "text_encoder": "minilm", "missing_captions": "skip",
                      **_FIRST_RUN_COMMON}},
        methods=("m2d_clap",),
        warmup=lambda _method, _steps: 5,
    ),
    Recipe(
        "open-m2d-tiny",
        "the open encoder's final run (benchmarks/open_suite/README.md, \"Open models: recipe search\"): a tiny "
        "M2D on the open corpus (`kikimimi data open-corpus`) with music capped at 10 % of the items, 2.08-s crops, "
        "batch 64, absolute lr 5e-4, mask ratio 0.7, 7,500 steps (about 3 CPU-hours on one core of the team's "
        "2-core Xeon; warm-up: the official 1/15 of the run), a checkpoint every 250 steps, all kept (for a "
        "probe curve). Chosen by six 300-step runs probed on the open suite's validation splits: lr 1e-3 lost on "
        "every task, 2.5e-4 and 160-frame crops tied the base, the 10 % music share scored best on the language "
        "and instrument validation clips, and 160 frames with 10 % music did not add up. Started with "
        "benchmarks/open_suite/train_open_models.sh.",
        {"m2d": {"size": "tiny", "input_frames": 208, "batch_size": 64, "lr": 5e-4, "mask_ratio": 0.7,
                 "steps": 7_500, "norm_samples": 10_000, "save_every": 250, "log_every": 50}},
        methods=("m2d",),
    ),
    Recipe(
        "open-clap-tiny",
        "the open audio–language model (issue 27): M2D-CLAP further pre-training of the open encoder "
        "(`--init-from` a checkpoint of the open-m2d-tiny run; its normalisation statistics via --norm-stats) on "
        "the same corpus view with the open corpus's metadata captions embedded by the frozen minilm "
        "(all-MiniLM-L6-v2, Apache-2.0); tiny ViT, 2.08-s crops, batch 64, half the encoder's lr (2.5e-4), "
        "CLAP weight 1 (a short run: at the official 0.01 the CLAP term barely moves), 1,000 steps, a checkpoint "
        "every 250. Not tuned by a search (no budget left in the session that trained it); started with "
        "benchmarks/open_suite/train_open_models.sh clap.",
        {"m2d_clap": {"size": "tiny", "input_frames": 208, "batch_size": 64, "lr": 2.5e-4, "mask_ratio": 0.7,
                      "steps": 1_000, "clap_weight": 1.0, "text_encoder": "minilm", "missing_captions": "skip",
                      "save_every": 250, "log_every": 50}},
        methods=("m2d_clap",),
    ),
    Recipe("m2d2-stage2.1", "M2D2 stage 2.1 as published (../shared/docs/fact-sheet-m2d2-2026.md §1, §4): the official "
           "stage 2 continued from a stage-2 file (--init-from; its projector, text encoder and logit scale carry on) "
           "with training mask 0 and seed 0", {"m2d2_stage2": STAGE2_1_OVERRIDES}, methods=("m2d2_stage2",)),
)}  # fmt: skip
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
    """The settings a run of ``method`` starts from under ``recipe``, over :data:`COMMON_DEFAULTS` (a copy).

    Raises:
        ValueError: a recipe for other methods.
    """
    named = RECIPES[recipe]
    if named.methods is not None and method not in named.methods:
        raise ValueError(f"--recipe {recipe} is a recipe for --method {' or '.join(named.methods)}, not {method}")
    base = {**COMMON_DEFAULTS, **METHOD_DEFAULTS[method], **named.overrides.get(method, {})}
    if method in named.overrides:
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


def planned_steps(settings: Any, n_items: int, world_size: int = 1) -> int:
    """Optimiser steps the trainer will run (``steps``, or epochs × items per epoch / global batch)."""
    if settings.steps is not None:
        return int(settings.steps)
    per_rank = n_items // max(1, world_size)
    iters = per_rank // int(settings.batch_size)
    return max(1, int(float(settings.epochs) * iters) // int(settings.accum_iter or 1))


def run_length_rule(settings: Any, n_items: int, world_size: int) -> tuple[bool, str]:
    """``(official, why)``: whether a run gets the official (long-run) value of an ``auto`` setting.

    Official for further pre-training (``init_from``: the networks are trained already) and for runs of
    at least :data:`OFFICIAL_RECIPE_MIN_STEPS` planned optimiser steps; the short-run value otherwise.
    """
    total = planned_steps(settings, n_items, world_size)
    if settings.init_from:
        return True, "--init-from"
    if total >= OFFICIAL_RECIPE_MIN_STEPS:
        return True, f"{total} planned steps ≥ {OFFICIAL_RECIPE_MIN_STEPS}"
    return False, f"{total} planned steps < {OFFICIAL_RECIPE_MIN_STEPS}"


#: what an ``auto_*`` rule decided: ``(settings to change, {"<setting>_rule": why})``, both empty when nothing
AutoValues = tuple[dict[str, Any], dict[str, str]]


def auto_ema_taus(settings: Any, n_items: int, world_size: int = 1) -> AutoValues:
    """``ema_taus: "auto"`` → the official schedule for long runs and further pre-training (``init_from``), the
    short-run schedule otherwise; with an ``ema_taus_rule`` that says why."""
    if settings.ema_taus not in (None, "auto"):
        return {}, {}
    official, why = run_length_rule(settings, n_items, world_size)
    taus = OFFICIAL_EMA_TAUS if official else SHORT_RUN_EMA_TAUS
    return {"ema_taus": list(taus)}, {"ema_taus_rule": f"auto: {why} → {taus[0]} → {taus[1]}"}


def auto_byola(settings: Any, n_items: int, world_size: int = 1) -> AutoValues:
    """BYOL-A's run-dependent defaults.

    - ``lr`` unset: the version's official Adam rate (v1 3e-4, v2 1e-4);
    - ``mlp_lr_scale: "auto"``: by the run-length rule (:func:`run_length_rule`), 1 (official) for long
      runs and further pre-training, otherwise :data:`SHORT_RUN_BYOLA_MLP_LR_SCALE` for methods that have
      one (1 for the others), with an ``mlp_lr_scale_rule`` that says why.

    Explicit values stay.
    """
    method = settings.method
    changes: dict[str, Any] = {}
    rules: dict[str, str] = {}
    if settings.lr is None:
        changes["lr"] = OFFICIAL_LR[2 if method == "byola2" else 1]
    if settings.mlp_lr_scale == "auto":
        official, why = run_length_rule(settings, n_items, world_size)
        scale = 1.0 if official else SHORT_RUN_BYOLA_MLP_LR_SCALE.get(method, 1.0)
        changes["mlp_lr_scale"] = scale
        rules["mlp_lr_scale_rule"] = f"auto: {why} → {scale:g}"
    return changes, rules


#: ``save_every: "auto"``: about this many evenly spaced checkpoints over a run (only the newest is kept), so a
#: killed run loses at most a tenth of its steps
AUTO_CHECKPOINTS = 10


def auto_save_every(settings: Any, n_items: int, world_size: int = 1) -> AutoValues:
    """``save_every: "auto"`` → a tenth of the planned steps (at least 1) and, unless given,
    ``keep_checkpoints`` → 1; with a ``save_every_rule`` that says why. Explicit values stay."""
    if settings.save_every != "auto":
        return {}, {}
    total = planned_steps(settings, n_items, world_size)
    every = max(1, total // AUTO_CHECKPOINTS)
    keep = 1 if settings.keep_checkpoints is None else settings.keep_checkpoints
    rule = f"auto: {total} planned steps / {AUTO_CHECKPOINTS} → every {every} steps, newest {keep} kept"
    return {"save_every": every, "keep_checkpoints": keep}, {"save_every_rule": rule}


def resolve_auto_settings(settings: Any, n_items: int, world_size: int = 1) -> AutoValues:
    """Every run-dependent default of the run's method: the checkpoint period (:func:`auto_save_every`), the
    M2D EMA schedule (:func:`auto_ema_taus`, methods whose recipe has one) and BYOL-A's lr and MLP lr scale
    (:func:`auto_byola`). Returns ``(settings to change, rules)``; ``settings`` is not changed."""
    method = settings.method
    rules_used = [auto_save_every]
    if "ema_taus" in METHOD_DEFAULTS.get(method, {}):
        rules_used.append(auto_ema_taus)
    if method in BYOLA_METHODS:
        rules_used.append(auto_byola)
    changes: dict[str, Any] = {}
    why: dict[str, str] = {}
    for rule in rules_used:
        c, w = rule(settings, n_items, world_size)
        changes.update(c)
        why.update(w)
    return changes, why
