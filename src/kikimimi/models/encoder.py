"""The interface every audio encoder network offers: :class:`FrameEncoder`.

Implemented by the M2D ViT (:class:`kikimimi.models.vit.AudioViT`) and the BYOL-A CNNs
(:mod:`kikimimi.models.byola`), so that inference and evaluation use an encoder without asking which
family it belongs to.

Units: ``n_mels`` mel bins; ``T`` log-mel frames (one per hop of the front end); ``T'`` output frames;
``D`` = :attr:`FrameEncoder.embedding_dim`. The input is always the *normalised* log-mel
``(log_mel − mean) / std``.

A clip of any length is encoded in two public steps, so that a caller can batch the pieces of many clips
together: :meth:`FrameEncoder.split_chunks` cuts one log-mel into the chunks the network takes in one pass
(M2D: the official training-length chunks; BYOL-A: the whole clip is one chunk), and
:meth:`FrameEncoder.encode_chunks` encodes a batch of equal-width chunks. Concatenating a clip's chunk
outputs along time gives exactly :meth:`FrameEncoder.encode_lms` of that clip.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class FrameEncoder(Protocol):
    """Normalised log-mel in, frame features and clip embeddings out."""

    @property
    def embedding_dim(self) -> int:
        """``D``: size of one frame feature and of a clip embedding (M2D: Fg·embed_dim; BYOL-A: ``d``)."""
        ...

    @property
    def chunk_frames(self) -> int | None:
        """Input unit: log-mel frames of one chunk (M2D: the training length); ``None``: the whole clip."""
        ...

    def encode_lms(self, lms: torch.Tensor) -> torch.Tensor:
        """Frame features of whole clips: ``[B, n_mels, T]`` (or ``[B, 1, n_mels, T]``) → ``[B, T', D]``."""
        ...

    def split_chunks(self, lms: torch.Tensor) -> list[torch.Tensor]:
        """One clip's log-mel ``[n_mels, T]`` (or a batch ``[B, n_mels, T]``) → its chunks ``[(B,) n_mels, Tc]``,
        in time order, each ready for :meth:`encode_chunks`."""
        ...

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """A batch of equal-width chunks ``[B, n_mels, Tc]`` → their frame features ``[B, Tc', D]``."""
        ...

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Clip embedding from frame features: ``[..., T', D]`` → ``[..., D]`` (pooled over time)."""
        ...

    def timestamps_ms(self, n_frames: int, n_samples: int, sample_rate: int, hop_length: int) -> torch.Tensor:
        """Time in ms (float64 ``[n_frames]``) of each of the ``n_frames`` frame features of a clip of
        ``n_samples`` samples at ``sample_rate`` Hz, whose log-mel advances ``hop_length`` samples per frame."""
        ...

    def fresh_like(self) -> FrameEncoder:
        """A new encoder of the same architecture with freshly initialised weights (on the CPU), drawn from
        the global torch generator: seed it first for a reproducible copy."""
        ...
