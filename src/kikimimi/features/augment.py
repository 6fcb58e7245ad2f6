"""BYOL-A augmentation blocks ([BYOL-A]; docs/reference.md §7.2), operating on one log-mel item at a time.

Pipeline (``BYOLAAugment``), applied twice per item to make two views:

- v1: Mixup(0.4) → RandomResizeCrop;
- v2: Mixup(0.2) → RandomResizeCrop → RandomLinearFader(1.0);

then both views of the whole batch are post-normalised jointly (:func:`post_normalize`).

Pre-normalisation is *not* done here: the batch given to :class:`BYOLAAugment` is already normalised,
either with precomputed corpus statistics (v2 ``PrecomputedNorm``, in the data pipeline) or by the
method's v1 running normalisation (:class:`kikimimi.methods.running_norm.RunningNorm`).

Randomness: every ``forward`` takes an optional CPU ``torch.Generator``; ``None`` means the global torch
RNG (which the trainer checkpoints). Inputs are log-mel items ``[F, T]`` or ``[C, F, T]`` (F mel bins,
T frames); outputs keep the input shape.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from kikimimi.features.frontend import FLOAT32_EPS

__all__ = [
    "MixupFIFO",
    "RandomResizeCrop",
    "RandomLinearFader",
    "post_normalize",
    "BYOLAAugment",
]

def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    """One draw of U(lo, hi) as a Python float."""
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _randint_inclusive(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[lo, hi]`` (both ends included)."""
    return int(torch.randint(lo, hi + 1, (), generator=generator))


class MixupFIFO(nn.Module):
    """Log-domain mixup with a FIFO memory bank of past inputs.

    ``λ = ratio · U(0, 1)``; background ``z`` = a uniformly chosen bank entry; output
    ``log((1 − λ)·exp(x) + λ·exp(z) + eps)``. The first call (empty bank) returns ``x`` unchanged.
    After mixing, the (un-augmented) input ``x`` is appended and the bank keeps its last ``n_memory``
    entries. The bank is saved in ``state_dict()`` through ``get_extra_state``.

    Args:
        ratio: maximum mixing weight (0.4 for v1, 0.2 for v2).
        n_memory: bank capacity (items).
        eps: added inside the log (float32 machine epsilon).
    """

    def __init__(self, ratio: float = 0.4, n_memory: int = 2048, eps: float = FLOAT32_EPS) -> None:
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"mixup ratio must be in [0, 1], got {ratio}")
        if n_memory < 1:
            raise ValueError(f"n_memory must be >= 1, got {n_memory}")
        self.ratio = float(ratio)
        self.n_memory = int(n_memory)
        self.eps = float(eps)
        self.bank: deque[torch.Tensor] = deque(maxlen=self.n_memory)
        self.last_lambda: float | None = None

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, *, update: bool = True
    ) -> torch.Tensor:
        """Mix ``x`` (``[F, T]`` or ``[C, F, T]``, normalised log-mel) with a past input.

        Args:
            x: current item.
            generator: RNG for λ and the bank index (``None`` = global torch RNG).
            update: append ``x`` to the bank afterwards (the BYOL-A method passes ``False`` in eval mode).
        """
        if self.bank:
            lam = self.ratio * float(torch.rand((), generator=generator))
            idx = int(torch.randint(len(self.bank), (), generator=generator))
            z = self.bank[idx].to(device=x.device, dtype=x.dtype)
            if z.shape != x.shape:
                raise ValueError(
                    f"mixup bank item shape {tuple(z.shape)} != input shape {tuple(x.shape)}; "
                    "all training crops must have the same size"
                )
            out = torch.log((1.0 - lam) * torch.exp(x) + lam * torch.exp(z) + self.eps)
            self.last_lambda = lam
        else:
            out = x
            self.last_lambda = None
        if update:
            self.bank.append(x.detach().clone())
        return out

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, n_memory={self.n_memory}, items={len(self.bank)}"

    def get_extra_state(self) -> dict:
        """Bank contents (oldest first) for ``state_dict()``."""
        return {"bank": [t.detach().cpu().clone() for t in self.bank]}

    def set_extra_state(self, state: dict) -> None:
        """Restore the bank from :meth:`get_extra_state` output."""
        if not isinstance(state, dict) or "bank" not in state:
            raise ValueError("MixupFIFO extra state must be a dict with a 'bank' list of tensors")
        self.bank = deque((torch.as_tensor(t).clone() for t in state["bank"]), maxlen=self.n_memory)


