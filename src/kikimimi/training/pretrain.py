"""One pre-training run assembled from its settings: the library entry point of ``kikimimi pretrain`` and
of the demo.

:func:`run_pretraining` takes the settings of :func:`~kikimimi.training.settings.resolve_settings` (a new
run) or :func:`~kikimimi.training.settings.resume_settings` (a resumed one) and

1. finds the run folder (a new one from :func:`~kikimimi.training.run_folder.claim_run_dir`, or the
   folder of the checkpoint it resumes); a method trained on a stage-1 encoder (M2D2 stage 2) first reads it,
   and its sizes and statistics become the run's settings;
2. reads the corpus and, for the caption methods, pairs each file with its captions
   (:mod:`kikimimi.training.captions`); with ``auto_cache`` (``kikimimi pretrain``) audio ``--data`` that the
   run would decode many times is first converted once into a log-mel cache beside the runs, or an earlier one
   is reused (:func:`data_cache_rule`);
3. estimates the log-mel normalisation statistics (rank 0) unless given. BYOL-A ``pre_norm: "running"``
   feeds raw log-mel crops to the method, which normalises them with running statistics (update budget
   10 × 2 × files); the corpus statistics are still recorded, they go with the exported encoder;
4. fills in the ``auto`` settings (:func:`kikimimi.methods.recipes.resolve_auto_settings`), lets the method
   build itself (``METHODS[method].from_settings``: no method is named here), loads ``init_from`` weights,
   writes ``config.json`` (the settings' ``asdict`` and the run's
   :class:`~kikimimi.training.settings.RunDecisions`) and runs the :class:`~kikimimi.training.trainer.Trainer`;
5. exports the encoder: BYOL-A's state dict ``<AudioNTT2020-BYOLA-…>.pth`` beside the checkpoints, and the
   kikimimi format in ``<run folder>/kikimimi``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.checkpoints import load_encoder, safe_torch_load, save_kikimimi
from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.checkpoints.hub import resolve_model_source
from kikimimi.checkpoints.names import vit_size_name
from kikimimi.checkpoints.ours import LICENCE_NOTE
from kikimimi.checkpoints.runs import CHECKPOINT_PREFIX, resolve_run_checkpoint
from kikimimi.data.caption_cache import CaptionEmbeddingCache
from kikimimi.data.caption_pairs import CaptionCropDataset, caption_lists, filter_captioned
from kikimimi.data.corpus import Corpus, CropDataset, DeviceLogMel, estimate_norm_stats, resolve_corpus
from kikimimi.features.normstats import NormStats
from kikimimi.features.prep_cache import prep_cache
from kikimimi.fileio import atomic_torch_save, atomic_write_json
from kikimimi.methods import METHODS
from kikimimi.methods.recipes import frontend_preset, planned_steps, resolve_auto_settings
from kikimimi.models.vit import AudioViT, ViTConfig
from kikimimi.training.captions import caption_key_matcher, load_caption_table, prepare_embedding_cache
from kikimimi.training.distributed import DistInfo, broadcast_object, cleanup_distributed, init_distributed
from kikimimi.training.further import encoder_init_state
from kikimimi.training.run_folder import byola_encoder_stem, claim_run_dir
from kikimimi.training.settings import PretrainSettings
from kikimimi.training.trainer import TrainConfig, Trainer, TrainResult

__all__ = ["CACHE_MIN_READS", "data_cache_rule", "expected_reads", "run_pretraining"]

Log = Callable[[str], None]

#: ``auto_cache``: train from a log-mel cache when the run would decode its audio files at least this many times in
#: all, and each at least ``CACHE_MIN_READS[1]`` times on average (preparing a cache decodes each file once).
CACHE_MIN_READS = (1000, 2)


def expected_reads(settings: PretrainSettings, n_files: int) -> int:
    """How many audio crops a run from audio files decodes (each decodes its whole file): the normalisation
    statistics' ``norm_samples`` (unless ``norm_stats`` are given) plus ``steps × batch_size × accum_iter`` or
    ``epochs`` × the epoch's items (files repeated up to ``min_epoch_size``; BYOL-A ``running``: 2 × files)."""
    reads = 0 if settings.norm_stats else int(settings.norm_samples or 0)
    batch = int(settings.batch_size or 0) * max(1, int(settings.accum_iter or 1))
    if settings.steps:
        reads += int(settings.steps) * batch
    elif settings.epochs:
        epoch = max(n_files, int(settings.min_epoch_size or 0))
        if settings.pre_norm == "running":
            epoch = 2 * n_files
        reads += int(math.ceil(float(settings.epochs) * epoch))
    return reads


def data_cache_rule(settings: PretrainSettings, corpus: Corpus, world_size: int = 1) -> str | None:
    """Why a run from audio ``corpus`` should train from a log-mel cache (``None``: it should not): audio files
    (not a cache), the front end in the data pipeline (not ``frontend_on_device``), a pad mode a cache can
    reproduce (not ``wave_zero`` given explicitly), no captions to pair by file, one process, and at least
    :data:`CACHE_MIN_READS` decodes (:func:`expected_reads`)."""
    if corpus.kind != "audio" or settings.frontend_on_device or settings.pad_mode == "wave_zero":
        return None
    if METHODS[settings.method].caption_input is not None or world_size > 1:
        return None
    n, reads = len(corpus), expected_reads(settings, len(corpus))
    if reads < CACHE_MIN_READS[0] or reads < CACHE_MIN_READS[1] * n:
        return None
    return (f"the run decodes its {n} audio files about {reads} times ({reads / n:.0f} each); "
            "a log-mel cache computes each once")


def _use_data_cache(settings: PretrainSettings, corpus: Corpus, preset: str, run_dir: Path, dist: DistInfo,
                    log: Log) -> Corpus:
    """The corpus to train from: ``corpus``, or the log-mel cache that :func:`data_cache_rule` (a new run) or the
    run being resumed (its ``config.json``) asks for, prepared or completed now. The cache folder,
    ``<runs>/logmel-cache-<preset>-<hash of the --data paths>``, is shared by the runs on the same data."""
    if settings.resume:
        try:
            saved = json.loads((run_dir / "config.json").read_text())["decisions"]
        except (OSError, ValueError, KeyError, TypeError):
            return corpus
        cache, rule = saved.get("data_cache"), saved.get("data_cache_rule")
        if not cache:
            return corpus
        cache = Path(cache)
    else:
        rule = data_cache_rule(settings, corpus, dist.world_size)
        if rule is None:
            return corpus
        key = json.dumps([preset, sorted(str(Path(s).resolve()) for s in corpus.sources)])
        cache = run_dir.parent / f"logmel-cache-{preset}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    result = prep_cache(corpus.sources, cache, preset, workers=max(1, int(settings.workers or 0)))
    failed = f", {len(result.failed)} unreadable (listed in errors.csv)" if result.failed else ""
    log(f"training from the log-mel cache {cache} ({result.converted} files converted now, {result.skipped} "
        f"reused{failed}): {rule}")
    settings.decisions.data_cache, settings.decisions.data_cache_rule = str(cache), rule
    return resolve_corpus([cache])


def run_pretraining(settings: PretrainSettings, log: Log | None = None, *, auto_cache: bool = False) -> TrainResult:
    """Run (or continue) the pre-training run that ``settings`` describe; see the module docstring.

    The run's settings, with the values it decides (``norm_stats``, the ``auto`` settings, a stage-1 encoder's
    sizes), and its :class:`~kikimimi.training.settings.RunDecisions` (why, the statistics, the epoch size…) are
    written to ``config.json``; ``settings`` itself is not changed. ``log`` receives a few lines on rank 0
    (caption embedding, the final loss, the files written); ``None`` = quiet. ``auto_cache`` (``kikimimi
    pretrain``): train from a log-mel cache when :func:`data_cache_rule` says it is faster (one line says so).

    Raises:
        ValueError: data that do not fit the settings (prep-cache preset, captions, stage-1 encoder).
    """
    log = log or (lambda _line: None)
    dist = init_distributed(settings.device or "auto")
    try:
        resume = settings.resume
        stage1 = None
        if METHODS[settings.method].trains_on_stage1 and not resume:
            settings, stage1 = _stage1_setup(settings)
        corpus = resolve_corpus(settings.data)
        preset = frontend_preset(settings.method, settings.sample_rate)
        if corpus.kind == "cache" and corpus.preset and corpus.preset != preset:
            raise ValueError(
                f"prep cache was made with preset {corpus.preset!r} but --method {settings.method} "
                f"needs {preset!r}; re-run kikimimi prep with that preset"
            )
        run_dir = Path(resume).resolve().parent if resume else claim_run_dir(settings, dist)
        if dist.is_main:
            log(f"resuming {run_dir} from {Path(resume).name}" if resume else f"run folder: {run_dir}")
            if settings.decisions.recipe_rule:
                log(f"recipe {settings.recipe} ({settings.decisions.recipe_rule})")
        if auto_cache and dist.world_size == 1:
            corpus = _use_data_cache(settings, corpus, preset, run_dir, dist, log)
        try:
            return _assemble_and_train(settings, dist, corpus, preset, run_dir, stage1, log)
        except BaseException:
            if not resume and dist.is_main and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # nothing was written: leave no empty run folder behind
            raise
    finally:
        cleanup_distributed(dist)


