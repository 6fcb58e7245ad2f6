"""`kikimimi pretrain`: self-supervised pre-training of M2D, M2D-CLAP / M2D2 or BYOL-A (v1/v2) on a corpus.

Settings are resolved in this order: explicit command-line flags > ``--config FILE.json`` (keys = the
long option names with ``_``) > the method's recipe (``--recipe official|cpu-small``, by default chosen by the
device; :mod:`kikimimi.methods.recipes`); see
:mod:`kikimimi.training.settings`. Every resolved setting is written to ``config.json`` in the run folder,
which is created inside ``--out`` with an official-style name (:mod:`kikimimi.training.run_folder`):

- M2D: ``m2d_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>[-<n>]`` (the name parsers recover the input and
  patch sizes and the sample rate from it) holding ``checkpoint-<step>.pth`` in the official layout;
- BYOL-A: ``AudioNTT2020-BYOLA-<F>x<T>d<d>-<yymmdd>`` (v2: ``AudioNTT2022-…``), plus the encoder state
  dict ``AudioNTT2020-BYOLA-<F>x<T>d<d>.pth`` written at the end. ``--pre-norm running`` (v1 default)
  feeds raw log-mel crops to the method, which normalises them with running statistics;
  ``precomputed`` (v2 default) normalises in the data pipeline with corpus statistics.

``--method m2d_clap`` (and ``m2d2_stage1``, the same objective against LLM-based caption embeddings) needs
``--captions`` = a caption table (CSV/JSON; embedded first with ``--text-encoder`` inside the run folder,
reused on resume) or a caption-embedding cache (NTT's ``rawcap_*.csv`` / ``capembs_*.npy`` and ``files_*.csv``
are read as they are, :mod:`kikimimi.data.official_lists`); run folders are named
``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>-<yymmdd>`` (stage 1: ``…p16kp<code>-<yymmdd>-<tags>-e<epochs>``).
``--method m2d2_stage2`` trains the semantic projector and a text encoder (``--text-encoder``) on the encoder of
``--init-from STAGE1_RUN`` (frozen unless ``--unfreeze-audio``), folder
``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p16kp<code>pTI-<tags>-<yymmdd>`` (tags:
:func:`kikimimi.training.run_folder.official_run_tags`).

Multi-process: ``torchrun --nproc_per_node=N -m kikimimi pretrain …`` (gloo on CPU, nccl on CUDA);
``--batch-size`` is per process. ``--resume RUN_DIR|CHECKPOINT`` restores every setting from the
checkpoint (only ``--steps/--epochs``, ``--workers``, ``--device``, ``--amp`` may change).

The run itself is :func:`kikimimi.training.pretrain.run_pretraining`; this module parses the flags.
"""

from __future__ import annotations

import argparse
import sys