class RandomResizeCrop(nn.Module):
    """Random crop on a zero-padded virtual canvas, resized back to the input size (bicubic).

    Canvas ``[int(F·vf), int(T·vt)]`` of zeros with the input pasted in the centre; crop size
    ``h = clip(int(U(freq_scale)·F), 1, Fc)``, ``w = clip(int(U(time_scale)·T), 1, Tc)`` (frequency
    drawn first), random top-left corner (inclusive range), bicubic resize with ``align_corners=True``.

    Args:
        virtual_crop_scale: canvas scale (frequency, time), default ``(1.0, 1.5)``.
        freq_scale: range of the crop height relative to ``F``.
        time_scale: range of the crop width relative to ``T``.
    """

    def __init__(
        self,
        virtual_crop_scale: tuple[float, float] = (1.0, 1.5),
        freq_scale: tuple[float, float] = (0.6, 1.5),
        time_scale: tuple[float, float] = (0.6, 1.5),
    ) -> None:
        super().__init__()
        self.virtual_crop_scale = (float(virtual_crop_scale[0]), float(virtual_crop_scale[1]))
        self.freq_scale = (float(freq_scale[0]), float(freq_scale[1]))
        self.time_scale = (float(time_scale[0]), float(time_scale[1]))
        self.last_crop: tuple[int, int, int, int] | None = None  # (i, j, h, w) on the canvas

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` ``[F, T]`` or ``[C, F, T]`` → same shape."""
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"RandomResizeCrop expects [F, T] or [C, F, T], got {tuple(x.shape)}")
        c, f, t = x.shape
        fc = int(f * self.virtual_crop_scale[0])
        tc = int(t * self.virtual_crop_scale[1])
        if fc < f or tc < t:
            raise ValueError(f"virtual_crop_scale {self.virtual_crop_scale} must be >= 1.0 in both axes")
        canvas = x.new_zeros((c, fc, tc))
        f0, t0 = (fc - f) // 2, (tc - t) // 2
        canvas[:, f0 : f0 + f, t0 : t0 + t] = x
        h = min(max(int(_uniform(*self.freq_scale, generator) * f), 1), fc)
        w = min(max(int(_uniform(*self.time_scale, generator) * t), 1), tc)
        i = _randint_inclusive(0, fc - h, generator) if fc > h else 0
        j = _randint_inclusive(0, tc - w, generator) if tc > w else 0
        self.last_crop = (i, j, h, w)
        crop = canvas[:, i : i + h, j : j + w]
        out = F.interpolate(crop.unsqueeze(0), size=(f, t), mode="bicubic", align_corners=True)[0]
        return out[0] if squeeze else out


class RandomLinearFader(nn.Module):
    """Add a linear gain ramp over time: ``x + linspace(head, tail, T)``, ``head, tail ~ gain·U(−1, 1)``.

    The same ramp applies to every frequency bin (log domain, so it is a linear fade in dB-like units).
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)
        self.last_ramp: tuple[float, float] | None = None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` ``[..., F, T]`` → same shape."""
        head = self.gain * _uniform(-1.0, 1.0, generator)
        tail = self.gain * _uniform(-1.0, 1.0, generator)
        self.last_ramp = (head, tail)
        ramp = torch.linspace(head, tail, x.shape[-1], device=x.device, dtype=x.dtype)
        return x + ramp


def post_normalize(x: torch.Tensor, eps: float = FLOAT32_EPS) -> torch.Tensor:
    """Normalise a whole batch with one mean and one unbiased std (std clamped ≥ ``eps``)."""
    mean = x.mean()
    std = x.std(unbiased=True).clamp(min=eps)
    return (x - mean) / std


class BYOLAAugment(nn.Module):
    """Two-view BYOL-A augmentation of a pre-normalised batch.

    Args:
        version: 1 (mixup 0.4 → RRC) or 2 (mixup 0.2 → RRC → linear fader).
        mixup_ratio: override the version's mixup ratio.
        n_memory: mixup bank capacity.
        fader_gain: gain of the v2 linear fader.
    """

    def __init__(
        self,
        version: int = 1,
        *,
        mixup_ratio: float | None = None,
        n_memory: int = 2048,
        fader_gain: float = 1.0,
    ) -> None:
        super().__init__()
        if version not in (1, 2):
            raise ValueError(f"BYOL-A version must be 1 or 2, got {version}")
        self.version = version
        ratio = (0.4 if version == 1 else 0.2) if mixup_ratio is None else mixup_ratio
        self.mixup = MixupFIFO(ratio=ratio, n_memory=n_memory)
        self.rrc = RandomResizeCrop()
        self.fader = RandomLinearFader(fader_gain) if version == 2 else None

    def augment_item(
        self, x: torch.Tensor, generator: torch.Generator | None = None, *, update_bank: bool = True
    ) -> torch.Tensor:
        """One view of one item ``[F, T]`` → ``[F, T]``."""
        y = self.mixup(x, generator, update=update_bank)
        y = self.rrc(y, generator)
        if self.fader is not None:
            y = self.fader(y, generator)
        return y

    @torch.no_grad()
    def forward(
        self, lms: torch.Tensor, generator: torch.Generator | None = None, *, update_bank: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``lms`` ``[B, F, T]`` (already normalised) → two post-normalised views, each ``[B, F, T]``.

        For each item, view A then view B are drawn (each passing through the mixup, so every item is
        appended to the bank twice when ``update_bank``).
        """
        if lms.dim() != 3:
            raise ValueError(f"BYOL-A augmentation expects lms [B, F, T], got {tuple(lms.shape)}")
        views_a, views_b = [], []
        for x in lms:
            views_a.append(self.augment_item(x, generator, update_bank=update_bank))
            views_b.append(self.augment_item(x, generator, update_bank=update_bank))
        both = post_normalize(torch.stack(views_a + views_b))
        b = lms.shape[0]
        return both[:b], both[b:]
