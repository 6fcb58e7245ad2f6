"""Reference embedding functions that need no trained model.

:class:`LogMelStats` summarises a clip by the per-band mean and standard deviation over time of its log-mel
spectrogram (``[2 × n_mels]``: means first, then stds). It follows the embedding-function contract
``(waveforms: list[np.ndarray], sample_rate) -> [B, D]`` so it plugs into the probe like any model.
A randomly initialised encoder baseline is built elsewhere; any embedding function works here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kikimimi.audio.decode import resample
from kikimimi.features.frontend import FrontendConfig, LogMelSpectrogram, get_preset

__all__ = ["LogMelStats", "log_mel_stats"]


class LogMelStats:
    """Embedding function: per-band mean and std over time of the log-mel → ``[B, 2·n_mels]`` float32.

    Args:
        config: front-end configuration or preset name (default ``"m2d-16k"``: 16 kHz, 80 bands).

    Waveforms at another rate are resampled to ``config.sample_rate`` first; clips shorter than the STFT
    needs are zero-padded at the end.
    """

    def __init__(self, config: FrontendConfig | str = "m2d-16k") -> None:
        self.config = get_preset(config) if isinstance(config, str) else config
        self._melspec = LogMelSpectrogram(self.config)
        self.model_id = (
            f"logmel-stats-{self.config.sample_rate}-{self.config.n_mels}-{self.config.n_fft}-"
            f"{self.config.hop_length}-{self.config.f_min:g}-{self.config.f_max:g}"
        )

    @property
    def embedding_dim(self) -> int:
        return 2 * self.config.n_mels

    def _prepare(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"LogMelStats expects 1-D waveforms, got shape {wave.shape}")
        if sample_rate != self.config.sample_rate:
            wave = resample(wave, sample_rate, self.config.sample_rate)
        if wave.shape[0] < self.config.min_samples:
            wave = np.pad(wave, (0, self.config.min_samples - wave.shape[0]))
        return wave

    @torch.inference_mode()
    def __call__(self, waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """``waves``: list of ``[samples]`` float32 at ``sample_rate`` Hz → ``[B, 2·n_mels]`` float32."""
        prepared = [self._prepare(w, sample_rate) for w in waves]
        if not prepared:
            return np.zeros((0, self.embedding_dim), np.float32)
        out = []
        same_length = len({w.shape[0] for w in prepared}) == 1
        groups = [np.stack(prepared)] if same_length else [w[None] for w in prepared]
        for g in groups:
            lms = self._melspec(torch.from_numpy(g))  # [b, n_mels, frames]
            out.append(torch.cat([lms.mean(dim=-1), lms.std(dim=-1, correction=0)], dim=1))
        return torch.cat(out).numpy().astype(np.float32)


def log_mel_stats(
    waves: Sequence[np.ndarray], sample_rate: int, config: FrontendConfig | str = "m2d-16k"
) -> np.ndarray:
    """Functional form of :class:`LogMelStats` (builds the front end per call)."""
    return LogMelStats(config)(waves, sample_rate)
