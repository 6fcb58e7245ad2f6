"""Loss functions of the self-supervised methods (M2D and BYOL-A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["standardize_tokens", "norm_mse_loss", "byol_pair_loss", "byol_symmetric_loss"]


def standardize_tokens(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardise each vector over its last dimension: ``(x - mean) / sqrt(var_unbiased + eps)``.

    Args:
        x: ``[..., D]``.
        eps: added to the unbiased variance before the square root.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=True)
    return (x - mean) / (var + eps).sqrt()


def norm_mse_loss(pred: torch.Tensor, target: torch.Tensor, *, standardize_target: bool = True) -> torch.Tensor:
    """M2D ``norm_mse`` loss: mean over tokens of ``2 - 2 cos(pred, standardised target)``.

    Equivalent to the squared distance between the L2-normalised vectors.

    Args:
        pred: ``[B, N, D]`` predictions.
        target: ``[B, N, D]`` targets (gradients are not blocked here; pass a detached tensor).
        standardize_target: standardise each target vector over ``D`` first (``norm_pix_loss``).

    Returns:
        Scalar float32 tensor (inputs are upcast, so it is safe under autocast).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    pred, target = pred.float(), target.float()  # stable statistics under autocast
    if standardize_target:
        target = standardize_tokens(target)
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    return (2.0 - 2.0 * (p * t).sum(dim=-1)).mean()


def byol_pair_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample BYOL loss ``2 - 2 cos(pred, target)``: ``[B, D]``, ``[B, D]`` → ``[B]`` (float32)."""
    p = F.normalize(pred.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    return 2.0 - 2.0 * (p * t).sum(dim=-1)


def byol_symmetric_loss(
    pred_a: torch.Tensor, pred_b: torch.Tensor, target_a: torch.Tensor, target_b: torch.Tensor
) -> torch.Tensor:
    """Symmetric BYOL loss: ``mean_B[ l(pred_a, target_b) + l(pred_b, target_a) ]`` (scalar).

    ``pred_*`` are the online predictions ``[B, D]`` of views A/B, ``target_*`` the target projections.
    """
    return (byol_pair_loss(pred_a, target_b) + byol_pair_loss(pred_b, target_a)).mean()
