"""Contrastive audio-text loss of M2D-CLAP / M2D2 ([M2D-CLAP], [CLIP]; docs/reference.md §7.3): symmetric InfoNCE.

``clip_infonce(audio [B, D], text [B, D], logit_scale)``: both sides are L2-normalised, the logits are
``exp(logit_scale) · a_i · t_j`` and the loss is the mean of the audio→text and text→audio
cross-entropies with the matching pair on the diagonal.

Under DDP (an initialised process group with more than one rank) both sides are all-gathered, the
local shard keeping its gradient (this rank's slot of the gathered list is replaced by the local
tensor), so every rank computes the loss over the *global* batch. Gradients then reach only the local
rows; DDP's gradient averaging therefore yields ``1 / world_size`` of the global-loss gradient (the
usual CLIP/CLAP convention).

The temperature is a learnable log-scale initialised to ``ln(1 / 0.07) ≈ 2.659`` and clamped to
``[0, ln 100 ≈ 4.605]`` after every optimiser step (:func:`clamp_logit_scale_`).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOGIT_SCALE_INIT",
    "LOGIT_SCALE_MAX",
    "LogitScale",
    "new_logit_scale",
    "clamp_logit_scale_",
    "gather_with_grad",
    "clip_infonce",
]

#: initial log temperature scale, ln(1 / 0.07)
LOGIT_SCALE_INIT = math.log(1.0 / 0.07)
#: upper clamp of the log scale, ln(100)
LOGIT_SCALE_MAX = math.log(100.0)


def new_logit_scale(init: float = LOGIT_SCALE_INIT) -> nn.Parameter:
    """A scalar (0-d) learnable log-scale ``nn.Parameter`` (official key name ``logit_scale``)."""
    return nn.Parameter(torch.tensor(float(init), dtype=torch.float32))


@torch.no_grad()
def clamp_logit_scale_(param: torch.Tensor, max_value: float = LOGIT_SCALE_MAX) -> torch.Tensor:
    """In place clamp of a log-scale to ``[0, max_value]``; returns ``param``."""
    return param.clamp_(0.0, float(max_value))


class LogitScale(nn.Module):
    """Module form of the learnable log-scale (parameter ``value``); ``forward()`` → ``exp(value)``.

    The methods keep a bare parameter named ``logit_scale`` (the official key) instead; this wrapper is
    for stand-alone use of :func:`clip_infonce`.
    """

    def __init__(self, init: float = LOGIT_SCALE_INIT, max_value: float = LOGIT_SCALE_MAX) -> None:
        super().__init__()
        self.value = new_logit_scale(init)
        self.max_value = float(max_value)

    def forward(self) -> torch.Tensor:
        return self.value.exp()

    def clamp_(self) -> LogitScale:
        """Clamp the log-scale to ``[0, ln 100]`` (call after every optimiser step)."""
        clamp_logit_scale_(self.value, self.max_value)
        return self


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x [b, D]`` from every rank into ``[world·b, D]`` in rank order.

    The other ranks' rows are constants; this rank's rows are ``x`` itself, so gradients flow into the
    local shard. Without an initialised multi-rank process group ``x`` is returned unchanged. Every
    rank must pass the same shape.
    """
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def clip_infonce(
    audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalised features.

    Args:
        audio: ``[B, D]`` audio embeddings (any scale).
        text: ``[B, D]`` text embeddings of the matching captions (row ``i`` pairs with audio row ``i``).
        logit_scale: the *log* temperature scale (a 0-d tensor or float); logits = ``exp(logit_scale) ·
            cos(a_i, t_j)``.
        gather: gather both sides across DDP ranks (global-batch negatives) when a process group is active.

    Returns:
        Scalar float32 loss: ``(CE(logits, diag) + CE(logits.T, diag)) / 2``.
    """
    if audio.dim() != 2 or text.dim() != 2 or audio.shape != text.shape:
        raise ValueError(
            f"clip_infonce needs audio and text of the same shape [B, D], got {tuple(audio.shape)} and "
            f"{tuple(text.shape)}"
        )
    a = F.normalize(audio.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    if gather:
        a, t = gather_with_grad(a), gather_with_grad(t)
    scale = logit_scale.float().exp() if isinstance(logit_scale, torch.Tensor) else math.exp(logit_scale)
    logits = scale * a @ t.t()  # [N, N], rows = audio, columns = text
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
