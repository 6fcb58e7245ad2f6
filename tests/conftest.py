"""Shared pytest fixtures: small generated audio files in ``tmp_path``, a tiny official-layout M2D file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# The default precision, "auto", measures the CPU paths once per model and may pick an int8 one; tests compare
# embeddings exactly, so the whole run (subprocesses too) defaults to fp32. Tests of "auto" ask for it by name.
os.environ["KIKIMIMI_PRECISION"] = "fp32"


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


@pytest.fixture(scope="session")
def tiny_m2d_file(tmp_path_factory) -> Path:
    """A tiny M2D encoder-only file in the official layout (ViT width 64, depth 2, log-mel stats -7.5 / 4.0)."""
    import official_layouts as ol
    import torch

    folder = tmp_path_factory.mktemp("tiny-m2d") / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(norm_stats=(-7.5, 4.0), embed_dim=64, depth=2), folder / "w.pth")
    return folder / "w.pth"


@pytest.fixture
def server():
    """A model-download server on 127.0.0.1 (tests/model_server.py), stopped after the test."""
    from model_server import ModelServer

    s = ModelServer().start()
    yield s
    s.stop()


@pytest.fixture
def home(tmp_path, monkeypatch, server):
    """An isolated kikimimi home whose official URLs point at ``server``."""
    from model_server import isolated_home

    return isolated_home(tmp_path, monkeypatch, server)


@pytest.fixture
def offline_packaged(tmp_path, monkeypatch):
    """An empty kikimimi home with no network, no user-registered models and float32 inference: how the tests of
    kikimimi's packaged models (``kikimimi/weights/``) load them."""
    from kikimimi.checkpoints import registry

    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KIKIMIMI_OFFLINE", "1")
    monkeypatch.setenv("KIKIMIMI_PRECISION", "fp32")
    monkeypatch.setattr(registry, "_registered", {})


@pytest.fixture(scope="session")
def milvus_ok(tmp_path_factory):
    """Skip a test unless pymilvus and Milvus Lite are installed and Milvus Lite starts here (the ``milvus`` extra)."""
    try:
        import milvus_lite  # noqa: F401
        from pymilvus import MilvusClient
    except ImportError as exc:
        pytest.skip(f'pymilvus / milvus-lite not installed ({exc}): pip install "kikimimi[milvus]"')
    try:
        MilvusClient(str(tmp_path_factory.mktemp("probe") / "probe.db")).close()
    except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip
        pytest.skip(f"Milvus Lite cannot start on this machine: {exc}")
