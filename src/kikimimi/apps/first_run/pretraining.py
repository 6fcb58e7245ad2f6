"""One short pre-training run of the first run (what ``kikimimi pretrain --recipe NAME`` runs), reused when finished.

The recipes are named ones of :mod:`kikimimi.methods.recipes` (``first-run-m2d``, ``first-run-byola``,
``first-run-clap``): ``kikimimi pretrain --recipe first-run-m2d --data POOL --steps N`` resolves the same settings
as the first run's M2D stage (:func:`first_run_given` is what the stage asks for).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kikimimi.training.pretrain import run_pretraining
from kikimimi.training.settings import resolve_settings, resume_settings

__all__ = ["first_run_given", "intermediate_settings", "pretrain"]


def intermediate_settings(steps: int, keep_intermediate: bool) -> dict[str, Any]:
    """Checkpoint settings: none by default (``save_every: auto`` keeps only the newest checkpoint, the final one
    at the end); ``keep_intermediate`` saves every third of the run and keeps every checkpoint."""
    if keep_intermediate:
        return {"save_every": max(steps // 3, 1), "keep_checkpoints": None}
    return {}


def first_run_given(out: Path, data: Path, recipe: str, run_name: str, steps: int,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings a first-run stage gives over the named ``recipe``: the data, the run folder
    ``out/pretrain/<run_name>``, the length, no progress bar and ``extra`` (e.g. :func:`intermediate_settings`)."""
    return {"recipe": recipe, "data": [str(data)], "out": str(out / "pretrain"), "run_name": run_name,
            "steps": steps, "progress": False, **(extra or {})}


def pretrain(out: Path, data: Path, recipe: str, run_name: str, steps: int, extra: dict[str, Any] | None = None,
             log: Callable[[str], None] = print) -> Path:
    """Run (or resume, or reuse) the run ``out/pretrain/<run_name>``; returns its run folder.

    Args:
        out: the demo folder. data: a prep cache or an audio list. recipe: a named recipe for one method
            (``first-run-m2d``…, :data:`kikimimi.methods.recipes.RECIPES`). steps: optimiser steps.
        extra: further settings (the long option names of ``kikimimi pretrain`` with ``_``), e.g.
            ``{"captions": …}`` and :func:`intermediate_settings`.
        log: line printer for the run's messages.
    """
    run_dir = out / "pretrain" / run_name
    if (run_dir / "kikimimi" / "config.json").exists():
        log(f"   {run_dir} already trained")
        return run_dir
    if run_dir.is_dir() and not any(run_dir.glob("checkpoint-*.pth")):
        shutil.rmtree(run_dir)  # an attempt that died before its first checkpoint: start afresh, same name
    given = first_run_given(out, data, recipe, run_name, steps, extra)
    if any(run_dir.glob("checkpoint-*.pth")):
        settings = resume_settings({**given, "resume": str(run_dir)})
    else:
        settings = resolve_settings(given)
    run_pretraining(settings, log=lambda line: log("   " + line))
    return run_dir
