"""Log-mel front end shared by the NTT audio models (M2D, M2D-CLAP, BYOL-A).

The transform is (docs/reference.md §2):

1. reflect-pad the waveform by ``n_fft // 2`` samples on each side (a centred STFT);
2. frame it every ``hop_length`` samples, multiply by a periodic Hann window of ``win_length`` samples
   (zero-padded to ``n_fft`` and centred when shorter) and take a one-sided DFT of ``n_fft`` points;
3. power spectrum ``|X|^2``;
4. Slaney-scale mel filterbank with Slaney area normalisation (the librosa / nnAudio ``norm=1`` default);
5. natural log of ``mel + eps`` with ``eps = 1.1920929e-07`` (float32 machine epsilon), so digital
   silence maps to ``ln(eps) = -15.942``.

A waveform of ``n`` samples gives ``n // hop_length + 1`` frames (1 s at 16 kHz -> 101 frames). The
reflect padding needs at least ``n_fft // 2 + 1`` samples; shorter inputs raise :class:`ValueError`
(pad them with zeros yourself if you really want features for them).

Everything is computed in float32 (CPU or CUDA). Long inputs are processed in chunks of frames so the
intermediate STFT never holds more than a few MB; :func:`stream_log_mel` goes one step further and
never holds the whole waveform in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FLOAT32_EPS",
    "LOG_MEL_EPS",
    "FrontendConfig",
    "LogMelSpectrogram",
    "PRESETS",
    "cpu_module",
    "empty_mel_bins",
    "frontend_for",
    "get_preset",
    "log_mel",
    "periodic_hann",
    "slaney_mel_filterbank",
]

#: float32 machine epsilon, exactly 2**-23 (the unit of float32 rounding; also the clamp of BYOL-A's
#: normalisations and the offset inside its mixup log).
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
#: The default offset in ``ln(mel + eps)``: float32 epsilon as the official configs write it (8 digits).
#: Stored in every serialised front-end config and cache description, so it stays written this way;
#: rounded to float32 it equals :data:`FLOAT32_EPS`.
LOG_MEL_EPS = 1.1920929e-07

# Frames (summed over the batch) computed per STFT call. Bounds the working memory to about
# budget * n_fft * 8 bytes and, on CPU, keeps the working set in cache (measured fastest around 1024).
_CHUNK_FRAMES = 1024
_CHUNK_FRAMES_ACCEL = 65536
_MIN_CHUNK_FRAMES = 64
# Adjacent mel filters per block of the banded filterbank projection (16 measured fastest for 80 mels).
_BAND_FILTERS = 16
# Safety factor (in standard deviations of the float32 DFT noise floor) of the precision guard.
_GUARD_SIGMAS = 4.0


@dataclass(frozen=True)
class FrontendConfig:
    """Parameters of the log-mel front end.

    Attributes:
        sample_rate: expected waveform rate in Hz (the front end does not resample).
        n_fft: DFT size in samples (even); ``n_fft // 2 + 1`` frequency bins.
        win_length: Hann window length in samples (``<= n_fft``; centred inside the DFT frame).
        hop_length: frame step in samples (160 = 10 ms at 16 kHz).
        n_mels: number of mel bands.
        f_min: lowest filter edge in Hz.
        f_max: highest filter edge in Hz (``<= sample_rate / 2``).
        eps: added to the mel power before the natural log.
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    eps: float = LOG_MEL_EPS

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be > 0 Hz, got {self.sample_rate}")
        if self.n_fft <= 0 or self.n_fft % 2:
            problems.append(f"n_fft must be a positive even number, got {self.n_fft}")
        if not 0 < self.win_length <= self.n_fft:
            problems.append(f"win_length must be in 1..n_fft={self.n_fft}, got {self.win_length}")
        if self.hop_length <= 0:
            problems.append(f"hop_length must be > 0, got {self.hop_length}")
        if self.n_mels <= 0:
            problems.append(f"n_mels must be > 0, got {self.n_mels}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= f_min < f_max <= sample_rate/2 = {self.sample_rate / 2} Hz, "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        if not self.eps > 0:
            problems.append(f"eps must be > 0, got {self.eps}")
        if problems:
            raise ValueError("invalid FrontendConfig: " + "; ".join(problems))

    @property
    def n_freqs(self) -> int:
        """Number of one-sided DFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def pad(self) -> int:
        """Reflect padding on each side in samples, ``n_fft // 2``."""
        return self.n_fft // 2

    @property
    def min_samples(self) -> int:
        """Shortest waveform the reflect-padded STFT accepts (``n_fft // 2 + 1`` samples)."""
        return self.pad + 1

    def num_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples: ``n_samples // hop_length + 1``."""
        return int(n_samples) // self.hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown FrontendConfig keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**data)


PRESETS: dict[str, FrontendConfig] = {
    "m2d-16k": FrontendConfig(16000, 400, 400, 160, 80, 50.0, 8000.0),
    "m2d-32k": FrontendConfig(32000, 800, 800, 320, 80, 50.0, 16000.0),
    "byola": FrontendConfig(16000, 1024, 1024, 160, 64, 60.0, 7800.0),
}


def get_preset(name: str) -> FrontendConfig:
    """Return the preset called ``name`` (``"m2d-16k"``, ``"m2d-32k"`` or ``"byola"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown front-end preset {name!r}; choose one of {sorted(PRESETS)}") from None


def resolve_config(config: FrontendConfig | str) -> FrontendConfig:
    return get_preset(config) if isinstance(config, str) else config


def frontend_for(family: str, sample_rate: int, n_mels: int) -> FrontendConfig:
    """The front end of a model family at a rate: the ``byola`` preset (16 kHz only) or ``m2d-16k`` / ``m2d-32k``,
    with ``n_mels`` replaced when the model's differs.

    Raises:
        ValueError: a rate the family has no front end for.
    """
    if family == "byola":
        if sample_rate != 16000:
            raise ValueError(f"BYOL-A models run at 16000 Hz, got sample_rate={sample_rate}")
        preset = PRESETS["byola"]
    else:
        key = {16000: "m2d-16k", 32000: "m2d-32k"}.get(int(sample_rate))
        if key is None:
            raise ValueError(f"M2D front ends exist for 16000 and 32000 Hz, got sample_rate={sample_rate}")
        preset = PRESETS[key]
    return preset if preset.n_mels == n_mels else dataclasses.replace(preset, n_mels=n_mels)


# ----------------------------------------------------------------------------------------------
# Filterbank and window (float64 numpy, built from the formulas)
# ----------------------------------------------------------------------------------------------

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_F_SP  # 15 mel
_SLANEY_LOGSTEP = math.log(6.4) / 27.0  # mel spacing in the log part


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_F_SP
    octaves = np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ)
    log_part = _SLANEY_BREAK_MEL + octaves / _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log_part, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_F_SP
    above = np.maximum(mel, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL
    log_part = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOGSTEP * above)
    return np.where(mel >= _SLANEY_BREAK_MEL, log_part, linear)


def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """Triangular mel filters on the Slaney (Auditory Toolbox) mel scale with area normalisation.

    The scale is linear below 1 kHz (200/3 Hz per mel) and logarithmic above (27 mels per factor 6.4).
    ``n_mels + 2`` edge frequencies are spaced evenly in mel between ``f_min`` and ``f_max`` (Hz); filter
    ``m`` rises from edge ``m`` to ``m+1`` and falls to ``m+2``, and is scaled by ``2 / (f[m+2] - f[m])``
    so every filter has the same area.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float64 weights for DFT bins at ``k * sample_rate / n_fft`` Hz.
    """
    if n_mels <= 0 or n_fft <= 0:
        raise ValueError(f"n_mels and n_fft must be > 0, got n_mels={n_mels}, n_fft={n_fft}")
    if not 0 <= f_min < f_max:
        raise ValueError(f"need 0 <= f_min < f_max, got f_min={f_min} Hz, f_max={f_max} Hz")
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_edges = np.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2)
    hz_edges = _slaney_mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)  # [n_mels + 1]
    offsets = hz_edges[:, None] - bin_hz[None, :]  # [n_mels + 2, n_freqs]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights


def empty_mel_bins(config: FrontendConfig, source_rate: int) -> int:
    """How many of ``config``'s mel filters start at or above the Nyquist frequency of audio recorded at
    ``source_rate`` Hz: after resampling to the model rate they only ever see silence."""
    mel_edges = np.linspace(_hz_to_slaney_mel(config.f_min), _hz_to_slaney_mel(config.f_max), config.n_mels + 2)
    lower_edges_hz = _slaney_mel_to_hz(mel_edges)[: config.n_mels]
    return int(np.sum(lower_edges_hz >= source_rate / 2.0))


def periodic_hann(win_length: int, n_fft: int | None = None) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / win_length)`` (float64, ``[n_fft]``).

    When ``n_fft > win_length`` the window is zero-padded symmetrically to ``n_fft`` samples.
    """
    n_fft = win_length if n_fft is None else n_fft
    n = np.arange(win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left))


# ----------------------------------------------------------------------------------------------
# Torch module
# ----------------------------------------------------------------------------------------------


class LogMelSpectrogram(nn.Module):
    """Batched log-mel spectrogram, ``[B, samples]`` (or ``[samples]``) -> ``[B, n_mels, frames]`` float32.

    ``frames = samples // hop_length + 1``. The computation runs on the device of the input waveform
    (buffers are moved there if needed). Inputs must hold at least ``n_fft // 2 + 1`` samples.

    Precision: the DFT runs in float32. Float32 rounding leaves a noise floor of about
    ``1.2e-7 * ||windowed frame||_2`` in every DFT bin, which matters only for mel bands whose power is
    near ``eps`` while the frame is loud (pure tones, chirps, synthetic harmonic sounds: 80+ dB of
    dynamic range within a frame), where it reaches ~1.5e-3 in log units. With ``precision_guard=True``
    (default) the module estimates that error per frame from the float32 result and recomputes the
    frames whose estimate exceeds ``guard_tol`` (natural-log units) with a float64 DFT. Noise and
    speech-like audio rarely trigger it (0-2 % of frames); synthetic tonal material does (15-30 %,
    nearly all frames of a pure chirp). Measured worst case afterwards: 4.5e-4 from a float64
    reference (1e-4 typical). ``precision_guard=False`` is ~1.5-2x faster on such material.
    The guard is skipped on devices without float64 (MPS).
    """

    window: torch.Tensor
    mel_fb_t: torch.Tensor
    filter_area: torch.Tensor
    filter_height: torch.Tensor

    def __init__(
        self,
        config: FrontendConfig | str = "m2d-16k",
        *,
        precision_guard: bool = True,
        guard_tol: float = 5e-4,
    ) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.precision_guard = precision_guard
        self.guard_tol = guard_tol
        c = self.config
        window = periodic_hann(c.win_length, c.n_fft)
        self.register_buffer("window", torch.from_numpy(window).float(), persistent=False)
        self.register_buffer("window64", torch.from_numpy(window), persistent=False)
        fb = slaney_mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
        # Stored transposed, [n_freqs, n_mels], so the frame axis stays contiguous: power [B, T, F] @ fb.
        self.register_buffer("mel_fb_t", torch.from_numpy(fb.T.copy()).float(), persistent=False)
        self.register_buffer("filter_area", torch.from_numpy(fb.sum(axis=1)).float(), persistent=False)
        self.register_buffer("filter_height", torch.from_numpy(fb.max(axis=1)).float(), persistent=False)
        # The filterbank is ~95 % zeros: groups of _BAND_FILTERS adjacent filters only touch a contiguous
        # range of bins, so the mel projection is done per group on that range (3-5x fewer multiply-adds).
        self._bands: list[tuple[int, int, int, int]] = []
        for m0 in range(0, c.n_mels, _BAND_FILTERS):
            m1 = min(m0 + _BAND_FILTERS, c.n_mels)
            support = np.flatnonzero(fb[m0:m1].any(axis=0))
            lo, hi = (int(support[0]), int(support[-1]) + 1) if support.size else (0, 1)
            self.register_buffer(
                f"mel_band_{len(self._bands)}", torch.from_numpy(fb[m0:m1, lo:hi].T.copy()).float(),
                persistent=False,
            )
            self._bands.append((lo, hi, m0, m1))

    @property
    def mel_fb(self) -> torch.Tensor:
        """Mel filterbank ``[n_mels, n_freqs]`` float32."""
        return self.mel_fb_t.T

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, win_length={c.win_length}, "
            f"hop_length={c.hop_length}, n_mels={c.n_mels}, f_min={c.f_min}, f_max={c.f_max}, "
            f"precision_guard={self.precision_guard}"
        )

    def check_length(self, n_samples: int) -> None:
        """Raise ``ValueError`` when ``n_samples`` is too short for the reflect-padded STFT."""
        c = self.config
        if n_samples < c.min_samples:
            raise ValueError(
                f"waveform has {n_samples} samples but the centred STFT (reflect padding of "
                f"{c.pad}) needs at least {c.min_samples} samples "
                f"({1000.0 * c.min_samples / c.sample_rate:.1f} ms at {c.sample_rate} Hz); "
                "zero-pad short clips before computing log-mel features"
            )

    def _project(self, power: torch.Tensor) -> torch.Tensor:
        """Mel projection ``[..., n_freqs] -> [..., n_mels]`` using the banded filterbank."""
        parts = [
            torch.matmul(power[..., lo:hi], getattr(self, f"mel_band_{i}").to(power.device))
            for i, (lo, hi, _, _) in enumerate(self._bands)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _mel_power(self, frames: torch.Tensor) -> torch.Tensor:
        """Mel power ``[B, T, n_mels]`` of raw frames ``[B, T, n_fft]`` (float32 DFT + guard)."""
        window = self.window.to(frames.device)
        windowed = frames * window
        spec = torch.view_as_real(torch.fft.rfft(windowed, dim=-1))
        power = spec[..., 0].square() + spec[..., 1].square()  # [B, T, n_freqs]
        mel = self._project(power)  # [B, T, n_mels]
        if not self.precision_guard or frames.device.type == "mps":
            return mel
        # A posteriori estimate of the float32 rounding effect on ln(mel + eps), per frame. Measured:
        # the DFT error per bin is a noise floor of RMS sigma = eps32 * ||windowed frame||_2 (plus a
        # harmless relative part near strong bins). Its effect on band m has std about
        # sigma * sqrt(2 * height_m * mel_m) (+ sigma^2 * area_m from |e|^2); we flag frames where
        # _GUARD_SIGMAS times that, relative to mel_m + eps, exceeds guard_tol.
        eps = self.config.eps
        area = self.filter_area.to(frames.device)
        height = self.filter_height.to(frames.device)
        # Energy of the windowed frame from the one-sided power spectrum (Parseval).
        energy = (2.0 * power.sum(dim=-1) - power[..., 0] - power[..., -1]) / self.config.n_fft
        k_sigma = _GUARD_SIGMAS * FLOAT32_EPS * energy.clamp_min(0).sqrt()  # [B, T]
        # Cheap pre-screen with per-frame extremes, then the per-band estimate for candidate frames only.
        loudest, quietest = mel.amax(dim=-1), mel.amin(dim=-1).clamp_min(0)
        coarse = k_sigma * (2.0 * float(height.max()) * loudest.clamp_min(0)).sqrt()
        coarse = (coarse + k_sigma.square() * float(area.max())) / (quietest + eps)
        redo = coarse > self.guard_tol  # [B, T]
        if bool(redo.any()):
            k_sig, sub = k_sigma[redo].unsqueeze(-1), mel[redo].clamp_min(0)
            spread = k_sig * (2.0 * height * sub).sqrt() + k_sig.square() * area
            redo[redo.clone()] = (spread / (sub + eps)).amax(dim=-1) > self.guard_tol
        if bool(redo.any()):
            exact = frames[redo].double() * self.window64.to(frames.device)
            spec64 = torch.view_as_real(torch.fft.rfft(exact, dim=-1))
            power64 = spec64[..., 0].square() + spec64[..., 1].square()
            mel[redo] = self._project(power64.float())
        return mel

    def frames_from_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """Log-mel of an already padded signal.

        Args:
            padded: ``[B, L]`` float with ``L >= n_fft``; frame ``j`` covers samples
                ``[j * hop, j * hop + n_fft)``.

        Returns:
            ``[B, n_mels, 1 + (L - n_fft) // hop]`` float32.
        """
        return self._frames(padded, pad=0)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave`` ``[B, samples]`` or ``[samples]`` (float, [-1, 1]) -> ``[B, n_mels, frames]`` float32."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(
                f"expected a waveform of shape [B, samples] or [samples], got {tuple(wave.shape)}"
            )
        self.check_length(wave.shape[-1])
        return self._frames(wave, pad=self.config.pad)

    @staticmethod
    def _reflect_slice(signal: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``reflect_pad(signal)[:, lo + pad : hi + pad]`` given in unpadded coordinates (may be < 0 or > n).

        Interior ranges are views; only the two edge chunks gather reflected indices, so the whole
        signal is never copied for padding.
        """
        n = signal.shape[-1]
        if lo >= 0 and hi <= n:
            return signal[:, lo:hi]
        index = torch.arange(lo, hi, device=signal.device).abs()
        index = torch.where(index > n - 1, 2 * (n - 1) - index, index)
        return signal[:, index]

    def _frames(self, signal: torch.Tensor, pad: int) -> torch.Tensor:
        """Log-mel ``[B, n_mels, T]`` of ``signal`` ``[B, n]`` reflect-padded by ``pad`` on each side."""
        c = self.config
        signal = signal.float()
        total = 1 + (signal.shape[-1] + 2 * pad - c.n_fft) // c.hop_length
        budget = _CHUNK_FRAMES if signal.device.type == "cpu" else _CHUNK_FRAMES_ACCEL
        chunk = max(_MIN_CHUNK_FRAMES, budget // max(1, signal.shape[0]))
        out = torch.empty(signal.shape[0], total, c.n_mels, device=signal.device)
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            begin = start * c.hop_length - pad
            piece = self._reflect_slice(signal, begin, begin + (count - 1) * c.hop_length + c.n_fft)
            frames = piece.unfold(-1, c.n_fft, c.hop_length)  # [B, count, n_fft] (a view)
            out[:, start : start + count] = self._mel_power(frames)
        return out.add_(c.eps).log_().transpose(1, 2).contiguous()


@functools.lru_cache(maxsize=8)
def cpu_module(config: FrontendConfig) -> LogMelSpectrogram:
    """The CPU :class:`LogMelSpectrogram` of ``config``, built once per config and reused (its filterbank and
    window); up to 8 configs are kept (``cpu_module.cache_clear()`` frees them)."""
    return LogMelSpectrogram(config)


def log_mel(wave: np.ndarray, config: FrontendConfig | str = "m2d-16k") -> np.ndarray:
    """Log-mel of one mono waveform on CPU.

    Args:
        wave: ``[samples]`` float waveform at ``config.sample_rate`` Hz.
        config: a :class:`FrontendConfig` or a preset name.

    Returns:
        ``[n_mels, samples // hop + 1]`` float32.
    """
    config = resolve_config(config)
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"log_mel expects a mono waveform [samples], got shape {wave.shape}")
    with torch.inference_mode():
        out = cpu_module(config)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out[0].numpy()
