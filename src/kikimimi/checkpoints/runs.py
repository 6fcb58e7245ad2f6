"""Run folders written by the pre-training loop: ``checkpoint-<step>.pth`` files, the ``last.pth`` pointer,
and how a run folder given on the command line turns into one checkpoint file.

A run folder holds ``checkpoint-<step>.pth`` (official M2D training layout, see
:mod:`kikimimi.training.checkpointing`), ``last.pth`` (a relative symlink, hard link or copy of the newest
one), ``config.json`` and ``log.jsonl``; its name follows the official grammar of
:mod:`kikimimi.checkpoints.names`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from kikimimi.checkpoints.ours import is_kikimimi_checkpoint

__all__ = [
    "CHECKPOINT_PREFIX",
    "LAST_NAME",
    "find_resume_checkpoint",
    "list_checkpoints",
    "point_last",
    "resolve_run_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
LAST_NAME = "last.pth"


def point_last(run_dir: Path, checkpoint: Path) -> Path:
    """Make ``run_dir/last.pth`` refer to ``checkpoint`` (relative symlink, replaced atomically;
    a hard link or copy where symlinks are unavailable)."""
    last = run_dir / LAST_NAME
    # a name only kikimimi makes, with the writer's pid (:func:`kikimimi.fileio.remove_stale_temporaries`)
    tmp = run_dir / f".kikimimi-{os.getpid()}-{secrets.token_hex(4)}.{LAST_NAME}.tmp"
    try:
        try:
            os.symlink(checkpoint.name, tmp)
        except OSError:
            try:
                os.link(checkpoint, tmp)
            except OSError:
                shutil.copyfile(checkpoint, tmp)
        os.replace(tmp, last)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return last


def list_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-<step>.pth`` files in ``run_dir`` sorted by step."""
    found = []
    for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*.pth"):
        tail = p.stem[len(CHECKPOINT_PREFIX) :]
        if tail.isdigit():
            found.append((int(tail), p))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(path: str | Path) -> Path:
    """Resolve ``--resume``: a checkpoint file, or a run folder (its newest ``checkpoint-<step>.pth``, else
    ``last.pth``). Checkpoints are written atomically, so the newest one is complete even when the run was
    killed before ``last.pth`` was pointed at it.

    Raises:
        FileNotFoundError: nothing to resume from at ``path``.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        ckpts = list_checkpoints(p)
        if ckpts:
            return ckpts[-1]
        last = p / LAST_NAME
        if last.exists():
            return last.resolve()
        raise FileNotFoundError(
            f"--resume {p}: no {LAST_NAME} or {CHECKPOINT_PREFIX}<step>.pth in this folder"
        )
    raise FileNotFoundError(f"--resume {p}: no such file or folder")


def resolve_run_checkpoint(path: str | Path) -> Path:
    """A trained encoder to start from: a run folder (its ``last.pth`` / newest checkpoint), a checkpoint
    file or a kikimimi folder (e.g. the stage-1 run of M2D2 stage 2).

    Raises:
        FileNotFoundError: ``path`` is none of these.
    """
    p = Path(path)
    try:
        return find_resume_checkpoint(p)  # a run folder also holds a config.json: checkpoints win
    except FileNotFoundError:
        if p.is_dir() and is_kikimimi_checkpoint(p):
            return p
        raise
