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

:class:`TextAudioModel` is the face of an audio–text (CLAP-like) model one level up: audio and text in,
embeddings of one joint space out (:class:`kikimimi.inference.clap.CLAPModel`; the zero-shot, retrieval and
search functions take any object that offers it).

One input in, one output out: ``encode_audio`` (like ``AudioEncoder.embed`` and ``Captioner.caption``) returns
one result without the batch dimension for one input — a path or a 1-D waveform → ``[D]`` — and a batch for a
list of inputs or a ``[B, samples]`` array → ``[B, D]``. ``encode_text`` always returns ``[N, D]`` (a string is a
list of one, as the scoring functions use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
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


@runtime_checkable
class TextAudioModel(Protocol):
    """Audio and text into one embedding space (CLAP-like): what zero-shot scoring, retrieval and search use.

    Units: ``D`` = :attr:`embedding_dim`; audio at :attr:`sample_rate` Hz (other rates are resampled).
    Embeddings are float32 and not normalised; :meth:`similarity` gives cosines.
    """

    sample_rate: int
    embedding_dim: int

    def encode_audio(self, audio: Any, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray:
        """One path / 1-D waveform → ``[D]``; a list of them or a ``[B, samples]`` array → ``[B, D]``."""
        ...

    def encode_text(self, texts: Sequence[str] | str, batch_size: int = 64) -> np.ndarray:
        """``N`` strings (one string: ``N = 1``) → ``[N, D]``."""
        ...

    def similarity(self, audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Cosine similarity ``[A, T]`` of audio ``[A, D]`` and text ``[T, D]`` embeddings."""
        ...

    def __call__(self, waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """Embedding-function form: a list of waveforms at ``sample_rate`` → ``[B, D]``."""
        ...
