"""`kikimimi pretrain`: self-supervised pre-training of M2D or BYOL-A (v1/v2) on a corpus.

Settings are resolved in this order: explicit command-line flags > ``--config FILE.json`` (keys = the
long option names with ``_``) > per-method defaults from the fact sheets (M2D: fact-sheet-m2d §3.1;
BYOL-A: fact-sheet-byola-evar §1.6). With ``--steps`` and no explicit warm-up, the warm-up keeps the
recipe's fraction of the run (M2D: 20/300 of the steps). Every resolved setting is written to
``config.json`` in the run folder, which is created inside ``--out`` with an official-style name:

- M2D: ``m2d_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>[-<n>]`` (the name parsers recover the input and
  patch sizes and the sample rate from it) holding ``checkpoint-<step>.pth`` in the official layout;
- BYOL-A: ``AudioNTT2020-BYOLA-<F>x<T>d<d>-<yymmdd>`` (v2: ``AudioNTT2022-…``), plus the encoder state
  dict ``AudioNTT2020-BYOLA-<F>x<T>d<d>.pth`` written at the end. ``--pre-norm running`` (v1 default)
  feeds raw log-mel crops to the method, which normalises them with running statistics (update budget
  10 × 2 × files); ``precomputed`` (v2 default) normalises in the data pipeline with corpus statistics.
  The corpus statistics are estimated and recorded in both modes (they go with the exported encoder).

M2D-CLAP / M2D2 (fact-sheet-m2d §5): ``--method m2d_clap`` (and ``m2d2_stage1``, the same objective against
LLM-based caption embeddings) needs ``--captions`` = a caption table (CSV/JSON; its embedding cache is
built first with ``--text-encoder`` inside the run folder, reused on resume) or a caption-embedding cache;
run folders are named ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>-<yymmdd>``. ``--method m2d2_stage2`` trains the
semantic projector and a text encoder (``--text-encoder``) on the encoder of ``--init-from STAGE1_RUN``
(frozen unless ``--unfreeze-audio``), folder ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p16kp<code>pTI-<yymmdd>``.

Multi-process: ``torchrun --nproc_per_node=N -m kikimimi pretrain …`` (gloo on CPU, nccl on CUDA);
``--batch-size`` is per process. ``--resume RUN_DIR|CHECKPOINT`` restores every setting from the
checkpoint (only ``--steps/--epochs``, ``--workers``, ``--device``, ``--amp`` may change).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any

NAME = "pretrain"
HELP = "pre-train an M2D, M2D-CLAP / M2D2 or BYOL-A encoder on audio files or a prep cache"

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
#: BYOL-A methods (64-bin front end, --pre-norm)
BYOLA_METHODS = ("byola", "byola2")
# M2D-CLAP 2024: the M2D recipe + CLAP weight 0.01 (fact-sheet-m2d §5.1); M2D2 stage 1 is the same objective
METHOD_DEFAULTS["m2d_clap"] = {**METHOD_DEFAULTS["m2d"], "clap_weight": 0.01}
METHOD_DEFAULTS["m2d2_stage1"] = {**METHOD_DEFAULTS["m2d_clap"]}
# M2D2 stage 2: training hyper-parameters are not public (fact-sheet-m2d §9); kikimimi's choice: 30 epochs
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
#: methods built on the M2D ViT (80-bin M2D front end, patch sizes, official-style run names)
M2D_FAMILY = ("m2d", "m2d_clap", "m2d2_stage1", "m2d2_stage2")
#: methods that pair each item with a caption
CAPTION_METHODS = ("m2d_clap", "m2d2_stage1", "m2d2_stage2")
COMMON_DEFAULTS: dict[str, Any] = {
    "steps": None,
    "warmup_steps": None,
    "warmup_epochs": None,
    "workers": 0,
    "device": "auto",
    "amp": "auto",
    "save_every": None,
    "keep_checkpoints": None,
    "log_every": 10,
    "norm_stats": None,
    "norm_samples": 10000,
    "pad_mode": None,
    "frontend_on_device": False,
    "init_from": None,
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # absent flags stay absent so config file / method defaults apply
    p.add_argument(
        "--method",
        choices=("m2d", "byola", "byola2", "m2d_clap", "m2d2_stage1", "m2d2_stage2"),
        default=S,
        help="objective (required)",
    )
    p.add_argument(
        "--data", nargs="+", default=S, metavar="CORPUS", help="audio folders, CSV lists or prep caches"
    )
    p.add_argument("--out", default=S, help="parent folder of the run folder (default: runs)")
    p.add_argument(
        "--size", choices=("tiny", "small", "base", "large"), default=S, help="M2D ViT size (base)"
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=S, help="optimiser steps")
    length.add_argument("--epochs", type=float, default=S, help="epochs (M2D 300, BYOL-A 100)")
    p.add_argument("--batch-size", type=int, default=S, help="items per process (M2D 512, BYOL-A 256)")
    p.add_argument("--accum-iter", type=int, default=S, help="gradient accumulation micro-batches (1)")
    lr = p.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=float, default=S, help="absolute learning rate (BYOL-A: the official 3e-4, v2 1e-4)")
    lr.add_argument(
        "--blr", type=float, default=S, help="base lr; lr = blr × effective batch / 256 (M2D 3e-4)"
    )
    p.add_argument("--min-lr", type=float, default=S, help="end of the cosine schedule (0)")
    p.add_argument("--warmup-epochs", type=float, default=S, help="linear warm-up (M2D 20 epochs)")
    p.add_argument("--warmup-steps", type=int, default=S, help="linear warm-up in steps (overrides epochs)")
    p.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay (M2D 0.05)")
    p.add_argument("--grad-clip", type=float, default=S, help="max gradient norm (M2D 3.0; 0 = off)")
    p.add_argument("--input-frames", type=int, default=S, help="crop length in frames (M2D 608, BYOL-A 96)")
    p.add_argument("--patch-size", default=S, help="M2D patch FxT in (bins x frames), e.g. 16x16")
    p.add_argument("--sample-rate", type=int, choices=(16000, 32000), default=S, help="M2D rate in Hz")
    p.add_argument("--mask-ratio", type=float, default=S, help="M2D mask ratio (0.7)")
    p.add_argument("--ema-taus", type=float, nargs=2, default=S, metavar=("START", "END"),
                   help="M2D target EMA decay, linear over the run (default auto: the official 0.99995 0.99999 for "
                   "runs of >= 100k steps, 0.999 0.9999 for shorter ones, whose target would otherwise stay random)")
    p.add_argument("--byola-dim", type=int, default=S, help="BYOL-A encoder output d (v1 512, v2 3072)")
    p.add_argument(
        "--mlp-lr-scale",
        type=float,
        default=S,
        help="BYOL-A: lr multiplier of the encoder's MLP layers (default auto: 1 for runs of >= 100k steps and "
        "--init-from; for shorter v1 runs 0, which keeps them at their random initialisation)",
    )
    p.add_argument(
        "--pre-norm",
        choices=("running", "precomputed"),
        default=S,
        help="BYOL-A pre-normalisation: running statistics inside the method (v1 default) or corpus "
        "statistics in the data pipeline (v2 default)",
    )
    p.add_argument("--min-epoch-size", type=int, default=S, help="repeat small corpora up to N items/epoch")
    p.add_argument(
        "--pad-mode",
        choices=("wave_zero", "log_silence", "log_zero"),
        default=S,
        help="padding of short items (audio: wave_zero, cache: log_silence)",
    )
    p.add_argument(
        "--norm-stats",
        type=float,
        nargs=2,
        metavar=("MEAN", "STD"),
        default=S,
        help="log-mel normalisation (default: estimated from the corpus)",
    )
    p.add_argument("--norm-samples", type=int, default=S, help="crops used to estimate norm stats (10000)")
    p.add_argument(
        "--frontend-on-device",
        action="store_true",
        default=S,
        help="compute log-mels on the training device instead of in data workers (audio only)",
    )
    p.add_argument("--workers", type=int, default=S, help="DataLoader worker processes (0)")
    p.add_argument("--device", default=S, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=S, help="mixed precision (auto)")
    p.add_argument("--seed", type=int, default=S, help="seed (M2D 3, BYOL-A 42)")
    p.add_argument("--save-every", type=int, default=S, help="checkpoint period in steps (default: end only)")
    p.add_argument("--keep-checkpoints", type=int, default=S, help="keep only the newest N checkpoints")
    p.add_argument("--log-every", type=int, default=S, help="log period in steps (10)")
    p.add_argument("--run-name", default=S, help="run folder name (default: official-style name)")
    p.add_argument("--resume", default=S, help="continue a run: run folder or checkpoint file")
    p.add_argument(
        "--init-from",
        default=S,
        metavar="OFFICIAL_CHECKPOINT",
        help="further pre-training: start from an official full checkpoint (m2d2_stage2: the stage-1 run)",
    )
    p.add_argument(
        "--captions",
        default=S,
        metavar="CAPTIONS",
        help="M2D-CLAP/M2D2: caption table (.csv/.json; embedded with --text-encoder) or caption-embedding cache",
    )
    p.add_argument(
        "--text-encoder",
        default=S,
        metavar="SPEC",
        help="text encoder (minilm, st:PATH, gte:PATH, bert:PATH, llm:PATH#eos, smollm2#eos): embeds a caption "
        "table for m2d_clap/m2d2_stage1, is trained in m2d2_stage2",
    )
    p.add_argument("--clap-weight", type=float, default=S, help="CLAP loss weight in M2D-CLAP (0.01)")
    p.add_argument(
        "--missing-captions",
        choices=("error", "skip"),
        default=S,
        help="training files without a caption: error listing them (default) or skip them with a warning",
    )
    p.add_argument(
        "--unfreeze-audio",
        action="store_true",
        default=S,
        help="m2d2_stage2: also train the stage-1 audio encoder (frozen by default)",
    )
    p.add_argument("--sem-mode", type=int, choices=(1, 2, 3, 4), default=S, help="m2d2_stage2 projector mode (1)")
    p.add_argument("--config", default=S, metavar="FILE.json", help="settings file (keys = option names)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar")


# ---------------------------------------------------------------------------------------------- settings
def _parse_pair(text: Any, what: str) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        a, b = str(text).lower().split("x")
        return [int(a), int(b)]
    except ValueError:
        raise ValueError(f"{what} must look like 16x16, got {text!r}") from None


def resolve_settings(cli: dict[str, Any]) -> dict[str, Any]:
    """Merge explicit flags, an optional ``--config`` JSON file and the method defaults."""
    file_cfg: dict[str, Any] = {}
    if cli.get("config"):
        path = Path(cli["config"])
        try:
            file_cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--config '{path}': cannot read JSON settings: {err}") from None
        if not isinstance(file_cfg, dict):
            raise ValueError(f"--config '{path}': expected a JSON object of settings")
        file_cfg = {k.replace("-", "_"): v for k, v in file_cfg.items()}
    method = cli.get("method") or file_cfg.get("method")
    if method not in METHOD_DEFAULTS:
        raise ValueError("--method is required: m2d, byola, byola2, m2d_clap, m2d2_stage1 or m2d2_stage2")
    s: dict[str, Any] = {"out": "runs", **COMMON_DEFAULTS, **METHOD_DEFAULTS[method], **file_cfg}
    explicit = {k: v for k, v in cli.items() if k not in ("config", "_run", "command")}
    if "steps" in explicit or "epochs" in explicit:  # a length flag replaces the other one
        s["steps"] = s["epochs"] = None
    s.update(explicit)
    s["method"] = method
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
    if method in M2D_FAMILY:
        s["patch_size"] = _parse_pair(s["patch_size"], "--patch-size")
    if method in CAPTION_METHODS and not s.get("resume"):
        _check_caption_settings(s)
    return s


def _check_caption_settings(s: dict[str, Any]) -> None:
    """Required flags of the caption methods (before any data is read)."""
    method = s["method"]
    if not s.get("captions"):
        raise ValueError(f"--method {method} needs --captions (caption table .csv/.json or embedding cache)")
    if method == "m2d2_stage2":
        if not s.get("init_from"):
            raise ValueError("--method m2d2_stage2 needs --init-from STAGE1_RUN_OR_CHECKPOINT")
        if not s.get("text_encoder"):
            raise ValueError("--method m2d2_stage2 needs --text-encoder SPEC (the text encoder to train)")
        if _is_embedding_cache(s["captions"]):
            raise ValueError(
                f"--captions {s['captions']}: m2d2_stage2 trains its text encoder and needs caption texts "
                "(a .csv/.json caption table), not an embedding cache"
            )
    elif not _is_embedding_cache(s["captions"]) and not s.get("text_encoder"):
        raise ValueError(
            f"--captions {s['captions']} is a caption table: give --text-encoder SPEC to embed it "
            "(or pass a caption-embedding cache)"
        )


def _is_embedding_cache(path: Any) -> bool:
    return Path(str(path)).suffix.lower() not in (".csv", ".json", ".tsv")


def _frontend_preset(s: dict[str, Any]) -> str:
    if s["method"] in M2D_FAMILY:
        return "m2d-32k" if int(s["sample_rate"]) == 32000 else "m2d-16k"
    return "byola"


def _run_folder_name(s: dict[str, Any], n_mels: int, method_cfg: dict[str, Any]) -> str:
    date = _dt.date.today().strftime("%y%m%d")
    if s["method"] == "m2d2_stage2":
        from kikimimi.methods.m2d2 import stage2_folder_name
        from kikimimi.models.vit import ViTConfig

        return stage2_folder_name(ViTConfig.from_dict(s["vit_config"]), s.get("text_encoder"), date)
    if s["method"] in ("m2d_clap", "m2d2_stage1"):
        f, t = s["patch_size"]
        sr = "p32k" if int(s["sample_rate"]) == 32000 else ""
        return f"m2d_clap_vit_{s['size']}-{n_mels}x{s['input_frames']}p{f}x{t}{sr}-{date}"
    if s["method"] == "m2d":
        f, t = s["patch_size"]
        sr = "p32k" if int(s["sample_rate"]) == 32000 else ""
        return f"m2d_vit_{s['size']}-{n_mels}x{s['input_frames']}p{f}x{t}{sr}-{date}"
    return f"{_byola_stem(s, n_mels, method_cfg)}-{date}"


def _byola_stem(s: dict[str, Any], n_mels: int, method_cfg: dict[str, Any]) -> str:
    family = "AudioNTT2020" if s["method"] == "byola" else "AudioNTT2022"
    return f"{family}-BYOLA-{n_mels}x{s['input_frames']}d{method_cfg.get('d')}"


def _unique_dir(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name}-{n}", n + 1
    return candidate


#: M2D target EMA schedules: the official one (fact-sheet-m2d §3.1, tuned for ~300k steps of batch 2048)
#: and kikimimi's short-run one. With 0.99995 the target of a few-thousand-step run barely moves from its
#: random init; measured on the open suite (tiny ViT, 2000 steps of 64, lr 5e-4, 4 real tasks, logistic
#: probe): official 59.7 %, (0.999, 0.9999) 61.8 %, (0.99, 0.999) 57.2 % (at step 1000), random init 56.1 %.
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


def planned_steps(settings: dict[str, Any], n_items: int, world_size: int = 1) -> int:
    """Optimiser steps the trainer will run (``--steps``, or epochs × items per epoch / global batch)."""
    if settings.get("steps") is not None:
        return int(settings["steps"])
    per_rank = n_items // max(1, world_size)
    iters = per_rank // int(settings["batch_size"])
    return max(1, int(float(settings["epochs"]) * iters) // int(settings.get("accum_iter") or 1))


def _run_length_rule(settings: dict[str, Any], n_items: int, world_size: int) -> tuple[bool, str]:
    """``(official, why)``: whether a run gets the official (long-run) value of an ``auto`` setting.

    Official for further pre-training (``--init-from``: the networks are trained already) and for runs of
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
    (``--init-from``), and by the short-run schedule otherwise."""
    if settings.get("ema_taus") not in (None, "auto"):
        return
    official, why = _run_length_rule(settings, n_items, world_size)
    taus = OFFICIAL_EMA_TAUS if official else SHORT_RUN_EMA_TAUS
    settings["ema_taus"] = list(taus)
    settings["ema_taus_rule"] = f"auto: {why} → {taus[0]} → {taus[1]}"


def resolve_byola_auto(settings: dict[str, Any], n_items: int, world_size: int = 1) -> None:
    """Fill in BYOL-A's run-dependent defaults.

    - ``lr`` unset: the version's official Adam rate (v1 3e-4, v2 1e-4);
    - ``mlp_lr_scale: "auto"``: by the run-length rule (:func:`_run_length_rule`), 1 (official) for long
      runs and further pre-training, otherwise :data:`SHORT_RUN_BYOLA_MLP_LR_SCALE` for methods that have
      one (1 for the others); written back with an ``mlp_lr_scale_rule`` entry that says why.

    Explicit values stay.
    """
    from kikimimi.methods.byola import OFFICIAL_LR  # torch: imported only when a run starts

    method = settings["method"]
    if settings.get("lr") is None:
        settings["lr"] = OFFICIAL_LR[2 if method == "byola2" else 1]
    if settings.get("mlp_lr_scale") == "auto":
        official, why = _run_length_rule(settings, n_items, world_size)
        scale = 1.0 if official else SHORT_RUN_BYOLA_MLP_LR_SCALE.get(method, 1.0)
        settings["mlp_lr_scale"] = scale
        settings["mlp_lr_scale_rule"] = f"auto: {why} → {scale:g}"


def _build_method(s: dict[str, Any], norm_stats):
    import torch

    from kikimimi.methods import build_method

    torch.manual_seed(int(s["seed"]))
    if s["method"] == "m2d2_stage2":
        return build_method(
            "m2d2_stage2",
            vit_config=s["vit_config"],
            text_encoder=s["text_encoder"],
            sem_mode=int(s.get("sem_mode") or 1),
            unfreeze_audio=bool(s.get("unfreeze_audio")),
            norm_stats=norm_stats.to_list(),
        )
    if s["method"] in ("m2d_clap", "m2d2_stage1"):
        return build_method(
            s["method"],
            size=s["size"],
            input_size=(80, int(s["input_frames"])),
            patch_size=tuple(s["patch_size"]),
            sample_rate=int(s["sample_rate"]),
            mask_ratio=float(s["mask_ratio"]),
            ema_taus=tuple(float(t) for t in s["ema_taus"]),
            norm_stats=norm_stats.to_list(),
            text_dim=s.get("text_dim"),
            clap_weight=float(s["clap_weight"] if s.get("clap_weight") is not None else 0.01),
            text_encoder=s.get("text_encoder"),
        )
    if s["method"] == "m2d":
        n_mels = 80
        return build_method(
            "m2d",
            size=s["size"],
            input_size=(n_mels, int(s["input_frames"])),
            patch_size=tuple(s["patch_size"]),
            sample_rate=int(s["sample_rate"]),
            mask_ratio=float(s["mask_ratio"]),
            ema_taus=tuple(float(t) for t in s["ema_taus"]),
            norm_stats=norm_stats.to_list(),
        )
    kw: dict[str, Any] = {"n_mels": 64, "input_frames": int(s["input_frames"]), "lr": s.get("lr")}
    kw["pre_norm"] = s.get("pre_norm") or "precomputed"
    if kw["pre_norm"] == "running":
        kw["epoch_samples"] = int(s["epoch_samples"])
    if s.get("byola_dim"):
        kw["d"] = int(s["byola_dim"])
    if s.get("mlp_lr_scale") is not None:  # absent from settings saved before the option existed
        kw["mlp_lr_scale"] = float(s["mlp_lr_scale"])
    return build_method(s["method"], **kw)


def _load_official(path: str):
    try:
        from kikimimi.checkpoints import safe_torch_load
    except ImportError:
        import torch

        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    return safe_torch_load(path)


def _export_kikimimi(settings: dict[str, Any], official: Path, out: Path, stats) -> str | None:
    """Also write the encoder in kikimimi's own format when :mod:`kikimimi.checkpoints` provides it."""
    try:
        from kikimimi.checkpoints import load_encoder, save_kikimimi
    except ImportError:
        return None
    try:
        kw: dict[str, Any] = {"norm_stats": stats.to_list()}
        if settings["method"] in M2D_FAMILY:
            kw.update(
                size=settings["size"],
                input_size=(80, int(settings["input_frames"])),
                patch_size=tuple(settings["patch_size"]),
                sample_rate=int(settings["sample_rate"]),
            )
        save_kikimimi(load_encoder(official, **kw), out)
    except Exception as err:  # optional export must not fail a finished run
        print(f"note: kikimimi-format export skipped: {err}")
        return None
    return str(out)


# ---------------------------------------------------------------------------------------------- captions
def _load_caption_table(path: str):
    """A ``kikimimi.data.captions.CaptionTable`` from a ``.csv`` / ``.json`` caption file."""
    from kikimimi.data.captions import CaptionTable

    return CaptionTable.load(path)


def _caption_cache_path(run_dir: Path, spec: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in spec).strip("_")[:40] or "text"
    return run_dir / f"caption-embeddings-{slug}.safetensors"


def _prepare_embedding_cache(settings: dict[str, Any], run_dir: Path, dist) -> tuple[Any, str]:
    """Open (or first build, on rank 0, resumably) the caption-embedding cache; ``(cache, path)``.

    A caption table is embedded with ``--text-encoder`` into ``run_dir/caption-embeddings-<spec>.safetensors``
    (+ ``.info.json`` recording the encoder); an existing cache is reused. A given cache is checked against
    ``--text-encoder`` when its side-car records one.
    """
    from kikimimi.data.caption_pairs import read_cache_info, write_cache_info
    from kikimimi.data.captions import CaptionEmbeddingCache
    from kikimimi.training.distributed import barrier

    captions = str(settings["captions"])
    spec = settings.get("text_encoder")
    if _is_embedding_cache(captions):
        cache = CaptionEmbeddingCache.load(captions)
        info = read_cache_info(captions) or {}
        made_by = info.get("text_encoder") or cache.encoder_name
        if spec and made_by and _spec_key(spec) not in (_spec_key(made_by), _spec_key(cache.encoder_name)):
            raise ValueError(
                f"--captions '{captions}' was made with text encoder {made_by!r}, not --text-encoder {spec!r}"
            )
        settings["text_encoder"] = spec or made_by
        return cache, captions
    cache_path = _caption_cache_path(run_dir, str(spec))
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not cache_path.exists():
            from kikimimi.models.text import load_text_encoder

            encoder = load_text_encoder(str(spec), device=dist.device)
            cache = CaptionEmbeddingCache.build(_load_caption_table(captions), encoder, cache_path)
            write_cache_info(cache_path, text_encoder=str(spec), dim=int(cache.dim), captions=captions)
            print(f"embedded captions of {captions} with {spec} into {cache_path}")
    barrier()
    settings["caption_cache"] = str(cache_path)
    return CaptionEmbeddingCache.load(cache_path), str(cache_path)


