"""Shared pytest fixtures: small generated audio files in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def sine(freq_hz: float, duration_s: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """float32 ``[samples]`` sine wave."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture
def wav_factory(tmp_path: Path) -> Callable[..., Path]:
    """``wav_factory(name="a.wav", wave=None, sample_rate=16000, duration_s=0.5, freq_hz=440.0,
    channels=1, subtype=None, format=None) -> Path``.

    Writes ``wave`` (``[samples]`` or ``[samples, channels]``) or, if None, a sine of ``freq_hz``
    (copied to ``channels`` channels) under ``tmp_path``; format follows the file extension unless
    ``format`` is given.
    """

    def make(name: str = "a.wav", wave: np.ndarray | None = None, sample_rate: int = 16000,
             duration_s: float = 0.5, freq_hz: float = 440.0, channels: int = 1,
             subtype: str | None = None, format: str | None = None) -> Path:
        if wave is None:
            wave = sine(freq_hz, duration_s, sample_rate)
            if channels > 1:
                wave = np.stack([wave * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, sample_rate, subtype=subtype, format=format)
        return path

    return make
