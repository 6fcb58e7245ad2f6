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
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "capture_rng_state",
    "restore_rng_state",
    "split_method_state",
    "restore_method_state",
]

_EXTRA = "_extra_state"


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
    """The key of ``official`` that stores method key ``key`` (same name or ``encoder.`` stripped)."""
    if key in official:
        return key
    stripped = key.removeprefix("encoder.")
    if stripped != key and stripped in official:
        return stripped
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
