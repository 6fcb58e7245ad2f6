"""One short pre-training run of the first run (what ``kikimimi pretrain`` runs), reused when finished."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kikimimi.training.pretrain import run_pretraining
from kikimimi.training.settings import resolve_settings, resume_settings

__all__ = ["pretrain", "intermediate_settings"]


def intermediate_settings(steps: int, keep_intermediate: bool) -> dict[str, Any]:
    """Checkpoint settings: by default ``save_every: auto`` keeps only the newest checkpoint (the final one at
    the end); ``keep_intermediate`` saves every third of the run and keeps every checkpoint."""
    if keep_intermediate:
        return {"save_every": max(steps // 3, 1), "keep_checkpoints": None}
    return {"save_every": "auto", "keep_checkpoints": 1}


def pretrain(out: Path, data: Path, method: str, run_name: str, steps: int, extra: dict[str, Any],
             log: Callable[[str], None] = print) -> Path:
    """Run (or resume, or reuse) the run ``out/pretrain/<run_name>``; returns its run folder.

    Args:
        out: the demo folder. data: a prep cache or an audio list. method: a ``kikimimi pretrain`` method.
        steps: optimiser steps. extra: further settings (the long option names of ``kikimimi pretrain`` with
            ``_``), e.g. ``{"size": "tiny", "batch_size": 32}`` and :func:`intermediate_settings`.
        log: line printer for the run's messages.
    """
    parent = out / "pretrain"
    run_dir = parent / run_name
    if (run_dir / "kikimimi" / "config.json").exists():
        log(f"   {run_dir} already trained")
        return run_dir
    if run_dir.is_dir() and not any(run_dir.glob("checkpoint-*.pth")):
        shutil.rmtree(run_dir)  # an attempt that died before its first checkpoint: start afresh, same name
    given = {"method": method, "data": [str(data)], "out": str(parent), "run_name": run_name, "steps": steps,
             "min_epoch_size": 1000, "norm_samples": 500, "progress": False,
             **intermediate_settings(steps, False), **extra}
    if any(run_dir.glob("checkpoint-*.pth")):
        settings = resume_settings({**given, "resume": str(run_dir)})
    else:
        settings = resolve_settings(given)
    run_pretraining(settings, log=lambda line: log("   " + line))
    return run_dir
