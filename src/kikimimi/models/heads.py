"""Classification heads on pooled clip features, and how their logits become probabilities.

:class:`TaggingHead` is the EVAR / official fine-tuning head. A head trained with a softmax cross-entropy
(single-label tasks) is read with a softmax, one trained with binary cross-entropy (multi-label, AudioSet) with
sigmoids: :func:`head_probabilities`; the activation travels with the head (``config["head"]["activation"]``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HEAD_ACTIVATIONS", "TaggingHead", "head_probabilities"]

#: how a head's logits become probabilities: ``softmax`` (one class per clip) or ``sigmoid`` (independent classes)
HEAD_ACTIVATIONS = ("softmax", "sigmoid")


class TaggingHead(nn.Module):
    """EVAR fine-tuning head: ``BatchNorm1d(in_dim, affine=False)`` → ``Linear(in_dim, n_classes)``.

    ``forward(x [B, in_dim]) -> logits [B, n_classes]`` (input = the encoder's pooled clip feature;
    :func:`head_probabilities` turns the logits into probabilities).
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False)
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def head_probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Probabilities ``[B, C]`` from logits ``[B, C]``: softmax over classes (rows sum to 1) or per-class sigmoids.

    Raises:
        ValueError: an activation other than those of :data:`HEAD_ACTIVATIONS`.
    """
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    raise ValueError(f"head activation {activation!r}: expected one of {', '.join(HEAD_ACTIVATIONS)}")
