"""One pre-training run assembled from its settings: the library entry point of ``kikimimi pretrain`` and
of the demo.

:func:`run_pretraining` takes the settings of :func:`~kikimimi.training.settings.resolve_settings` (a new
run) or :func:`~kikimimi.training.settings.resume_settings` (a resumed one) and

1. finds the run folder (a new one from :func:`~kikimimi.training.run_folder.claim_run_dir`, or the
   folder of the checkpoint it resumes); M2D2 stage 2 first reads its stage-1 encoder, whose sizes and
   statistics become the run's settings;
2. reads the corpus and, for the caption methods, pairs each file with its captions
   (:mod:`kikimimi.training.captions`);
3. estimates the log-mel normalisation statistics (rank 0) unless given. BYOL-A ``pre_norm: "running"``
   feeds raw log-mel crops to the method, which normalises them with running statistics (update budget
   10 × 2 × files); the corpus statistics are still recorded, they go with the exported encoder;
4. builds the method from its recipe (:mod:`kikimimi.methods.recipes` fills in the ``auto`` settings),
   loads ``init_from`` weights, writes ``config.json`` and runs the :class:`~kikimimi.training.trainer.Trainer`;
5. exports the encoder: BYOL-A's state dict ``<AudioNTT2020-BYOLA-…>.pth`` beside the checkpoints, and the
   kikimimi format in ``<run folder>/kikimimi``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.checkpoints import load_encoder, safe_torch_load, save_kikimimi
from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.checkpoints.hub import resolve_model_source
from kikimimi.checkpoints.names import vit_size_name
from kikimimi.checkpoints.runs import resolve_run_checkpoint
from kikimimi.data.caption_cache import CaptionEmbeddingCache
from kikimimi.data.caption_pairs import CaptionCropDataset, caption_lists, filter_captioned
from kikimimi.data.corpus import Corpus, CropDataset, DeviceLogMel, estimate_norm_stats, resolve_corpus
from kikimimi.features.normstats import NormStats
from kikimimi.fileio import atomic_torch_save, atomic_write_json
from kikimimi.methods import build_method
from kikimimi.methods.recipes import (
    BYOLA_METHODS,
    CAPTION_METHODS,
    M2D_METHODS,
    frontend_preset,
    resolve_auto_settings,
)
from kikimimi.models.vit import AudioViT, ViTConfig
from kikimimi.training.captions import load_caption_table, prepare_embedding_cache
from kikimimi.training.distributed import DistInfo, broadcast_object, cleanup_distributed, init_distributed
from kikimimi.training.run_folder import byola_encoder_stem, claim_run_dir
from kikimimi.training.trainer import TrainConfig, Trainer, TrainResult

__all__ = ["build_method_from_settings", "run_pretraining"]

Log = Callable[[str], None]


def run_pretraining(settings: dict[str, Any], log: Log | None = None) -> TrainResult:
    """Run (or continue) the pre-training run that ``settings`` describe; see the module docstring.

    ``settings`` is completed in place with what the run decides (``norm_stats``, ``run_dir``, the values of
    ``auto`` settings and why…), as written to ``config.json``. ``log`` receives a few lines on rank 0
    (caption embedding, the final loss, the files written); ``None`` = quiet.

    Raises:
        ValueError: data that do not fit the settings (prep-cache preset, captions, stage-1 encoder).
    """
    log = log or (lambda _line: None)
    dist = init_distributed(settings.get("device") or "auto")
    try:
        resume = settings.get("resume")
        if settings["method"] in BYOLA_METHODS and not settings.get("pre_norm"):
            settings["pre_norm"] = "precomputed"  # runs saved before --pre-norm existed normalised in the pipeline
        stage1 = _stage1_setup(settings) if settings["method"] == "m2d2_stage2" and not resume else None
        corpus = resolve_corpus(settings["data"])
        preset = frontend_preset(settings["method"], settings["sample_rate"])
        if corpus.kind == "cache" and corpus.preset and corpus.preset != preset:
            raise ValueError(
                f"prep cache was made with preset {corpus.preset!r} but --method {settings['method']} "
                f"needs {preset!r}; re-run kikimimi prep with that preset"
            )
        run_dir = Path(resume).resolve().parent if resume else claim_run_dir(settings, dist)
        if dist.is_main:
            log(f"resuming {run_dir} from {Path(resume).name}" if resume else f"run folder: {run_dir}")
            if settings.get("recipe_rule"):
                log(f"recipe {settings['recipe']} ({settings['recipe_rule']})")
        try:
            return _assemble_and_train(settings, dist, corpus, preset, run_dir, stage1, log)
        except BaseException:
            if not resume and dist.is_main and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # nothing was written: leave no empty run folder behind
            raise
    finally:
        cleanup_distributed(dist)


def _assemble_and_train(
    settings: dict[str, Any],
    dist: DistInfo,
    corpus: Corpus,
    preset: str,
    run_dir: Path,
    stage1: EncoderBundle | None,
    log: Log,
) -> TrainResult:
    """Steps 2–5 of the module docstring, in ``run_dir`` (which exists on rank 0)."""
    method_name = settings["method"]
    captions = None
    if method_name in CAPTION_METHODS:
        corpus, captions = _pair_with_captions(settings, corpus, run_dir, dist, log)
    frames = int(settings["input_frames"])
    crop_kw = dict(
        frontend=preset,
        seed=int(settings["seed"]),
        min_epoch_size=int(settings.get("min_epoch_size") or 0),
        pad_mode=settings.get("pad_mode"),
    )
    stats = _norm_stats(settings, corpus, frames, crop_kw, dist, log)
    settings["norm_stats"] = stats.to_list()
    running_norm = method_name in BYOLA_METHODS and settings.get("pre_norm") == "running"
    if running_norm:
        settings["epoch_samples"] = 2 * len(corpus)  # the v1 recipe's epoch: 2 × files
    pipeline_stats = None if running_norm else stats

    on_device = bool(settings.get("frontend_on_device")) and corpus.kind == "audio"
    dataset = CropDataset(
        corpus,
        frames,
        norm_stats=None if on_device else pipeline_stats,
        output="wave" if on_device else "lms",
        **crop_kw,
    )
    transform = DeviceLogMel(preset, frames, pipeline_stats).to(dist.device) if on_device else None
    if captions is not None:
        dataset = CaptionCropDataset(
            dataset, embeddings=captions.embeddings, captions=captions.texts, keys=captions.keys,
            source=captions.source,
        )  # fmt: skip
        if dataset.text_dim is not None:
            settings["text_dim"] = int(dataset.text_dim)

    resolve_auto_settings(settings, len(dataset), dist.world_size)
    method = build_method_from_settings(settings, stats)
    method_cfg = method.config_dict()
    if method_name == "m2d2_stage2":
        method.set_captions(dataset.caption_texts)
        if stage1 is not None:
            method.load_stage1_encoder(stage1.encoder.state_dict(), norm_stats=stats.to_list())
    elif settings.get("init_from") and not settings.get("resume"):
        # a registered name (kikimimi models list) is fetched; the licence is accepted by KIKIMIMI_ACCEPT_LICENCE=1
        source = resolve_model_source(settings["init_from"], accept_licence=bool(settings.get("accept_licence")))
        settings["init_from"] = str(source)
        ignored = method.load_official_state_dict(safe_torch_load(source))
        settings["init_from_ignored_keys"] = len(ignored)
    settings["run_dir"] = str(run_dir)

    cfg = _train_config(settings, run_dir)
    extra = {k: v for k, v in settings.items() if k not in cfg.to_dict()}
    extra["method_config"] = method_cfg
    extra["frontend_preset"] = preset
    extra["data"] = [str(d) for d in settings["data"]]
    if dist.is_main:
        atomic_write_json(run_dir / "config.json", {**extra, **cfg.to_dict()})
    if dist.is_main:
        length = f"{cfg.steps} steps" if cfg.steps is not None else f"{cfg.epochs:g} epochs"
        log(f"{method_name}: {length} of batch {cfg.batch_size} × {frames} frames on {dist.device}, "
            f"{len(dataset)} items per epoch")
        if corpus.kind == "audio" and not on_device and cfg.num_workers == 0:
            log(f"note: every crop's log-mel is computed from the audio during training; `kikimimi prep … -o CACHE "
                f"--preset {preset}` once and --data CACHE (or --workers N) is several times faster")
    result = Trainer(method, dataset, cfg, args=extra, batch_transform=transform, dist=dist, notice=log).fit()
    if dist.is_main:
        written = _export(settings, method, result, run_dir, stats, log)
        last = result.losses.get(result.step)
        loss_txt = f", final loss {last:.4f}" if last is not None else ""
        log(f"pre-training finished at step {result.step}/{result.total_steps}{loss_txt}")
        rn = getattr(method, "running_norm", None)
        if rn is not None:
            log(f"  running pre-norm after {rn.count} item updates: mean {rn.mean:.4f}, std {rn.std:.4f}")
        for path in written:
            log(f"  wrote {path}")
    return result


# ---------------------------------------------------------------------------------------------- parts
def _stage1_setup(settings: dict[str, Any]) -> EncoderBundle:
    """M2D2 stage 2: read the stage-1 encoder; its sizes and statistics become the run's settings."""
    ckpt = resolve_run_checkpoint(settings["init_from"])
    bundle = load_encoder(ckpt)
    if not isinstance(bundle.encoder, AudioViT):
        raise ValueError(
            f"--init-from '{ckpt}': m2d2_stage2 needs an M2D / M2D-CLAP encoder, got {type(bundle.encoder).__name__}"
        )
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


