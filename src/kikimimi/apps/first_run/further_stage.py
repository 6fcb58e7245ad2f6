"""The first run's further pre-training: the packaged ``open-m2d-tiny`` continued with M2D on the unlabelled pool.

The official "further pre-training" use of a released M2D: its own recipe (``open-m2d-tiny``,
:mod:`kikimimi.methods.recipes`: 2.08-s crops, batch 64, absolute lr 5e-4) run for a few dozen steps on the first
run's pool, starting from the shipped weights (online encoder *and* target; a fresh predictor,
:func:`kikimimi.training.further.encoder_init_file`) and keeping the shipped log-mel statistics. The run goes
through the same code path as the first run's from-scratch runs (:func:`kikimimi.apps.first_run.pretraining.
pretrain`): ``kikimimi pretrain --recipe open-m2d-tiny --init-from INIT.pth --norm-stats MEAN STD --data POOL
--steps N`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kikimimi.apps.first_run.pretraining import pretrain
from kikimimi.checkpoints import load_encoder
from kikimimi.checkpoints.registry import find_entry
from kikimimi.training.further import encoder_init_file
from kikimimi.training.settings import recipe_values

__all__ = ["SHIPPED_ENCODER", "FURTHER_RECIPE", "FURTHER_RUN_NAME", "shipped_encoder_folder", "further_pretrain"]

#: kikimimi's packaged encoder (issue 27), probed beside log-mel statistics and continued on the pool
SHIPPED_ENCODER = "open-m2d-tiny"
#: the packaged encoder's own recipe, continued (its batch and crop length; the run length is the first run's)
FURTHER_RECIPE = "open-m2d-tiny"
FURTHER_RUN_NAME = "open-m2d-tiny-further"
_RECIPE = recipe_values(FURTHER_RECIPE)
#: batch size and crop length (frames) of a further pre-training step
FURTHER_BATCH: int = _RECIPE["batch_size"]
FURTHER_FRAMES: int = _RECIPE["input_frames"]


def shipped_encoder_folder() -> Path | None:
    """The packaged ``open-m2d-tiny`` folder of this installation, or ``None`` when it has none."""
    entry = find_entry(SHIPPED_ENCODER)
    if entry is None or not entry.packaged or not (Path(entry.url) / "model.safetensors").is_file():
        return None
    return Path(entry.url)


def further_pretrain(
    out: Path,
    pool_cache: Path,
    steps: int,
    *,
    extra: dict[str, Any] | None = None,
    seed: int = 0,
    encoder: str | Path = SHIPPED_ENCODER,
    log: Callable[[str], None] = print,
) -> Path:
    """Continue ``encoder`` (default: the packaged ``open-m2d-tiny``) with M2D on ``pool_cache``; returns the run
    folder ``out/pretrain/open-m2d-tiny-further`` (its encoder in ``kikimimi/``), reused when finished.

    Args:
        out: the demo folder. pool_cache: the pool's ``m2d-16k`` prep cache. steps: optimiser steps (batch
            :data:`FURTHER_BATCH` of :data:`FURTHER_FRAMES`-frame crops).
        extra: further settings (e.g. checkpointing, ``batch_size`` in tests). seed: the predictor's seed.
        encoder: the encoder to continue (a packaged name, a kikimimi folder or an official encoder file).
        log: line printer.

    The initial state (``out/pretrain/open-m2d-tiny-init.pth``) is removed once the run has exported its encoder.
    """
    out = Path(out)
    init = out / "pretrain" / f"{SHIPPED_ENCODER}-init.pth"
    run_dir = out / "pretrain" / FURTHER_RUN_NAME
    stats = load_encoder(encoder).norm_stats.to_list()
    if not (run_dir / "kikimimi" / "config.json").exists() and not any(run_dir.glob("checkpoint-*.pth")):
        encoder_init_file(encoder, init, mask_ratio=float(_RECIPE["mask_ratio"]), seed=seed)
        log(f"   initial state: {encoder}'s encoder as online network and target, a fresh predictor ({init.name})")
    given = {
        "save_every": "auto",
        "log_every": max(1, int(steps) // 4),
        **(extra or {}),
        "init_from": str(init),
        "norm_stats": stats,
        "seed": int(seed),
    }
    run_dir = pretrain(out, pool_cache, FURTHER_RECIPE, FURTHER_RUN_NAME, steps, given, log=log)
    if (run_dir / "kikimimi" / "config.json").exists():
        init.unlink(missing_ok=True)
    return run_dir
