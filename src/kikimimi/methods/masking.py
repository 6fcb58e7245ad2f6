"""Patch masking for masked-modelling methods (M2D).

Only unstructured per-sample random masking is implemented: every sample draws its own uniform
noise over the ``L`` patch positions, the positions are ordered by that noise (argsort) and the first
``int(L * (1 - mask_ratio))`` become *visible*, the rest *masked*.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MaskIds", "num_visible", "random_masking", "gather_tokens"]


@dataclass(frozen=True)
class MaskIds:
    """Index sets of one masking draw (all ``int64``).

    Attributes:
        visible: ``[B, Lv]`` patch indices fed to the online encoder (in shuffle order).
        masked: ``[B, Lm]`` patch indices to predict (in shuffle order), ``Lv + Lm = L``.
        restore: ``[B, L]`` inverse permutation: ``cat([visible, masked], 1).gather(1, restore)``
            equals ``arange(L)`` for each row, i.e. it puts shuffled tokens back on the grid.
    """

    visible: torch.Tensor
    masked: torch.Tensor
    restore: torch.Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Number of visible patches ``int(L * (1 - mask_ratio))`` (57 for L=190, r=0.7)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(num_patches * (1 - mask_ratio))


def random_masking(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIds:
    """Draw an unstructured random mask per sample.

    Args:
        batch_size: ``B``.
        num_patches: ``L`` patches per sample.
        mask_ratio: fraction of masked patches ``r`` in [0, 1).
        generator: CPU ``torch.Generator``; ``None`` uses the global torch RNG.
        device: device of the returned index tensors.

    Returns:
        :class:`MaskIds` with ``visible [B, int(L(1-r))]``, ``masked [B, L - Lv]``, ``restore [B, L]``.
    """
    keep = num_visible(num_patches, mask_ratio)
    if keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible patch out of {num_patches}; lower the ratio")
    noise = torch.rand(batch_size, num_patches, generator=generator)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    return MaskIds(
        visible=shuffle[:, :keep].to(device),
        masked=shuffle[:, keep:].to(device),
        restore=restore.to(device),
    )


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: ``tokens [B, L, D]``, ``ids [B, N]`` → ``[B, N, D]``."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
