"""BYOL-A convolutional encoders (v1 ``AudioNTT2020`` and v2 ``AudioNTT2022``).

Input: normalised log-mel ``[B, 1, F, T]`` (``[B, F, T]`` accepted), F = 64 for the released weights.
Per-frame vectors are flattened **frequency-major, channel-minor** (index f·64 + c) before the MLP,
which is the order the official ``fc.0.weight`` expects. Parameter names (``features.N``, ``fc.N``)
equal the official state dicts.

- v1: 3 conv blocks (time /8, one frame per 80 ms at hop 10 ms) → MLP → ``[B, T/8, d]``.
- v2: 2 conv blocks (time /4, 40 ms) → concat [conv features 64·F/4 | MLP output] → ``[B, T/4, d]``
  with d = 3072 for the released file (1024 conv + 2048 MLP).
Clip embeddings pool max over time + mean over time (a sum, not a concatenation).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(),
            nn.MaxPool2d(2, stride=2)]


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 3 else x


def _flatten_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F', T'] -> [B, T', F'·C] with index f·C + c."""
    x = x.permute(0, 3, 2, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def temporal_pool(frames: torch.Tensor) -> torch.Tensor:
    """Max over time + mean over time: ``[..., T, D]`` -> ``[..., D]``."""
    return frames.max(dim=-2).values + frames.mean(dim=-2)


class _BYOLAFrames(nn.Module):
    """Shared logic of the BYOL-A encoders, a :class:`~kikimimi.models.encoder.FrameEncoder`: conv
    ``features`` then ``fc``; subclasses define the layers and :meth:`_frames`."""

    time_downsample: int = 8
    conv_blocks: int = 3
    d: int

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] < self.time_downsample:
            raise ValueError(
                f"input of {x.shape[-1]} frames is too short: BYOL-A v{1 if self.conv_blocks == 3 else 2} needs "
                f">= {self.time_downsample} frames ({self.time_downsample * 10} ms at a 10 ms hop)")

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, F, T]`` -> ``[B, T // time_downsample, d]``."""
        raise NotImplementedError

    def frame_centres_ms(self, n_frames: int, hop_ms: float = 10.0) -> torch.Tensor:
        """Centre time of each output frame in ms: (k·s + (s−1)/2)·hop_ms, s = time downsampling."""
        s = self.time_downsample
        return (torch.arange(n_frames, dtype=torch.float64) * s + (s - 1) / 2.0) * hop_ms

    @property
    def frame_hop_frames(self) -> int:
        return self.time_downsample

    # ------------------------------------------------------------------ the FrameEncoder interface
    @property
    def embedding_dim(self) -> int:
        """Size of frame and clip embeddings (``d``)."""
        return self.d

    @property
    def chunk_frames(self) -> None:
        """``None``: the CNN takes a clip of any length in one pass."""
        return None

    def encode_lms(self, lms: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``[B, F, T]`` (or ``[B, 1, F, T]``) -> frame features ``[B, T // time_downsample, d]``."""
        x = _as_4d(lms)
        self._check(x)
        return self._frames(x)

    def split_chunks(self, lms: torch.Tensor) -> list[torch.Tensor]:
        """The whole clip is one chunk: ``[..., F, T]`` -> ``[lms]``."""
        return [lms]

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """Equal-width clips ``[B, F, T]`` -> ``[B, T // time_downsample, d]`` (:meth:`encode_lms`)."""
        return self.encode_lms(chunks)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Clip embedding: max + mean over time (:func:`temporal_pool`), ``[..., T', d]`` -> ``[..., d]``."""
        return temporal_pool(frames)

    def timestamps_ms(self, n_frames: int, n_samples: int, sample_rate: int, hop_length: int) -> torch.Tensor:
        """Frame centres ``[n_frames]`` (float64, ms) at a log-mel hop of ``hop_length / sample_rate`` seconds
        (:meth:`frame_centres_ms`; ``n_samples`` plays no part)."""
        return self.frame_centres_ms(n_frames, 1000.0 * hop_length / sample_rate)


class AudioNTT2020Frames(_BYOLAFrames):
    """BYOL-A v1 frame-level encoder: ``[B, 1, F, T]`` -> ``[B, T // 8, d]``."""

    time_downsample = 8
    conv_blocks = 3

    def __init__(self, n_mels: int = 64, d: int = 512) -> None:
        super().__init__()
        self.n_mels, self.d = n_mels, d
        self.features = nn.Sequential(*_conv_block(1, 64), *_conv_block(64, 64), *_conv_block(64, 64))
        self.fc = nn.Sequential(nn.Linear(64 * (n_mels // 8), d), nn.ReLU(), nn.Dropout(p=0.3),
                                nn.Linear(d, d), nn.ReLU())

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(_flatten_frames(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_lms(x)

    def fresh_like(self) -> AudioNTT2020Frames:
        """A new encoder of the same class and sizes, freshly initialised (global torch generator)."""
        return type(self)(n_mels=self.n_mels, d=self.d)


class AudioNTT2020(AudioNTT2020Frames):
    """BYOL-A v1 clip-level encoder: ``[B, 1, F, T]`` -> ``[B, d]`` (max + mean over time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.encode_lms(x))


class AudioNTT2022Frames(_BYOLAFrames):
    """BYOL-A v2 frame-level encoder: ``[B, 1, F, T]`` -> ``[B, T // 4, d]`` = [conv | MLP]."""

    time_downsample = 4
    conv_blocks = 2

    def __init__(self, n_mels: int = 64, d: int = 3072, base_d: int = 64, mlp_hidden_d: int = 2048) -> None:
        super().__init__()
        self.n_mels, self.d = n_mels, d
        self.base_d, self.mlp_hidden_d = base_d, mlp_hidden_d
        conv_d = base_d * (n_mels // 4)
        if d <= conv_d:
            raise ValueError(f"v2 feature size d={d} must exceed the conv feature size {conv_d}")
        self.features = nn.Sequential(*_conv_block(1, base_d), *_conv_block(base_d, base_d))
        self.fc = nn.Sequential(nn.Linear(conv_d, mlp_hidden_d), nn.ReLU(), nn.Dropout(p=0.3),
                                nn.Linear(mlp_hidden_d, d - conv_d), nn.ReLU())

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        conv = _flatten_frames(self.features(x))
        return torch.cat([conv, self.fc(conv)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_lms(x)

    def fresh_like(self) -> AudioNTT2022Frames:
        """A new encoder of the same class and sizes, freshly initialised (global torch generator)."""
        return type(self)(n_mels=self.n_mels, d=self.d, base_d=self.base_d, mlp_hidden_d=self.mlp_hidden_d)


class AudioNTT2022(AudioNTT2022Frames):
    """BYOL-A v2 clip-level encoder: ``[B, 1, F, T]`` -> ``[B, d]`` (max + mean over time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.encode_lms(x))
