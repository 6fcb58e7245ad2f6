"""EMA (target-network) updates shared by the methods (parameter groups live in :mod:`kikimimi.optim`).

Step convention used by every method's ``on_after_step(step, total_steps)``: ``step`` is the number of
optimiser steps done so far, i.e. ``1`` right after the first update and ``total_steps`` after the last
one. The EMA schedule is evaluated at ``step - 1`` so that the first update uses ``tau0`` and the last
one ``tau1`` (the official loop indexes its global step from 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["ema_tau", "ema_update_", "ema_update_modules_"]


def ema_tau(step: int, total_steps: int, tau0: float = 0.99995, tau1: float = 0.99999) -> float:
    """Linear EMA decay schedule ``tau0 + (tau1 - tau0) * step / (total_steps - 1)``.

    Args:
        step: 0-based global step index (clamped to ``[0, total_steps - 1]``).
        total_steps: number of optimiser steps in the whole run (iterations per epoch × epochs).
        tau0: decay at step 0.
        tau1: decay at the last step ``total_steps - 1``.
    """
    if total_steps <= 1:
        return float(tau0)
    frac = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return float(tau0 + (tau1 - tau0) * frac)


@torch.no_grad()
def ema_update_(targets: Iterable[torch.Tensor], onlines: Iterable[torch.Tensor], tau: float) -> None:
    """In place ``target ← tau · target + (1 − tau) · online`` for matching tensors."""
    t_list = list(targets)
    o_list = list(onlines)
    if len(t_list) != len(o_list):
        raise ValueError(f"EMA needs matching tensor lists, got {len(t_list)} targets and {len(o_list)} online")
    if not t_list:
        return
    for t, o in zip(t_list, o_list, strict=True):
        if t.shape != o.shape:
            raise ValueError(f"EMA shape mismatch: target {tuple(t.shape)} vs online {tuple(o.shape)}")
    torch._foreach_lerp_(t_list, [o.detach() for o in o_list], 1.0 - tau)


@torch.no_grad()
def ema_update_modules_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """EMA of the *parameters only* (buffers such as BatchNorm statistics are left alone).

    Parameters are matched by name; both modules must have the same parameter names and shapes.
    """
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        missing = sorted(set(o_params) ^ set(t_params))[:5]
        raise ValueError(f"EMA target and online modules differ in parameter names, e.g. {missing}")
    names = list(t_params)
    ema_update_([t_params[n] for n in names], [o_params[n] for n in names], tau)