@dataclass
class _Captions:
    """The captions of the kept files: one key per file into ``embeddings`` (a cache) or ``texts``."""

    keys: list[str]
    source: str
    embeddings: CaptionEmbeddingCache | None = None
    texts: dict[str, list[str]] | None = None


def _pair_with_captions(
    settings: dict[str, Any], corpus: Corpus, run_dir: Path, dist: DistInfo, log: Log
) -> tuple[Corpus, _Captions]:
    """The corpus files that have captions (the others raise or are skipped, ``missing_captions``)."""
    if settings["method"] == "m2d2_stage2":
        texts = caption_lists(load_caption_table(str(settings["captions"])))
        captions = _Captions([], str(settings["captions"]), texts=texts)
        available = list(texts)
    else:
        cache, source = prepare_embedding_cache(settings, run_dir, dist, log)
        captions = _Captions([], source, embeddings=cache)
        available = list(cache.keys())
    corpus, captions.keys = filter_captioned(
        corpus, available, settings.get("missing_captions") or "error", source=captions.source
    )
    return corpus, captions


def _norm_stats(
    settings: dict[str, Any], corpus: Corpus, frames: int, crop_kw: dict[str, Any], dist: DistInfo, log: Log
) -> NormStats:
    """The given ``norm_stats``, or the corpus mean/std of ``norm_samples`` crops (rank 0, shared)."""
    if settings.get("norm_stats"):
        return NormStats.from_list(settings["norm_stats"])
    stats = None
    if dist.is_main:
        log(f"normalisation statistics from {int(settings['norm_samples'])} random crops of the corpus "
            "(--norm-stats MEAN STD skips this)")
        probe = CropDataset(corpus, frames, **crop_kw)
        stats = estimate_norm_stats(
            probe, int(settings["norm_samples"]), int(settings["seed"]), num_workers=int(settings.get("workers") or 0)
        )
    return broadcast_object(stats)


