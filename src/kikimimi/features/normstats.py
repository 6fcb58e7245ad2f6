"""Scalar normalisation statistics of log-mel spectrograms: ``x_norm = (x - mean) / std``.

M2D and BYOL-A normalise the whole log-mel with one mean and one standard deviation (not per band),
applied after the log and before the encoder (docs/reference.md §3). The two scalars travel with the
model; when a checkpoint has none, the M2D runtimes use :data:`M2D_DEFAULT` = (-7.1, 4.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

__all__ = ["M2D_DEFAULT", "NormStats", "compute_norm_stats", "crop_or_pad_frames"]

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class NormStats:
    """Global mean and standard deviation of log-mel values (natural-log units)."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(
                f"NormStats needs a finite mean and a finite std > 0, got mean={self.mean}, std={self.std}"
            )

    def normalize(self, x: ArrayLike) -> ArrayLike:
        """``(x - mean) / std`` for a numpy array or torch tensor of any shape (e.g. ``[B, F, T]``)."""
        return (x - self.mean) / self.std

    def denormalize(self, x: ArrayLike) -> ArrayLike:
        """Inverse of :meth:`normalize`: ``x * std + mean``."""
        return x * self.std + self.mean

    def to_list(self) -> list[float]:
        """``[mean, std]`` as plain floats (the layout of the official ``norm_stats`` entry)."""
        return [float(self.mean), float(self.std)]

    @classmethod
    def from_list(cls, seq: Sequence[float] | np.ndarray | torch.Tensor) -> NormStats:
        """Build from ``[mean, std]`` (list, array or tensor with exactly two values)."""
        values = np.asarray(seq.detach().cpu() if isinstance(seq, torch.Tensor) else seq, dtype=np.float64)
        values = values.reshape(-1)
        if values.size != 2:
            raise ValueError(f"norm stats must be [mean, std] (2 values), got {values.size} values: {values}")
        return cls(float(values[0]), float(values[1]))

    def to_tensor(self) -> torch.Tensor:
        """``[2]`` float32 tensor ``[mean, std]``."""
        return torch.tensor(self.to_list(), dtype=torch.float32)


M2D_DEFAULT = NormStats(-7.1, 4.2)


def crop_or_pad_frames(lms: np.ndarray, crop_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop of ``crop_frames`` frames from ``[F, T]``, or right-pad with 0 when ``T < crop_frames``.

    The crop start is uniform in ``[0, T - crop_frames]``. Padding uses the value 0 in the *log* domain
    (a loud level, not silence) because that is what the official training data pipeline does; the
    statistics therefore match those the released models were trained with.

    Returns:
        ``[F, crop_frames]`` array of the input dtype.
    """
    n_frames = lms.shape[-1]
    if n_frames > crop_frames:
        start = int(rng.integers(0, n_frames - crop_frames + 1))
        return lms[..., start : start + crop_frames]
    if n_frames < crop_frames:
        return np.pad(lms, [(0, 0)] * (lms.ndim - 1) + [(0, crop_frames - n_frames)], constant_values=0)
    return lms


def compute_norm_stats(
    log_mels: Iterable[np.ndarray],
    crop_frames: int,
    n_samples: int = 10000,
    seed: int = 0,
) -> NormStats:
    """Estimate the global log-mel mean and std the way the official training code does.

    ``n_samples`` items are drawn at random (without replacement when there are at least that many,
    with replacement otherwise), each is randomly cropped or right-padded with 0 to ``crop_frames``
    frames (:func:`crop_or_pad_frames`), and one mean and one (population) standard deviation are taken over
    all bins and frames of all drawn crops. Sums are accumulated in float64, so memory stays at one item.

    Args:
        log_mels: log-mel arrays ``[F, T]`` (a sequence is indexed directly; other iterables are
            materialised into a list first). Memory-mapped arrays work well.
        crop_frames: frames per drawn crop (608 for 80x608 M2D models, 96 for BYOL-A).
        n_samples: number of crops to draw.
        seed: seed of the ``numpy.random.Generator`` for item choice and crop positions.

    Returns:
        :class:`NormStats` with the measured mean and std.
    """
    if crop_frames <= 0:
        raise ValueError(f"crop_frames must be > 0, got {crop_frames}")
    if n_samples <= 0:
        raise ValueError(f"n_samples must be > 0, got {n_samples}")
    items = log_mels if isinstance(log_mels, Sequence) else list(log_mels)
    if len(items) == 0:
        raise ValueError("compute_norm_stats got no log-mel arrays; check the input list/cache folder")
    rng = np.random.default_rng(seed)
    replace = len(items) < n_samples
    picks = rng.choice(len(items), size=n_samples, replace=replace)
    total = 0.0
    total_sq = 0.0
    count = 0
    n_bins = None
    for index in picks:
        lms = np.asarray(items[int(index)])
        if lms.ndim != 2:
            raise ValueError(f"log-mel item {int(index)} must be [F, T], got shape {lms.shape}")
        if n_bins is None:
            n_bins = lms.shape[0]
        elif lms.shape[0] != n_bins:
            raise ValueError(
                f"log-mel item {int(index)} has {lms.shape[0]} mel bins but earlier items have {n_bins}; "
                "all items must come from the same front end"
            )
        crop = crop_or_pad_frames(lms, crop_frames, rng).astype(np.float64)
        total += float(crop.sum())
        total_sq += float(np.square(crop).sum())
        count += crop.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(var)
    if not std > 0:
        raise ValueError(
            f"log-mel values have zero spread (every value is {mean:.4f}); cannot normalise by std=0 — "
            "is the data all digital silence?"
        )
    return NormStats(mean, std)