def _assemble_and_train(
    settings: PretrainSettings,
    dist: DistInfo,
    corpus: Corpus,
    preset: str,
    run_dir: Path,
    stage1: EncoderBundle | None,
    log: Log,
) -> TrainResult:
    """Steps 2–5 of the module docstring, in ``run_dir`` (which exists on rank 0)."""
    method_cls = METHODS[settings.method]
    decisions = settings.decisions
    captions = None
    if method_cls.caption_input is not None:
        corpus, captions, settings = _pair_with_captions(settings, corpus, run_dir, dist, log)
    frames = int(settings.input_frames)
    crop_kw = dict(
        frontend=preset,
        seed=int(settings.seed),
        min_epoch_size=int(settings.min_epoch_size or 0),
        pad_mode=settings.pad_mode,
    )
    stats = _norm_stats(settings, corpus, frames, crop_kw, dist, log)
    settings = settings.updated(norm_stats=stats.to_list())
    decisions.norm_stats = stats.to_list()
    running_norm = settings.pre_norm == "running"
    if running_norm:
        decisions.epoch_samples = 2 * len(corpus)  # the v1 recipe's epoch: 2 × files
    pipeline_stats = None if running_norm else stats

    on_device = bool(settings.frontend_on_device) and corpus.kind == "audio"
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
            decisions.text_dim = int(dataset.text_dim)
    decisions.epoch_items = len(dataset)

    changes, rules = resolve_auto_settings(settings, len(dataset), dist.world_size)
    settings = settings.updated(**changes)
    for name, why in rules.items():
        setattr(decisions, name, why)
    torch.manual_seed(int(settings.seed))  # the method's initial weights
    run_epochs, run_steps = _run_length(settings, len(dataset), dist.world_size)
    method = method_cls.from_settings(settings, norm_stats=stats.to_list(), text_dim=decisions.text_dim,
                                      epoch_samples=decisions.epoch_samples, run_epochs=run_epochs,
                                      run_steps=run_steps, start_step=_resume_step(settings.resume))
    if method_cls.caption_input == "texts":
        method.set_captions(dataset.caption_texts)
    if stage1 is not None:  # M2D2 stage 2: the encoder; from a stage-2 file (2.1) also the projector, text side
        method.load_stage1(stage1, norm_stats=stats.to_list())
    elif settings.init_from and not settings.resume and not method_cls.trains_on_stage1:
        # a registered name (kikimimi models list) is fetched; the licence is accepted by KIKIMIMI_ACCEPT_LICENCE=1
        source = resolve_model_source(settings.init_from, accept_licence=bool(settings.accept_licence))
        settings = settings.updated(init_from=str(source))
        # an encoder-only release (a kikimimi folder such as the packaged open-m2d-tiny) continues as M2D-X
        # does: online encoder and target from the release, a fresh predictor (kikimimi.training.further)
        state = encoder_init_state(source, seed=settings.seed or 0) if source.is_dir() else safe_torch_load(source)
        ignored = method.load_official_state_dict(state)
        decisions.init_from_ignored_keys = len(ignored)
    decisions.run_dir = str(run_dir)
    method_cfg = method.config_dict()

    cfg = _train_config(settings, run_dir)
    record = {**settings.to_dict(), "decisions": asdict(decisions), "method_config": method_cfg,
              "frontend_preset": preset}
    if dist.is_main:
        atomic_write_json(run_dir / "config.json", {**record, "train_config": cfg.to_dict()})
    if dist.is_main:
        length = f"{cfg.steps} steps" if cfg.steps is not None else f"{cfg.epochs:g} epochs"
        log(f"{settings.method}: {length} of batch {cfg.batch_size} × {frames} frames on {dist.device}, "
            f"{len(dataset)} items per epoch")
        if corpus.kind == "audio" and not on_device and cfg.num_workers == 0:
            log(f"note: every crop's log-mel is computed from the audio during training; `kikimimi prep … -o CACHE "
                f"--preset {preset}` once and --data CACHE (or --workers N) is several times faster")
    result = Trainer(method, dataset, cfg, args=record, batch_transform=transform, dist=dist, notice=log).fit()
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
def _run_length(settings: PretrainSettings, n_items: int, world_size: int) -> tuple[float, int]:
    """``(epochs, optimiser steps)`` of the run as the trainer counts them (the M2D hint schedule's clock): the
    given epochs, or the steps over the micro-batches of an epoch (fractional)."""
    steps = planned_steps(settings, n_items, world_size)
    if settings.epochs is not None:
        return float(settings.epochs), steps
    iters = max(1, (n_items // max(1, world_size)) // int(settings.batch_size))
    return steps * int(settings.accum_iter or 1) / iters, steps


def _resume_step(resume: str | None) -> int:
    """The optimiser step of a resumed run's ``checkpoint-<step>.pth`` (0 for a new run)."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)\.pth", Path(resume).name) if resume else None
    return int(match.group(1)) if match else 0


def _stage1_setup(settings: PretrainSettings) -> tuple[PretrainSettings, EncoderBundle]:
    """A method trained on a stage-1 encoder (M2D2 stage 2): read it; its sizes and statistics become the
    run's settings."""
    ckpt = resolve_run_checkpoint(settings.init_from)
    bundle = load_encoder(ckpt)
    if not isinstance(bundle.encoder, AudioViT):
        raise ValueError(
            f"--init-from '{ckpt}': {settings.method} needs an M2D / M2D-CLAP encoder, "
            f"got {type(bundle.encoder).__name__}"
        )
    vit = ViTConfig.from_dict(bundle.config["vit"])
    settings = settings.updated(
        init_from=str(ckpt),
        vit_config=vit.to_dict(),
        size=vit_size_name(vit),
        input_frames=int(settings.input_frames or vit.input_size[1]),  # crop length (official stage 2: 1001)
        patch_size=list(vit.patch_size),
        sample_rate=int(vit.sample_rate),
        norm_stats=bundle.norm_stats.to_list(),
    )
    settings.decisions.norm_stats_from = f"the stage-1 encoder {ckpt}"
    return settings, bundle


@dataclass
class _Captions:
    """The captions of the kept files: one key per file into ``embeddings`` (a cache) or ``texts``."""

    keys: list[str]
    source: str
    embeddings: CaptionEmbeddingCache | None = None
    texts: dict[str, list[str]] | None = None


def _pair_with_captions(
    settings: PretrainSettings, corpus: Corpus, run_dir: Path, dist: DistInfo, log: Log
) -> tuple[Corpus, _Captions, PretrainSettings]:
    """The corpus files that have captions (the others raise or are skipped, ``missing_captions``): caption
    texts for a method that trains its text encoder, else embeddings; the settings, with the text encoder that
    made a given embedding cache."""
    if METHODS[settings.method].caption_input == "texts":
        texts = caption_lists(load_caption_table(str(settings.captions)))
        captions = _Captions([], str(settings.captions), texts=texts)
        available = list(texts)
    else:
        cache, source, spec = prepare_embedding_cache(settings.captions, settings.text_encoder, run_dir, dist, log)
        settings = settings.updated(text_encoder=spec)
        if source != str(settings.captions):  # a caption table embedded into the run folder
            settings.decisions.caption_cache = source
        captions = _Captions([], source, embeddings=cache)
        available = list(cache.keys())
    corpus, captions.keys = filter_captioned(
        corpus, available, settings.missing_captions or "error", source=captions.source,
        match=caption_key_matcher(str(settings.captions)),
    )  # fmt: skip
    return corpus, captions, settings


def _norm_stats(
    settings: PretrainSettings, corpus: Corpus, frames: int, crop_kw: dict[str, Any], dist: DistInfo, log: Log
) -> NormStats:
    """The given ``norm_stats``, or the corpus mean/std of ``norm_samples`` crops (rank 0, shared)."""
    if settings.norm_stats:
        given = f"the checkpoint {settings.resume}" if settings.resume else "given (--norm-stats)"
        settings.decisions.norm_stats_from = settings.decisions.norm_stats_from or given
        return NormStats.from_list(settings.norm_stats)
    stats = None
    if dist.is_main:
        log(f"normalisation statistics from {int(settings.norm_samples)} random crops of the corpus "
            "(--norm-stats MEAN STD skips this)")
        probe = CropDataset(corpus, frames, **crop_kw)
        stats = estimate_norm_stats(
            probe, int(settings.norm_samples), int(settings.seed), num_workers=int(settings.workers or 0)
        )
    settings.decisions.norm_stats_from = f"{int(settings.norm_samples)} random crops of the corpus"
    return broadcast_object(stats)


def _train_config(settings: PretrainSettings, run_dir: Path) -> TrainConfig:
    return TrainConfig(
        method=settings.method,
        size=str(settings.size),
        steps=settings.steps,
        epochs=settings.epochs,
        batch_size=int(settings.batch_size),
        accum_iter=int(settings.accum_iter),
        lr=settings.lr,
        blr=float(settings.blr or 3e-4),
        optimizer=settings.optimizer,
        betas=tuple(settings.betas),
        weight_decay=float(settings.weight_decay),
        schedule=settings.schedule,
        warmup_steps=settings.warmup_steps,
        warmup_epochs=settings.warmup_epochs,
        min_lr=float(settings.min_lr),
        grad_clip=settings.grad_clip,
        amp=settings.amp,
        device=settings.device,
        seed=int(settings.seed),
        num_workers=int(settings.workers or 0),
        save_every=settings.save_every,
        keep_checkpoints=settings.keep_checkpoints,
        log_every=int(settings.log_every),
        out_dir=str(run_dir),
        resume=settings.resume,
        progress=bool(settings.progress if settings.progress is not None else True),
    )


def run_licence_note(settings: PretrainSettings) -> str:
    """The ``licence_note`` of a run's exported folder: the converted-weights note when the run started from other
    weights (``init_from`` / a stage-1 file: their terms carry over), else a note that no third-party weights were
    used (the weights' terms are then the trainer's and the training data's)."""
    if settings.init_from:
        return (f"Further pre-trained by `kikimimi pretrain` from {settings.init_from}; the terms of those weights "
                f"carry over to this file. {LICENCE_NOTE}")
    return ("Trained from random initialisation by `kikimimi pretrain`; no third-party weights were used. The "
            "terms of these weights are the trainer's, subject to the licences of the training data.")


def _export(
    settings: PretrainSettings, method: nn.Module, result: TrainResult, run_dir: Path, stats: NormStats, log: Log
) -> list[str]:
    """Write the exported encoders; returns every file written at the end of the run (checkpoint first)."""
    written = [str(result.checkpoint)]
    method_cls = METHODS[settings.method]
    if method_cls.exports_encoder_state_dict:
        enc = run_dir / f"{byola_encoder_stem(settings)}.pth"
        atomic_torch_save(method.export_official_state_dict(), enc)
        written.append(str(enc))
    out = run_dir / "kikimimi"
    try:
        bundle = load_encoder(Path(written[-1]), norm_stats=stats.to_list(), **method_cls.export_kwargs(settings))
        if bundle.text_proj is not None and settings.text_encoder and not bundle.text_encoder_state:
            bundle.config["text_encoder"] = settings.text_encoder  # the frozen text side, for load_clap anywhere
        save_kikimimi(bundle, out, licence_note=run_licence_note(settings))
    except Exception as err:  # the kikimimi-format copy must not fail a finished run
        log(f"note: kikimimi-format export skipped: {err}")
    else:
        written.append(str(out))
    return written
