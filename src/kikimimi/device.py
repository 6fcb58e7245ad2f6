"""Device and mixed-precision choice, shared by inference, training and evaluation.

``resolve_device`` turns a user's ``"auto"`` / ``"cpu"`` / ``"cuda[:N]"`` into a :class:`torch.device`;
``resolve_amp`` turns an AMP mode into the autocast dtype and whether a gradient scaler is needed.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_amp", "resolve_device"]

#: Mixed-precision modes: ``auto`` (bf16 on CUDA when supported, else fp16 with a scaler; off on CPU).
AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``None``/``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; other names as given.

    Raises:
        RuntimeError: CUDA requested but not available.
        ValueError: a name that is not ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
    """
    name = str(name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was requested but torch.cuda.is_available() is False")
        if name == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device(name)
    if name not in ("cpu", "mps"):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for an AMP mode on ``device``."""
    if mode not in AMP_MODES:
        raise ValueError(f"unknown AMP mode {mode!r}; choose one of {AMP_MODES}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if mode == "bf16":
        return torch.bfloat16, False
    return torch.float16, True