def build_method_from_settings(s: dict[str, Any], norm_stats: NormStats) -> nn.Module:
    """The run's method (:func:`kikimimi.methods.build_method`) with its weights initialised from ``seed``."""
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
    if s["method"] in ("m2d", "m2d_clap", "m2d2_stage1"):
        m2d_kw: dict[str, Any] = dict(
            size=s["size"],
            input_size=(80, int(s["input_frames"])),
            patch_size=tuple(s["patch_size"]),
            sample_rate=int(s["sample_rate"]),
            mask_ratio=float(s["mask_ratio"]),
            ema_taus=tuple(float(t) for t in s["ema_taus"]),
            norm_stats=norm_stats.to_list(),
        )
        if s["method"] != "m2d":
            m2d_kw.update(
                text_dim=s.get("text_dim"),
                clap_weight=float(s["clap_weight"] if s.get("clap_weight") is not None else 0.01),
                text_encoder=s.get("text_encoder"),
            )
        return build_method(s["method"], **m2d_kw)
    kw: dict[str, Any] = {"n_mels": 64, "input_frames": int(s["input_frames"]), "lr": s.get("lr")}
    kw["pre_norm"] = s.get("pre_norm") or "precomputed"
    if kw["pre_norm"] == "running":
        kw["epoch_samples"] = int(s["epoch_samples"])
    if s.get("byola_dim"):
        kw["d"] = int(s["byola_dim"])
    if s.get("mlp_lr_scale") is not None:  # absent from settings saved before the option existed
        kw["mlp_lr_scale"] = float(s["mlp_lr_scale"])
    return build_method(s["method"], **kw)


def _train_config(settings: dict[str, Any], run_dir: Path) -> TrainConfig:
    return TrainConfig(
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
        resume=settings.get("resume"),
        progress=bool(settings.get("progress", True)),
    )


def _export(
    settings: dict[str, Any], method: nn.Module, result: TrainResult, run_dir: Path, stats: NormStats, log: Log
) -> list[str]:
    """Write the exported encoders; returns every file written at the end of the run (checkpoint first)."""
    written = [str(result.checkpoint)]
    if settings["method"] in BYOLA_METHODS:
        enc = run_dir / f"{byola_encoder_stem(settings)}.pth"
        atomic_torch_save(method.export_official_state_dict(), enc)
        written.append(str(enc))
    out = run_dir / "kikimimi"
    kw: dict[str, Any] = {"norm_stats": stats.to_list()}
    if settings["method"] in M2D_METHODS:
        kw.update(
            size=settings["size"],
            input_size=(80, int(settings["input_frames"])),
            patch_size=tuple(settings["patch_size"]),
            sample_rate=int(settings["sample_rate"]),
        )
    try:
        save_kikimimi(load_encoder(Path(written[-1]), **kw), out)
    except Exception as err:  # the kikimimi-format copy must not fail a finished run
        log(f"note: kikimimi-format export skipped: {err}")
    else:
        written.append(str(out))
    return written
