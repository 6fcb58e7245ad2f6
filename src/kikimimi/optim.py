"""Optimisation helpers shared by pre-training and fine-tuning: LR schedules, parameter groups, LARS.

Schedules are evaluated per optimiser step.

The M2D recipe (MAE-style) is a linear warm-up from 0 followed by a half-cycle cosine decay to
``min_lr``; BYOL-A uses a constant learning rate. The effective learning rate of M2D is derived from
the base rate: ``lr = blr × effective_batch / 256`` with ``effective_batch = batch × world × accum``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["LARS", "SCHEDULES", "lr_at_step", "scaled_lr", "set_lr", "weight_decay_param_groups"]

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


def weight_decay_param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: no decay on 1-D parameters and biases; frozen parameters excluded.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``
        (empty groups are dropped).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) with heavy-ball momentum.

    For a parameter ``p`` with more than one dimension: ``d = g + wd·p``, then
    ``d ← d · η·‖p‖/‖d‖`` (trust ratio; 1 when either norm is 0). 1-D parameters (biases, norm scales)
    get ``d = g`` with neither weight decay nor adaptation. Then ``m ← μ·m + d`` (``m`` starts at 0) and
    ``p ← p − lr·m``.

    Args:
        lr: learning rate; momentum ``μ``; weight_decay ``wd``; trust_coefficient ``η`` (0.001).
    """

    def __init__(self, params: Iterable, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"invalid LARS settings lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coefficient={trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    if group["weight_decay"]:
                        d = d.add(p, alpha=group["weight_decay"])
                    p_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    ratio = torch.where((p_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * p_norm / d_norm, torch.ones_like(p_norm))
                    d = d * ratio
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss
