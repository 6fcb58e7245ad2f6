"""The user-facing API: ``model = kikimimi.load(path)``, then ``model.embed(...)`` / ``model.embed_frames(...)``.

Every encoder is used through its :class:`~kikimimi.models.encoder.FrameEncoder` interface, which follows
each family's official runtime: waveform at the model rate → log-mel → (x − mean) / std → the encoder's
chunks (M2D: training-length chunks, zero padding in the normalised domain; BYOL-A: the whole clip) →
frame features ``[T', D]`` → the encoder's pooling (M2D: mean over time; BYOL-A: max + mean) for the clip
embedding, and the encoder's timestamps (M2D: frame ``i`` at ``i · duration_s / T' · 1000`` ms; BYOL-A:
frame centres). BYOL-A expects the normalisation statistics of the dataset at hand
(:func:`norm_stats_from_files`).

Chunks of equal width are batched across clips; no clip is padded to share a batch.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kikimimi.audio.decode import AudioDecodeError, load_audio, resample
from kikimimi.checkpoints import EncoderBundle, load_encoder
from kikimimi.device import resolve_device
from kikimimi.features.frontend import LogMelSpectrogram, get_preset, log_mel
from kikimimi.features.normstats import NormStats, compute_norm_stats
from kikimimi.models.encoder import FrameEncoder

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Any]


class AudioEncoder:
    """A loaded encoder ready to embed audio (eval mode, no gradients).

    Attributes:
        bundle: the underlying :class:`~kikimimi.checkpoints.EncoderBundle`.
        encoder: the network, a :class:`~kikimimi.models.encoder.FrameEncoder` (on ``device``, eval mode).
        family: ``"m2d"`` or ``"byola"`` (the checkpoint's label, for display).
        sample_rate: model rate in Hz; other rates are resampled with soxr.
        embedding_dim: size of clip embeddings (M2D: Fg·D, 3840 for ViT-Base 16x16; BYOL-A: d or 3072).
        frame_embedding_dim: size of frame embeddings (same as ``embedding_dim``).
    """

    def __init__(self, bundle: EncoderBundle, device: str | torch.device | None = None) -> None:
        self.bundle = bundle.eval()
        self.device = resolve_device(device)
        self.family = bundle.family
        self.encoder: FrameEncoder = bundle.encoder.to(self.device).eval()
        self.frontend = LogMelSpectrogram(bundle.frontend).to(self.device)
        self.norm_stats: NormStats = bundle.norm_stats
        self.sample_rate = int(bundle.frontend.sample_rate)
        self.embedding_dim = int(self.encoder.embedding_dim)
        self.frame_embedding_dim = self.embedding_dim

    def __repr__(self) -> str:
        return (f"AudioEncoder(family={self.family!r}, sample_rate={self.sample_rate}, "
                f"embedding_dim={self.embedding_dim}, norm_stats=({self.norm_stats.mean:.4f}, "
                f"{self.norm_stats.std:.4f}), device={self.device})")

    # ------------------------------------------------------------------ inputs
    def waveforms(self, audio: AudioInput, sample_rate: int | None = None) -> list[np.ndarray]:
        """Any accepted input as a list of 1-D float32 waveforms ``[samples]`` at the model rate.

        ``audio``: a path, a list of paths, a 1-D waveform, a list of 1-D waveforms of any lengths, or a
        ``[B, samples]`` array/tensor (one row per clip). Files are decoded and resampled to the model rate;
        waveforms are taken to be at ``sample_rate`` Hz (default: the model rate) and resampled when it differs.

        Raises:
            ValueError: a waveform that is not 1-D.
            kikimimi.audio.decode.AudioDecodeError: an unreadable file.
        """
        if isinstance(audio, (str, os.PathLike)):
            audio = [audio]
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        if isinstance(audio, np.ndarray):
            audio = [audio] if audio.ndim == 1 else list(audio)
        waves = []
        for item in audio:
            if isinstance(item, (str, os.PathLike)):
                wave, _ = load_audio(item, self.sample_rate)
            else:
                wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
                if wave.ndim != 1:
                    raise ValueError(f"expected 1-D waveforms, got shape {wave.shape}")
                wave = wave.astype(np.float32, copy=False)
                if sample_rate is not None and sample_rate != self.sample_rate:
                    wave = resample(wave, sample_rate, self.sample_rate)
            waves.append(wave)
        return waves

    # ------------------------------------------------------------------ core
    def _normalised_log_mel(self, wave: np.ndarray) -> torch.Tensor:
        """One waveform ``[samples]`` → its normalised log-mel ``[n_mels, T]`` on the device."""
        lms = self.frontend(torch.from_numpy(np.ascontiguousarray(wave)).to(self.device))[0]
        return lms.sub_(self.norm_stats.mean).div_(self.norm_stats.std)

    @torch.inference_mode()
    def _encode(self, waves: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
        """Frame features ``[T'_i, D]`` for every waveform (CPU float32).

        Each clip's normalised log-mel is cut by the encoder's ``split_chunks``; chunks of equal width are
        batched *across* clips (at most ``batch_size`` per batch) through ``encode_chunks``, and each clip's
        chunk outputs are concatenated along time again (see :class:`~kikimimi.models.encoder.FrameEncoder`).
        """
        pieces: dict[int, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        n_chunks = []
        for clip, wave in enumerate(waves):
            chunks = self.encoder.split_chunks(self._normalised_log_mel(wave))
            for index, chunk in enumerate(chunks):
                pieces[chunk.shape[-1]].append((clip, index, chunk))
            n_chunks.append(len(chunks))
        results: list[list[torch.Tensor | None]] = [[None] * n for n in n_chunks]
        for group in pieces.values():
            for start in range(0, len(group), batch_size):
                part = group[start:start + batch_size]
                frames = self.encoder.encode_chunks(torch.stack([c for _, _, c in part])).float().cpu()
                for (clip, index, _), f in zip(part, frames, strict=True):
                    results[clip][index] = f
        return [torch.cat(r, dim=0) for r in results]  # type: ignore[arg-type]

    def timestamps_ms(self, n_frames: int, n_samples: int) -> np.ndarray:
        """Timestamps (ms) of ``n_frames`` frame features of a clip of ``n_samples`` samples."""
        hop_length = self.bundle.frontend.hop_length
        return self.encoder.timestamps_ms(n_frames, n_samples, self.sample_rate, hop_length).numpy()

    # ------------------------------------------------------------------ public
    def embed(self, audio: AudioInput, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray:
        """Clip embeddings ``[B, embedding_dim]`` (float32): the encoder's pooling of each clip's frame features.

        ``audio``: a path, a list of paths, a 1-D waveform, a list of 1-D waveforms of any lengths, or a
        ``[B, samples]`` array/tensor. Waveforms are at ``sample_rate`` (default: the model rate).
        """
        frames = self._encode(self.waveforms(audio, sample_rate), batch_size)
        return torch.stack([self.encoder.pool(f) for f in frames]).numpy()

    def embed_frames(self, audio: AudioInput, sample_rate: int | None = None, batch_size: int = 8,
                     stack: bool = True):
        """Frame embeddings and their timestamps.

        Returns ``(embeddings, timestamps_ms)``: arrays ``[B, T, D]`` and ``[B, T]`` when every clip gives
        the same number of frames (and ``stack``), else lists of ``[T_i, D]`` and ``[T_i]`` arrays.
        """
        waves = self.waveforms(audio, sample_rate)
        frames = [f.numpy() for f in self._encode(waves, batch_size)]
        stamps = [self.timestamps_ms(len(f), len(w)) for f, w in zip(frames, waves, strict=True)]
        if stack and len({len(f) for f in frames}) == 1:
            return np.stack(frames), np.stack(stamps)
        return frames, stamps

    def __call__(self, waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """Embedding-function form used by :mod:`kikimimi.evaluation`: waveforms at a rate → ``[B, D]``."""
        return self.embed(list(waves), sample_rate)


def load(path: str | os.PathLike, device: str | torch.device | None = None, *,
         norm_stats: Sequence[float] | NormStats | None = None, trust_pickle: bool = False,
         **overrides: Any) -> AudioEncoder:
    """Load an official or kikimimi checkpoint as an :class:`AudioEncoder`.

    Args:
        path: official weight file (M2D full/encoder-only/EVAR fine-tuned/2025 CLAP, BYOL-A state
            dict) or a kikimimi folder (``model.safetensors`` + ``config.json``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None``/``"auto"``.
        norm_stats: ``(mean, std)`` of the log-mel; needed for BYOL-A files (statistics are per dataset).
        trust_pickle: allow arbitrary pickled objects (only for files you trust).
        **overrides: ``size``, ``input_size``, ``patch_size``, ``sample_rate`` when the file name does not
            follow the official grammar.
    """
    if norm_stats is not None and not isinstance(norm_stats, NormStats):
        norm_stats = tuple(float(v) for v in norm_stats)
    bundle = load_encoder(path, norm_stats=norm_stats, trust_pickle=trust_pickle, **overrides)
    return AudioEncoder(bundle, device=device)


def random_init_like(model: AudioEncoder, seed: int = 0) -> AudioEncoder:
    """The same architecture, front end and normalisation as ``model`` with freshly initialised weights.

    The "random init" baseline of evaluation reports: a score only means something next to the same
    network before pre-training.
    """
    bundle = copy.copy(model.bundle)
    torch.manual_seed(seed)
    bundle.encoder = model.encoder.fresh_like()
    bundle.head = bundle.audio_proj = bundle.text_proj = None
    return AudioEncoder(bundle, device=model.device)


def norm_stats_from_files(paths: Sequence[str | os.PathLike], preset: str = "byola", *, crop_s: float = 0.95,
                          n_samples: int = 10000, seed: int = 0) -> NormStats:
    """Scalar log-mel mean/std of a set of audio files, as BYOL-A needs per dataset (EVAR: the training split).

    Each sample is a random ``crop_s``-second crop of a random file's log-mel computed with ``preset``;
    clips shorter than the crop are zero-padded at the end in the waveform first (as the evaluation crops
    are). Unreadable files are skipped with a warning naming them; if none is readable,
    :class:`~kikimimi.audio.decode.AudioDecodeError` of the first one is raised.
    """
    config = get_preset(preset)
    crop_samples = int(crop_s * config.sample_rate)
    mels, failures = [], []
    for p in paths:
        try:
            wave = load_audio(p, config.sample_rate)[0]
        except AudioDecodeError as exc:
            failures.append(exc)
            continue
        if len(wave) < crop_samples:
            wave = np.pad(wave, (0, crop_samples - len(wave)))
        mels.append(log_mel(wave, config))
    if failures:
        if not mels:
            raise failures[0]
        warnings.warn(f"normalisation statistics: skipped {len(failures)} unreadable file(s), e.g. {failures[0]}",
                      stacklevel=2)
    crop_frames = config.num_frames(crop_samples)
    return compute_norm_stats(mels, crop_frames=crop_frames, n_samples=n_samples, seed=seed)
