"""Learning-rate schedules, evaluated per optimiser step.

The M2D recipe (MAE-style) is a linear warm-up from 0 followed by a half-cycle cosine decay to
``min_lr``; BYOL-A uses a constant learning rate. The effective learning rate of M2D is derived from
the base rate: ``lr = blr × effective_batch / 256`` with ``effective_batch = batch × world × accum``.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_at_step", "scaled_lr", "set_lr"]

SCHEDULES = ("cosine", "constant")


def scaled_lr(blr: float, effective_batch: int) -> float:
    """Absolute learning rate from a base rate: ``blr × effective_batch / 256`` (M2D/MAE rule)."""
    if effective_batch <= 0:
        raise ValueError(f"effective batch size must be positive, got {effective_batch}")
    return float(blr) * effective_batch / 256.0


def lr_at_step(
    step: int,
    total_steps: int,
    base_lr: float,
    *,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    schedule: str = "cosine",
) -> float:
    """Learning rate for optimiser step ``step`` (0-based: the step about to be taken).

    ``cosine``: ``base_lr × step / warmup_steps`` while ``step < warmup_steps``, then
    ``min_lr + (base_lr − min_lr) × ½ (1 + cos(π (step − warmup) / (total − warmup)))``.
    ``constant``: ``base_lr`` for every step (warm-up still applies when ``warmup_steps > 0``).

    Raises:
        ValueError: unknown schedule name or non-positive ``total_steps``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {schedule!r}; choose one of {SCHEDULES}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group (a group's ``lr_scale`` key multiplies it when present)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
