"""The user-facing API: ``model = kikimimi.load(path)``, then ``model.embed(...)`` / ``model.embed_frames(...)``.

M2D follows the official runtime exactly: waveform at the model rate → log-mel → (x − mean) / std →
:meth:`AudioViT.encode_lms` (training-length chunks, zero padding in the normalised domain) → frame
features ``[T', Fg·D]``; the clip embedding is their mean over time and frame ``i`` is stamped
``i · duration_s / T' · 1000`` ms. BYOL-A follows the EVAR path: BYOL-A log-mel → normalise with the
dataset statistics → frame encoder → max + mean pooling over the whole clip; frames are stamped at
their centres.

Every clip is encoded on its own length (clips of equal length are batched together), so the result
for a clip never depends on what else is in the batch.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kikimimi.audio.decode import load_audio, resample
from kikimimi.checkpoints import EncoderBundle, load_encoder
from kikimimi.device import resolve_device
from kikimimi.features.frontend import LogMelSpectrogram
from kikimimi.features.normstats import NormStats

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Any]


def map_by_length(waves: Sequence[np.ndarray], batch_size: int,
                  fn: Callable[[list[np.ndarray]], Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Apply ``fn`` to batches of equal-length waveforms (at most ``batch_size``) and return its per-clip
    outputs in input order. Clips are never padded to share a batch, so no result depends on the batch."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(waves):
        by_length[len(w)].append(i)
    out: list[torch.Tensor | None] = [None] * len(waves)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            for i, result in zip(chunk, fn([waves[i] for i in chunk]), strict=True):
                out[i] = result
    return out  # type: ignore[return-value]


class AudioEncoder:
    """A loaded encoder ready to embed audio (eval mode, no gradients).

    Attributes:
        bundle: the underlying :class:`~kikimimi.checkpoints.EncoderBundle`.
        family: ``"m2d"`` or ``"byola"``.
        sample_rate: model rate in Hz; other rates are resampled with soxr.
        embedding_dim: size of clip embeddings (M2D: Fg·D, 3840 for ViT-Base 16x16; BYOL-A: d or 3072).
        frame_embedding_dim: size of frame embeddings (same as ``embedding_dim``).
    """

    def __init__(self, bundle: EncoderBundle, device: str | torch.device | None = None) -> None:
        self.bundle = bundle.eval()
        self.device = resolve_device(device)
        self.family = bundle.family
        self.encoder = bundle.encoder.to(self.device).eval()
        self.frontend = LogMelSpectrogram(bundle.frontend).to(self.device)
        self.norm_stats: NormStats = bundle.norm_stats
        self.sample_rate = int(bundle.frontend.sample_rate)
        if self.family == "m2d":
            self.embedding_dim = int(self.encoder.frame_dim)
        else:
            self.embedding_dim = int(self.encoder.embedding_dim)
        self.frame_embedding_dim = self.embedding_dim

    def __repr__(self) -> str:
        return (f"AudioEncoder(family={self.family!r}, sample_rate={self.sample_rate}, "
                f"embedding_dim={self.embedding_dim}, norm_stats=({self.norm_stats.mean:.4f}, "
                f"{self.norm_stats.std:.4f}), device={self.device})")

    # ------------------------------------------------------------------ inputs
    def _waveforms(self, audio: AudioInput, sample_rate: int | None) -> list[np.ndarray]:
        """Normalise any accepted input to a list of 1-D float32 arrays at the model rate."""
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
    @torch.inference_mode()
    def _frames_same_length(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Equal-length waveforms ``[B, samples]`` → frame features ``[B, T', D]`` (on CPU, float32)."""
        x = torch.from_numpy(np.stack(waves)).to(self.device)
        lms = self.norm_stats.normalize(self.frontend(x))
        if self.family == "m2d":
            frames = self.encoder.encode_lms(lms)
        else:
            frames = self.encoder.forward_frames(lms.unsqueeze(1))
        return frames.float().cpu()

    def _encode(self, waves: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
        """Frame features ``[T'_i, D]`` for every waveform (CPU float32)."""
        if self.family == "m2d":
            return self._encode_m2d_chunks(waves, batch_size)
        return map_by_length(waves, batch_size, self._frames_same_length)

    @torch.inference_mode()
    def _encode_m2d_chunks(self, waves: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
        """The official chunking rule, with chunks of equal width batched *across* clips.

        Each clip's log-mel is normalised, right-padded with zeros to whole patches and cut into
        training-length chunks exactly as :meth:`AudioViT.encode_lms`; chunks are then grouped by
        width so that clips of any lengths share batches without padding changing any result.
        """
        unit = self.encoder.config.input_size[1]
        p = self.encoder.config.patch_size[1]
        pieces: dict[int, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        n_chunks = []
        for clip, wave in enumerate(waves):
            lms = self.frontend(torch.from_numpy(np.ascontiguousarray(wave)).to(self.device))[0]
            lms.sub_(self.norm_stats.mean).div_(self.norm_stats.std)
            pad = (p - (lms.shape[-1] % unit % p)) % p
            if pad:
                lms = torch.nn.functional.pad(lms, (0, pad))
            count = 0
            for start in range(0, lms.shape[-1], unit):
                chunk = lms[:, start:start + unit]
                whole = chunk.shape[-1] // p * p
                if whole:
                    pieces[whole].append((clip, count, chunk[:, :whole]))
                    count += 1
            n_chunks.append(count)
        results: list[list[torch.Tensor | None]] = [[None] * n for n in n_chunks]
        for group in pieces.values():
            for start in range(0, len(group), batch_size):
                part = group[start:start + batch_size]
                x = torch.stack([c for _, _, c in part]).unsqueeze(1)
                frames = self.encoder._to_frames(self.encoder.forward_tokens(x)).float().cpu()
                for (clip, index, _), f in zip(part, frames, strict=True):
                    results[clip][index] = f
        return [torch.cat(r, dim=0) for r in results]  # type: ignore[arg-type]

    def timestamps_ms(self, n_frames: int, n_samples: int) -> np.ndarray:
        """Timestamps (ms) of ``n_frames`` frame features of a clip of ``n_samples`` samples."""
        if self.family == "m2d":
            return self.encoder.timestamps_ms(n_frames, n_samples / self.sample_rate).numpy()
        hop_ms = 1000.0 * self.bundle.frontend.hop_length / self.sample_rate
        return self.encoder.frame_centres_ms(n_frames, hop_ms).numpy()

    # ------------------------------------------------------------------ public
    def embed(self, audio: AudioInput, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray:
        """Clip embeddings ``[B, embedding_dim]`` (float32).

        ``audio``: a path, a list of paths, a 1-D waveform, a list of 1-D waveforms of any lengths, or a
        ``[B, samples]`` array/tensor. Waveforms are at ``sample_rate`` (default: the model rate).
        """
        waves = self._waveforms(audio, sample_rate)
        frames = self._encode(waves, batch_size)
        if self.family == "m2d":
            clips = [f.mean(dim=0) for f in frames]
        else:
            clips = [f.max(dim=0).values + f.mean(dim=0) for f in frames]
        return torch.stack(clips).numpy()

    def embed_frames(self, audio: AudioInput, sample_rate: int | None = None, batch_size: int = 8,
                     stack: bool = True):
        """Frame embeddings and their timestamps.

        Returns ``(embeddings, timestamps_ms)``: arrays ``[B, T, D]`` and ``[B, T]`` when every clip gives
        the same number of frames (and ``stack``), else lists of ``[T_i, D]`` and ``[T_i]`` arrays.
        """
        waves = self._waveforms(audio, sample_rate)
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
    import copy

    from kikimimi.models.byola import AudioNTT2020, AudioNTT2022

    bundle = copy.copy(model.bundle)
    torch.manual_seed(seed)
    if bundle.family == "m2d":
        from kikimimi.models.vit import AudioViT

        fresh = AudioViT(model.encoder.config)
        fresh.pos_embed.data.copy_(model.encoder.pos_embed.data.cpu())  # fixed, not learnt
    else:
        cls = AudioNTT2022 if isinstance(model.encoder, AudioNTT2022) else AudioNTT2020
        fresh = cls(n_mels=model.encoder.n_mels, d=model.encoder.d)
    bundle.encoder = fresh
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
    import warnings

    from kikimimi.audio.decode import AudioDecodeError
    from kikimimi.features.frontend import get_preset, log_mel
    from kikimimi.features.normstats import compute_norm_stats

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