def _spec_key(spec: str) -> str:
    """A text-encoder spec with its path made absolute (``gte:models/gte`` ≡ ``gte:/abs/models/gte``)."""
    import os

    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return str(spec)
    path, hash_, suffix = rest.partition("#")
    return f"{kind}:{os.path.abspath(path)}{hash_}{suffix}"


def _stage1_setup(settings: dict[str, Any]):
    """m2d2_stage2: read the stage-1 encoder; its sizes and statistics become the run's settings."""
    from kikimimi.checkpoints import load_encoder
    from kikimimi.methods.m2d2 import resolve_stage1_checkpoint, vit_size_name
    from kikimimi.models.vit import ViTConfig

    ckpt = resolve_stage1_checkpoint(settings["init_from"])
    bundle = load_encoder(ckpt)
    if bundle.family != "m2d":
        raise ValueError(f"--init-from '{ckpt}': m2d2_stage2 needs an M2D / M2D-CLAP encoder, got {bundle.family}")
    vit = ViTConfig.from_dict(bundle.config["vit"])
    settings.update(
        init_from=str(ckpt),
        vit_config=vit.to_dict(),
        size=vit_size_name(vit),
        input_frames=int(vit.input_size[1]),
        patch_size=list(vit.patch_size),
        sample_rate=int(vit.sample_rate),
        norm_stats=bundle.norm_stats.to_list(),
    )
    return bundle