NAME = "pretrain"
HELP = "pre-train an M2D, M2D-CLAP / M2D2 or BYOL-A encoder on audio files or a prep cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # absent flags stay absent so config file / method defaults apply
    p.add_argument(
        "--method",
        choices=("m2d", "byola", "byola2", "m2d_clap", "m2d2_stage1", "m2d2_stage2"),
        default=S,
        help="objective (required unless --recipe names a recipe for one method)",
    )
    p.add_argument(
        "--data", nargs="+", default=S, metavar="CORPUS",
        help="audio folders, CSV lists, prep caches or NTT's files_*.csv lists of *_lms log-mels"
    )
    p.add_argument(
        "--recipe",
        choices=("auto", "official", "cpu-small", "first-run-m2d", "first-run-byola", "first-run-clap",
                 "open-m2d-tiny", "open-clap-tiny", "m2d2-stage2.1"),
        default=S,
        help="starting settings: official (the papers'), cpu-small (measured short CPU runs: tiny M2D, batch 64, "
        "2000 steps; BYOL-A batch 64, 640 steps), first-run-m2d / first-run-byola / first-run-clap (the first "
        "run's, `kikimimi demo`; they imply --method), open-m2d-tiny / open-clap-tiny (the open encoder's "
        "and CLAP's final runs), "
        "m2d2-stage2.1 (M2D2 stage 2 from a stage-2 file, no training mask; implies --method m2d2_stage2) or auto "
        "(default: official on CUDA, cpu-small otherwise); "
        "flags below override it",
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
    p.add_argument("--mask-ratio", type=float, default=S,
                   help="M2D mask ratio (0.7); m2d2_stage2: training mask of the encoder input (0.3; 0 = stage 2.1)")
    p.add_argument("--mask-strategy", choices=("random", "dwm", "var", "sgim", "ibm", "structured",
                                               "structured-masked"), default=S,
                   help="M2D, m2d_clap, m2d2_stage1: random (default), dwm / var (dispersion-weighted: mean absolute "
                   "deviation / variance), sgim (object-centric) or ibm (inverse block), NTT's IJCNN 2026 masking "
                   "(docs/masking.md); m2d2_stage2 training mask: structured (official code: marked rows/columns "
                   "stay visible), random (official --random_mask) or structured-masked (marked rows/columns "
                   "masked, as described)")
    p.add_argument("--hint-start-epoch", type=int, default=S, metavar="E",
                   help="dwm/var/sgim/ibm: plain random masking before epoch E (official --masking_start_epoch 50)")
    p.add_argument("--hint-k", type=float, default=S, metavar="K",
                   help="dwm/var/sgim/ibm: hint ratio 1 - (epoch/epochs)^K from --hint-start-epoch on "
                   "(official --masking_hint_k 2)")
    p.add_argument("--hint-ratio", type=float, default=S, metavar="H",
                   help="dwm/var/sgim/ibm: a constant hint ratio instead of the schedule (official --abs_hint_ratio; "
                   "1 = random masking)")
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
    p.add_argument("--save-every", type=int, default=S,
                   help="checkpoint period in steps (default: a tenth of the run, only the newest kept)")
    p.add_argument("--keep-checkpoints", type=int, default=S,
                   help="keep only the newest N checkpoints (default: all with --save-every, else 1)")
    p.add_argument("--log-every", type=int, default=S, help="log period in steps (10)")
    p.add_argument("--run-name", default=S, help="run folder name (default: official-style name)")
    p.add_argument("--resume", default=S, help="continue a run: run folder or checkpoint file")
    p.add_argument(
        "--init-from",
        default=S,
        metavar="OFFICIAL_CHECKPOINT",
        help="further pre-training: start from an official full checkpoint, by path or registered name "
        "(kikimimi models list); m2d2_stage2: the stage-1 run",
    )
    p.add_argument("--accept-licence", action="store_true", default=S,
                   help="accept the licence of an official --init-from model given by name on its first download")
    p.add_argument(
        "--captions",
        default=S,
        metavar="CAPTIONS",
        help="M2D-CLAP/M2D2: caption table (.csv/.json, or NTT's rawcap_*.csv files / their folder; embedded with "
        "--text-encoder) or caption-embedding cache (also NTT's capembs_*.npy / their folder)",
    )
    p.add_argument(
        "--text-encoder",
        default=S,
        metavar="SPEC",
        help="text encoder (minilm, st:PATH, gte:PATH, bert:PATH, llm:PATH#eos, smollm2#eos, nvembed:PATH = "
        "NV-Embed-v2 through its own remote code): embeds a caption table for m2d_clap/m2d2_stage1, is trained in "
        "m2d2_stage2",
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
    p.add_argument("--sem-mode", type=int, choices=(0, 1, 2, 3, 4), default=S,
                   help="audio projector: 0 = the 2024 MLP on the mean of the visible tokens (m2d_clap default), 1-4 = "
                   "the semantic-token projector of depth 1-4 (m2d2_stage1 and m2d2_stage2: 1)")
    p.add_argument("--config", default=S, metavar="FILE.json", help="settings file (keys = option names)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths
    from kikimimi.training.pretrain import run_pretraining
    from kikimimi.training.settings import PretrainSettings, resolve_settings, resume_settings

    check_model_paths([getattr(args, "init_from", None)])  # before statistics or a cache are made
    given = {k: v for k, v in vars(args).items() if k in (*PretrainSettings.names(), "config")}  # no global flags
    settings = resume_settings(given) if given.get("resume") else resolve_settings(given)
    from kikimimi.training.checkpointing import CheckpointDiskFullError

    try:
        run_pretraining(settings, log=print, auto_cache=True)  # audio --data read many times: a log-mel cache
    except CheckpointDiskFullError as exc:  # the run failed part-way: one line, exit 1 (NOTHING_DONE)
        print(f"kikimimi pretrain: error: {exc}", file=sys.stderr)
        return 1
    return 0
