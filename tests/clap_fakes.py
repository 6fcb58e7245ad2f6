"""Test helpers for the audio–language tests: fake text encoders, a fake CLAP model whose answers are known,
and tiny official-layout M2D-CLAP files (random weights, built from ``official_layouts``)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import official_layouts as L
import torch

from kikimimi.audio.decode import load_audio

TINY = dict(embed_dim=64, depth=2, input_size=(80, 64), patch_size=(16, 16))


class HashTextEncoder:
    """Bag-of-words text encoder: each word is a fixed random vector (seeded by its crc32), summed."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size: int = 32) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls.append(texts)
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                g = torch.Generator().manual_seed(zlib.crc32(w.encode()))
                out[i] += torch.randn(self.dim, generator=g)
        return out


def patch_text_encoder(monkeypatch, encoder) -> None:
    """Make every CLAPModel resolve its text encoder to ``encoder`` (CLI tests run in-process)."""
    from kikimimi.inference.clap import CLAPModel

    monkeypatch.setattr(CLAPModel, "_resolve_text_encoder", lambda self: encoder)


def write_tiny_clap2025(folder: Path, text_dim: int = 32, name: str = "m2d_clap_vit_base-80x64p16x16-2025test",
                        seed: int = 0) -> Path:
    """A 2025-layout file (``backbone.`` + semantic projector + linear text_proj), tiny ViT, no text encoder."""
    inner = L.m2d_encoder_state(**TINY, norm_stats=L.CLAP2025_NORM_STATS, seed=seed)
    inner.update(L.clap2025_proj_state(TINY["embed_dim"], 1, 1.0, text_proj="linear", text_dim=text_dim, seed=seed))
    state = {f"backbone.{k}": v for k, v in inner.items()}
    return L.write_state(Path(folder) / name / "checkpoint-30.pth", state, "model")


def write_tiny_clap2024(folder: Path, name: str = "m2d_clap_vit_base-80x64p16x16-240128", seed: int = 0) -> Path:
    """A 2024 encoder-only-style file (encoder + ``audio_proj.0/2`` + ``logit_scale``), tiny ViT."""
    state = L.m2d_encoder_state(**TINY, norm_stats=False, seed=seed)
    state.update(L.clap2024_proj_state(TINY["embed_dim"], seed=seed))
    return L.write_state(Path(folder) / name / "checkpoint-300.pth", state)


CENTRES_HZ = np.geomspace(100, 6400, 13)


def _bumps(freq_hz: float) -> np.ndarray:
    x = np.log2(max(freq_hz, 1.0)) - np.log2(CENTRES_HZ)
    return np.exp(-0.5 * (x / 0.5) ** 2).astype(np.float32)


class FrequencyCLAP:
    """A CLAP stand-in: audio → bumps around its strong spectral peaks; text → bumps around the first number in it
    (e.g. "a 440 Hz tone"). So "the 440 Hz one" is nearest to the 440 Hz clip, and the ranking is known."""

    sample_rate = 16000
    temperature_scale = 20.0

    def __init__(self) -> None:
        self.embedded: list[int] = []  # clips per encode_audio call

    def encode_audio(self, audio, sample_rate=None, batch_size=8) -> np.ndarray:
        items = [audio] if isinstance(audio, (str, Path)) else list(audio)
        out = []
        for item in items:
            if isinstance(item, (str, Path)):
                wave, sr = load_audio(item, self.sample_rate)
            else:
                wave, sr = np.asarray(item, dtype=np.float32), sample_rate or self.sample_rate
            spec = np.abs(np.fft.rfft(wave))
            freqs = np.fft.rfftfreq(len(wave), 1 / sr)
            peaks = [i for i in range(1, len(spec) - 1)
                     if spec[i] >= 0.5 * spec.max() and spec[i] >= spec[i - 1] and spec[i] > spec[i + 1]]
            out.append(sum(_bumps(freqs[i]) for i in peaks) if peaks else _bumps(1.0))
        self.embedded.append(len(out))
        return np.stack(out)

    def encode_text(self, texts) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for t in texts:
            m = re.search(r"\d+(\.\d+)?", t)
            out.append(_bumps(float(m.group(0))) if m else np.full(len(CENTRES_HZ), 0.1, np.float32))
        return np.stack(out)

    def __call__(self, waves, sample_rate):
        return self.encode_audio(list(waves), sample_rate)


#: classes of the first run's tiny generated labelled set (:func:`tiny_demo_set`)
DEMO_CLASSES = ("tone", "noise_burst", "clicks")


def tiny_demo_set(out: Path) -> tuple[Path, Path, Path]:
    """``(out, labels.csv, m2d-16k cache)``: 5 one-second clips per class of :data:`DEMO_CLASSES` (3 train / 1 valid /
    1 test) and their log-mel cache, as the first run's audio–language stages read them."""
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.features.prep_cache import prep_cache

    labels_csv = make_dataset(out / "audio", n_per_class=5, duration_s=1.0, seed=0, classes=DEMO_CLASSES)
    cache = out / "logmel-m2d-16k"
    prep_cache([labels_csv], cache, preset="m2d-16k", workers=1)
    return out, labels_csv, cache