# ---------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from kikimimi.data.corpus import CropDataset, DeviceLogMel, estimate_norm_stats, resolve_corpus
    from kikimimi.features.normstats import NormStats
    from kikimimi.fileio import atomic_torch_save, atomic_write_json
    from kikimimi.training.checkpointing import find_resume_checkpoint
    from kikimimi.training.distributed import broadcast_object, cleanup_distributed, init_distributed
    from kikimimi.training.trainer import TrainConfig, Trainer, load_training_checkpoint

    cli = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    resume_path = None
    if cli.get("resume"):
        resume_path = find_resume_checkpoint(cli["resume"])
        saved = load_training_checkpoint(resume_path)["args"]
        known = {
            *COMMON_DEFAULTS,
            *METHOD_DEFAULTS["m2d"],
            *METHOD_DEFAULTS["byola"],
            "data",
            "method",
            "out",
        }
        settings = {k: v for k, v in saved.items() if k in known}
        for key in RESUME_OVERRIDES:
            if key in cli:
                settings[key] = cli[key]
        if "steps" in cli:
            settings["epochs"] = None
        if "epochs" in cli:
            settings["steps"] = None
        settings["workers"] = cli.get("workers", saved.get("num_workers", 0))
        settings["progress"] = cli.get("progress", True)
        run_dir = resume_path.resolve().parent
    else:
        settings = resolve_settings(cli)
        run_dir = None

    dist = init_distributed(settings.get("device") or "auto")
    try:
        method_name = settings["method"]
        if method_name in BYOLA_METHODS and not settings.get("pre_norm"):
            settings["pre_norm"] = "precomputed"  # runs saved before --pre-norm existed normalised in the pipeline
        stage1 = _stage1_setup(settings) if method_name == "m2d2_stage2" and resume_path is None else None
        corpus = resolve_corpus(settings["data"])
        captions = embeddings = caption_source = None
        if method_name in CAPTION_METHODS:
            from kikimimi.data.caption_pairs import caption_lists, filter_captioned

            if run_dir is None:
                parent = Path(settings.get("out") or "runs")
                name = settings.get("run_name") or _run_folder_name(settings, 80, {})
                run_dir = _unique_dir(parent, name) if dist.is_main else None
                run_dir = Path(broadcast_object(str(run_dir) if run_dir else None))
            if method_name == "m2d2_stage2":
                captions = caption_lists(_load_caption_table(str(settings["captions"])))
                caption_source, available = str(settings["captions"]), list(captions)
            else:
                embeddings, caption_source = _prepare_embedding_cache(settings, run_dir, dist)
                available = list(embeddings.keys())
            corpus, caption_keys = filter_captioned(
                corpus, available, settings.get("missing_captions") or "error", source=caption_source
            )
        preset = _frontend_preset(settings)
        if corpus.kind == "cache" and corpus.preset and corpus.preset != preset:
            raise ValueError(
                f"prep cache was made with preset {corpus.preset!r} but --method {settings['method']} "
                f"needs {preset!r}; re-run kikimimi prep with that preset"
            )
        frames = int(settings["input_frames"])
        ds_kw = dict(
            frontend=preset,
            seed=int(settings["seed"]),
            min_epoch_size=int(settings.get("min_epoch_size") or 0),
            pad_mode=settings.get("pad_mode"),
        )
        if settings.get("norm_stats"):
            stats = NormStats.from_list(settings["norm_stats"])
        else:
            stats = None
            if dist.is_main:
                probe = CropDataset(corpus, frames, **ds_kw)
                stats = estimate_norm_stats(
                    probe,
                    int(settings["norm_samples"]),
                    int(settings["seed"]),
                    num_workers=int(settings.get("workers") or 0),
                )
            stats = broadcast_object(stats)
        settings["norm_stats"] = stats.to_list()
        # BYOL-A v1 running pre-norm: the method normalises raw crops itself (stats above are still written
        # for the exported encoder); update budget 10 × epoch_samples, epoch_samples = 2 × files (v1 recipe)
        running_norm = method_name in BYOLA_METHODS and settings.get("pre_norm") == "running"
        if running_norm:
            settings["epoch_samples"] = 2 * len(corpus)
        pipeline_stats = None if running_norm else stats

        on_device = bool(settings.get("frontend_on_device")) and corpus.kind == "audio"
        dataset = CropDataset(
            corpus,
            frames,
            norm_stats=None if on_device else pipeline_stats,
            output="wave" if on_device else "lms",
            **ds_kw,
        )
        transform = DeviceLogMel(preset, frames, pipeline_stats).to(dist.device) if on_device else None
        if method_name in CAPTION_METHODS:
            from kikimimi.data.caption_pairs import CaptionCropDataset

            dataset = CaptionCropDataset(
                dataset, embeddings=embeddings, captions=captions, keys=caption_keys, source=caption_source
            )
            if dataset.text_dim is not None:
                settings["text_dim"] = int(dataset.text_dim)

        if "ema_taus" in METHOD_DEFAULTS.get(method_name, {}):
            resolve_ema_taus(settings, len(dataset), dist.world_size)
        if method_name in BYOLA_METHODS:
            resolve_byola_auto(settings, len(dataset), dist.world_size)
        method = _build_method(settings, stats)
        method_cfg = method.config_dict()
        if method_name == "m2d2_stage2":
            method.set_captions(dataset.caption_texts)
            if stage1 is not None:
                method.load_stage1_encoder(stage1.encoder.state_dict(), norm_stats=stats.to_list())
        elif settings.get("init_from") and resume_path is None:
            ignored = method.load_official_state_dict(_load_official(settings["init_from"]))
            settings["init_from_ignored_keys"] = len(ignored)

        if run_dir is None:
            parent = Path(settings.get("out") or "runs")
            name = settings.get("run_name") or _run_folder_name(settings, dataset.n_mels or 80, method_cfg)
            run_dir = _unique_dir(parent, name) if dist.is_main else None
            run_dir = Path(broadcast_object(str(run_dir) if run_dir else None))
        settings["run_dir"] = str(run_dir)

        cfg = TrainConfig(
            method=settings["method"],
            size=str(settings.get("size")),
            steps=settings.get("steps"),
            epochs=settings.get("epochs"),
            batch_size=int(settings["batch_size"]),
            accum_iter=int(settings["accum_iter"]),
            lr=settings.get("lr"),
            blr=float(settings.get("blr") or 3e-4),
            optimizer=settings["optimizer"],
            betas=tuple(settings["betas"]),
            weight_decay=float(settings["weight_decay"]),
            schedule=settings["schedule"],
            warmup_steps=settings.get("warmup_steps"),
            warmup_epochs=settings.get("warmup_epochs"),
            min_lr=float(settings["min_lr"]),
            grad_clip=settings.get("grad_clip"),
            amp=settings["amp"],
            device=settings["device"],
            seed=int(settings["seed"]),
            num_workers=int(settings.get("workers") or 0),
            save_every=settings.get("save_every"),
            keep_checkpoints=settings.get("keep_checkpoints"),
            log_every=int(settings["log_every"]),
            out_dir=str(run_dir),
            resume=str(resume_path) if resume_path else None,
            progress=bool(settings.get("progress", True)),
        )
        extra = {k: v for k, v in settings.items() if k not in cfg.to_dict()}
        extra["method_config"] = method_cfg
        extra["frontend_preset"] = preset
        extra["data"] = [str(d) for d in settings["data"]]
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "config.json", {**extra, **cfg.to_dict()})
        result = Trainer(method, dataset, cfg, args=extra, batch_transform=transform, dist=dist).fit()

        if dist.is_main:
            written = [str(result.checkpoint)]
            if settings["method"] in ("byola", "byola2"):
                enc = run_dir / f"{_byola_stem(settings, dataset.n_mels or 64, method_cfg)}.pth"
                atomic_torch_save(method.export_official_state_dict(), enc)
                written.append(str(enc))
            ours = _export_kikimimi(settings, Path(written[-1]), run_dir / "kikimimi", stats)
            if ours is not None:
                written.append(ours)
            last = result.losses.get(result.step)
            loss_txt = f", final loss {last:.4f}" if last is not None else ""
            print(f"pre-training finished at step {result.step}/{result.total_steps}{loss_txt}")
            rn = getattr(method, "running_norm", None)
            if rn is not None:
                print(f"  running pre-norm after {rn.count} item updates: mean {rn.mean:.4f}, std {rn.std:.4f}")
            for w in written:
                print(f"  wrote {w}")
    finally:
        cleanup_distributed(dist)
    return 0
