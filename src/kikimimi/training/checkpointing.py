"""Training-checkpoint contents: RNG states and the split of the method state.

The files of a run folder (``checkpoint-<step>.pth``, ``last.pth``) and how a folder resolves to one of
them live in :mod:`kikimimi.checkpoints.runs`.

A checkpoint written by :class:`kikimimi.training.trainer.Trainer` is a plain dict in the official M2D layout::

    {"model": method.export_official_state_dict(), "args": {...config...}, "epoch": int, "step": int,
     "optimizer": ..., "scaler": ... | None, "trainer_state": {...}}

Everything in it is a tensor, number, string, list, tuple, dict or ``None`` so it loads with
``torch.load(path, weights_only=True)``. ``trainer_state`` holds what the official layout does not:

- ``method_state``: entries of ``method.state_dict()`` not recoverable from ``model`` (for BYOL-A the
  target network and projector/predictor; for M2D nothing, since its official dict is complete);
- ``ranks``: one dict per rank with its RNG states (python, numpy, torch, cuda, method generator) and
  its ``*._extra_state`` entries (e.g. the BYOL-A mixup memory bank, which differs per rank);
- schedule/data position (``step``, ``micro_step``, ``data_epoch``, ``data_position``) and the
  method's last EMA τ.

:func:`save_checkpoint_file` writes one atomically and turns a full disk into :class:`CheckpointDiskFullError`
("disk full while writing …"), checked before writing and recognised while writing (``torch.save`` reports a
failed write as an obscure ``RuntimeError``); the previous checkpoint is never touched.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kikimimi.checkpoints.text_state import text_keys_to_wrapper
from kikimimi.fileio import atomic_torch_save

__all__ = [
    "CheckpointDiskFullError",
    "checkpoint_nbytes",
    "save_checkpoint_file",
    "capture_rng_state",
    "restore_rng_state",
    "split_method_state",
    "restore_method_state",
]

_EXTRA = "_extra_state"
#: room kept beyond the tensors' bytes when checking free space before a checkpoint (pickle overhead, metadata)
DISK_MARGIN_BYTES = 16 * 2**20


class CheckpointDiskFullError(OSError):
    """The disk is (or would be) full while writing a training checkpoint; ``str()`` is one line."""

    def __init__(self, path: Path, free: int, needed: int) -> None:
        self.message = (f"disk full while writing {path} ({free / 1e6:.0f} MB free, about {needed / 1e6:.0f} MB "
                        "needed); the previous checkpoint is intact: free some space, then continue with --resume")
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message


def checkpoint_nbytes(obj: Any) -> int:
    """Bytes of every tensor / array in a (nested dict / list / tuple) checkpoint object."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Mapping):
        return sum(checkpoint_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(checkpoint_nbytes(v) for v in obj)
    return 0


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1  # unknown


def save_checkpoint_file(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (temporary file + rename).

    Raises:
        CheckpointDiskFullError: less free space than the checkpoint's tensors (checked first, nothing written),
            or ``ENOSPC`` / a failed ``torch.save`` write with the disk nearly full; ``path`` and every earlier
            checkpoint are left as they were.
    """
    path = Path(path)
    needed = checkpoint_nbytes(obj) + DISK_MARGIN_BYTES
    free = _free_bytes(path.parent)
    if 0 <= free < needed:
        raise CheckpointDiskFullError(path, free, needed)
    try:
        atomic_torch_save(obj, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointDiskFullError(path, _free_bytes(path.parent), needed) from exc
        raise
    except RuntimeError as exc:  # torch.save reports a failed write as "unexpected pos …" / "file write failed"
        free = _free_bytes(path.parent)
        if 0 <= free < needed or "No space left" in str(exc):
            raise CheckpointDiskFullError(path, free, needed) from exc
        raise


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states of this process in a ``weights_only``-loadable form."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def restore_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only restored when devices are present)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def _official_key(key: str, official: Mapping[str, torch.Tensor]) -> str | None:
    """The key of ``official`` that stores method key ``key`` (same name, ``encoder.`` stripped, or a stage-2 text
    encoder tensor under the pre-2026-12 name ``text_encoder.model.*``, :mod:`kikimimi.checkpoints.text_state`)."""
    if key in official:
        return key
    stripped = key.removeprefix("encoder.")
    if stripped != key and stripped in official:
        return stripped
    old_name = next(iter(text_keys_to_wrapper({key: None})))
    if old_name != key and old_name in official:
        return old_name
    return None


def split_method_state(
    method: nn.Module, official: Mapping[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Entries of ``method.state_dict()`` missing from ``official``: ``(shared, per_rank_extra)``.

    ``per_rank_extra`` holds the ``*._extra_state`` entries (process-local state such as memory banks);
    ``shared`` the remaining tensors (identical on every rank under DDP).
    """
    shared: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in method.state_dict().items():
        if key.endswith(_EXTRA):
            extra[key] = value
            continue
        off = _official_key(key, official)
        if off is None or tuple(official[off].shape) != tuple(value.shape):
            shared[key] = value.detach().cpu().clone()
    return shared, extra


def restore_method_state(
    method: nn.Module,
    official: Mapping[str, torch.Tensor],
    shared: Mapping[str, Any],
    extra: Mapping[str, Any],
    *,
    source: str = "checkpoint",
) -> None:
    """Load the full ``method.state_dict()`` back from a checkpoint's three parts (strict).

    Raises:
        KeyError: a method tensor is in none of the parts (checkpoint written by another method/config).
    """
    own = method.state_dict()
    full: dict[str, Any] = {}
    missing: list[str] = []
    for key in own:
        if key in shared:
            full[key] = shared[key]
        elif key in extra:
            full[key] = extra[key]
        else:
            off = _official_key(key, official)
            if off is None:
                missing.append(key)
            else:
                full[key] = official[off]
    if missing:
        raise KeyError(
            f"{source}: cannot restore {len(missing)} method tensors, e.g. {missing[:5]}; was it written "
            "for the same --method/--size/--input-frames?"
        )
    method.load_state_dict(full, strict=True)
