"""Fine-tuning augmentations on log-mel batches (docs/reference.md §8): mixup with label mixing,
SpecAugment frequency/time masks and per-sample random resize crop.

Shapes: log-mel batches ``[B, F, T]`` (F mel bins, T frames); labels ``[B, C]`` (one-hot or multi-hot,
float). Every random draw comes from the generator passed in (``numpy.random.Generator`` for mixup
weights, ``torch.Generator`` for masks and crops), so a fine-tuning epoch is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
import torch

from kikimimi.features.augment import RandomResizeCrop

__all__ = ["mask_along_axis", "mixup_log_mel", "random_resize_crop_batch", "spec_augment"]


def mixup_log_mel(
    lms: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Batch mixup in the power domain of an (unnormalised) log-mel, with the same weights on the labels.

    For every item ``i`` a weight ``λ_i ~ Beta(alpha, alpha)`` and a partner ``π(i)`` (a random permutation
    of the batch) are drawn; the output is ``log(λ_i·exp(x_i) + (1 − λ_i)·exp(x_π(i)))`` — the
    spectrogram of the two sounds' mixture if their phases were unrelated, i.e. EVAR's waveform mixup
    carried over to the log-mel — and the label ``λ_i·y_i + (1 − λ_i)·y_π(i)``.

    Args:
        lms: ``[B, F, T]`` natural-log mel power (before normalisation).
        targets: ``[B, C]`` float labels.
        alpha: Beta parameter (EVAR recipes: 0.3 or 0.5); ``alpha <= 0`` returns the inputs unchanged.
        rng: seeded numpy generator (λ and the permutation).

    Returns:
        ``(mixed_lms [B, F, T], mixed_targets [B, C], lam [B], partner [B])``.
    """
    b = lms.shape[0]
    if alpha <= 0 or b < 2:
        return lms, targets, np.ones(b), np.arange(b)
    lam = rng.beta(alpha, alpha, size=b)
    partner = rng.permutation(b)
    lam_t = torch.as_tensor(lam, dtype=lms.dtype, device=lms.device)
    idx = torch.as_tensor(partner, device=lms.device)
    w = lam_t.view(b, *([1] * (lms.dim() - 1)))
    # log(λ·e^x + (1−λ)·e^z) computed stably; as x = ln(P + eps), the mixture keeps the front end's eps
    mixed = torch.logaddexp(torch.log(w) + lms, torch.log1p(-w) + lms[idx])
    wt = lam_t.to(targets.dtype).view(b, 1)
    mixed_targets = wt * targets + (1.0 - wt) * targets[idx]
    return mixed, mixed_targets, lam, partner


def mask_along_axis(
    x: torch.Tensor, mask_param: int, axis: int, generator: torch.Generator, value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """One band ``[start, end)`` of width ``⌊U(0,1)·mask_param⌋`` along ``axis`` set to ``value`` for the
    whole batch (torchaudio ``FrequencyMasking``/``TimeMasking`` with ``iid_masks=False``).

    Args:
        x: ``[B, F, T]``; ``axis`` 1 (frequency) or 2 (time).
        mask_param: maximum width (0 = no mask).

    Returns:
        ``(masked copy, (start, end))``.
    """
    size = x.shape[axis]
    if mask_param <= 0 or size == 0:
        return x, (0, 0)
    width = float(torch.rand((), generator=generator)) * min(mask_param, size)
    start = float(torch.rand((), generator=generator)) * (size - width)
    lo, hi = int(start), int(start + width)
    out = x.clone()
    index = [slice(None)] * x.dim()
    index[axis] = slice(lo, hi)
    out[tuple(index)] = value
    return out, (lo, hi)


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, generator: torch.Generator) -> torch.Tensor:
    """Frequency mask then time mask (one of each per batch) on a normalised ``[B, F, T]`` batch; fills 0."""
    x, _ = mask_along_axis(x, freq_mask, 1, generator)
    x, _ = mask_along_axis(x, time_mask, 2, generator)
    return x


def random_resize_crop_batch(
    x: torch.Tensor, generator: torch.Generator, crop: RandomResizeCrop | None = None
) -> torch.Tensor:
    """BYOL-A random resize crop (canvas 1.0×1.5, scales 0.6–1.5, bicubic) on every item of ``[B, F, T]``."""
    crop = crop or RandomResizeCrop()
    return torch.stack([crop(item, generator=generator) for item in x])
