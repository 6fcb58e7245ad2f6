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
import dataclasses
import functools
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kikimimi.audio.decode import AudioDecodeError, load_audio, resample
from kikimimi.checkpoints import EncoderBundle, load_encoder, resolve_model_source
from kikimimi.device import resolve_device
from kikimimi.features.frontend import LogMelSpectrogram, empty_mel_bins, get_preset, log_mel
from kikimimi.features.normstats import NormStats, compute_norm_stats
from kikimimi.inference.cpu_paths import (
    AUTO,
    PathCache,
    PathChoice,
    choose_cpu_path,
    default_precision,
    prepare_path,
    record_nonfinite,
)
from kikimimi.inference.onnx_runtime import is_onnx_path, load_onnx_bundle
from kikimimi.inference.precision import Bf16Autocast, apply_precision, check_precision
from kikimimi.models.encoder import FrameEncoder

_log = logging.getLogger(__name__)

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Any]


def is_single_input(audio: Any) -> bool:
    """Whether ``audio`` is one clip — a path or a 1-D waveform — rather than a list of clips or a ``[B, samples]``
    array: the "one input in, one output out" rule of ``embed``, ``encode_audio`` and ``caption`` (docs/usage.md)."""
    if isinstance(audio, (str, os.PathLike)):
        return True
    return isinstance(audio, (np.ndarray, torch.Tensor)) and audio.ndim == 1


class AudioEncoder:
    """A loaded encoder ready to embed audio (eval mode, no gradients).

    Attributes:
        bundle: the underlying :class:`~kikimimi.checkpoints.EncoderBundle`.
        encoder: the network, a :class:`~kikimimi.models.encoder.FrameEncoder` (on ``device``, eval mode).
        family: ``"m2d"`` or ``"byola"`` (the checkpoint's label, for display).
        sample_rate: model rate in Hz; other rates are resampled with soxr.
        embedding_dim: size of clip embeddings (M2D: Fg·D, 3840 for ViT-Base 16x16; BYOL-A: d or 3072).
        frame_embedding_dim: size of frame embeddings (same as ``embedding_dim``).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (:mod:`kikimimi.inference.precision`).
    """

    def __init__(self, bundle: EncoderBundle, device: str | torch.device | None = None,
                 precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        encoder = apply_precision(bundle.encoder.to(self.device).eval(), self.precision, self.device)
        if self.precision == "int8":  # keep only the quantised copy
            bundle = dataclasses.replace(bundle, encoder=encoder)
        self.bundle = bundle.eval()
        self.family = bundle.family
        self.encoder: FrameEncoder = encoder.eval()
        self.frontend = LogMelSpectrogram(bundle.frontend).to(self.device)
        self.norm_stats: NormStats = bundle.norm_stats
        self._warned_rates: set[int] = set()
        self.sample_rate = int(bundle.frontend.sample_rate)
        self.embedding_dim = int(self.encoder.embedding_dim)
        self.frame_embedding_dim = self.embedding_dim

    def __repr__(self) -> str:
        return (f"AudioEncoder(family={self.family!r}, sample_rate={self.sample_rate}, "
                f"embedding_dim={self.embedding_dim}, norm_stats=({self.norm_stats.mean:.4f}, "
                f"{self.norm_stats.std:.4f}), device={self.device}, precision={self.precision!r})")

    # ------------------------------------------------------------------ inputs
    def waveforms(self, audio: AudioInput, sample_rate: int | None = None) -> list[np.ndarray]:
        """Any accepted input as a list of 1-D float32 waveforms ``[samples]`` at the model rate.

        ``audio``: a path, a list of paths, a 1-D waveform, a list of 1-D waveforms of any lengths, or a
        ``[B, samples]`` array/tensor (one row per clip). Files are decoded and resampled to the model rate;
        waveforms are taken to be at ``sample_rate`` Hz and resampled when it differs (without ``sample_rate``
        the model rate is assumed, with a warning). Integer PCM arrays (int16, int32, uint8) are scaled to
        full scale ±1; clips shorter than one STFT window are zero-padded to it.

        Raises:
            ValueError: a waveform that is not 1-D, or one with NaN or infinite samples.
            kikimimi.audio.decode.AudioDecodeError: an unreadable file.
        """
        if isinstance(audio, (str, os.PathLike)):
            audio = [audio]
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        if isinstance(audio, np.ndarray):
            audio = [audio] if audio.ndim == 1 else list(audio)
        waves = []
        warned_rate = False
        for i, item in enumerate(audio):
            if isinstance(item, (str, os.PathLike)):
                wave, rate = load_audio(item)
                if rate != self.sample_rate:
                    self._warn_low_rate(item, rate)
                    wave = resample(wave, rate, self.sample_rate)
            else:
                wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
                if wave.ndim != 1:
                    raise ValueError(f"expected 1-D waveforms, got shape {wave.shape}")
                wave = _as_float_pcm(wave)
                if not np.isfinite(wave).all():
                    raise ValueError(f"waveform {i} has NaN or infinite samples; clean or drop it before embedding")
                if sample_rate is None and not warned_rate:
                    warnings.warn(f"a waveform was given without sample_rate; assuming the model rate "
                                  f"{self.sample_rate} Hz (pass sample_rate=… to resample)", stacklevel=3)
                    warned_rate = True
                if sample_rate is not None and sample_rate != self.sample_rate:
                    wave = resample(wave, sample_rate, self.sample_rate)
            if wave.size < self._min_samples:  # shorter than the front end / encoder accept: pad with silence
                wave = np.pad(wave, (0, self._min_samples - wave.size))
            waves.append(wave)
        return waves

    def _warn_low_rate(self, path: str | os.PathLike, rate: int) -> None:
        """Warn (once per rate) when a file's rate leaves more than a third of the mel bins without content."""
        empty = empty_mel_bins(self.frontend.config, rate)
        if empty * 3 > self.frontend.config.n_mels and rate not in self._warned_rates:
            self._warned_rates.add(rate)
            warnings.warn(f"'{path}' is sampled at {rate} Hz: {empty} of the model's {self.frontend.config.n_mels} "
                          f"mel bins lie above its {rate / 2:.0f} Hz limit and stay empty (resampling to "
                          f"{self.sample_rate} Hz cannot add the missing band); expect weaker features", stacklevel=4)

    @property
    def _min_samples(self) -> int:
        """Shortest waveform that gives the front end one STFT window and the encoder enough frames (BYOL-A's
        conv stack needs ``time_downsample`` frames)."""
        config = self.frontend.config
        min_frames = int(getattr(self.encoder, "time_downsample", 1))
        return max(config.min_samples, (min_frames - 1) * config.hop_length + 1)

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
        """Clip embeddings (float32): the encoder's pooling of each clip's frame features.

        One input in, one output out: a path or a 1-D waveform → ``[embedding_dim]``; a list of paths / 1-D
        waveforms (any lengths) or a ``[B, samples]`` array/tensor → ``[B, embedding_dim]``. Waveforms are at
        ``sample_rate`` (default: the model rate).
        """
        frames = self._encode(self.waveforms(audio, sample_rate), batch_size)
        out = torch.stack([self.encoder.pool(f) for f in frames]).numpy()
        return out[0] if is_single_input(audio) else out

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


def _as_float_pcm(wave: np.ndarray) -> np.ndarray:
    """float32 samples; integer PCM (int8/16/32, uint8) scaled to full scale ±1 as decoders do."""
    if np.issubdtype(wave.dtype, np.integer):
        info = np.iinfo(wave.dtype)
        if info.min == 0:  # unsigned PCM (8-bit WAV) is offset by half its range
            return ((wave.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)).astype(np.float32)
        return (wave.astype(np.float64) / -float(info.min)).astype(np.float32)
    if wave.dtype == np.bool_:
        raise ValueError("expected a waveform of numbers, got a boolean array")
    return wave.astype(np.float32, copy=False)


def load(path: str | os.PathLike, device: str | torch.device | None = None, *,
         norm_stats: Sequence[float] | NormStats | None = None, trust_pickle: bool = False,
         accept_licence: bool = False, precision: str | None = None, **overrides: Any) -> AudioEncoder:
    """Load an official or kikimimi checkpoint, or a registered model by name, as an :class:`AudioEncoder`.

    Args:
        path: official weight file (M2D full/encoder-only/EVAR fine-tuned/2025 CLAP, BYOL-A state
            dict), a kikimimi folder (``model.safetensors`` + ``config.json``), or a registered name such as
            ``"m2d-vit-base-mr7"`` (downloaded, verified and cached on first use; ``kikimimi models list``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None``/``"auto"``.
        norm_stats: ``(mean, std)`` of the log-mel; needed for BYOL-A files (statistics are per dataset).
        trust_pickle: allow arbitrary pickled objects (only for files you trust).
        accept_licence: accept the licence of an official file on its first download by name (also
            ``KIKIMIMI_ACCEPT_LICENCE=1``).
        precision: ``"auto"`` (the default, unless ``$KIKIMIMI_PRECISION`` names another): on a CPU, the fastest
            path measured to keep cosine >= 0.999 to float32 for this model on this CPU (measured once, cached;
            :mod:`kikimimi.inference.cpu_paths`; ``model.precision_choice`` says which and why), float32 elsewhere;
            ``"fp32"`` (exact), ``"bf16"`` (autocast; fast on GPUs and CPUs with native bfloat16) or ``"int8"``
            (dynamic quantisation of the Linear layers, CPU); see :mod:`kikimimi.inference.precision`. A ``.onnx``
            file (``kikimimi export onnx``) runs on ONNX Runtime (:mod:`kikimimi.inference.onnx_runtime`;
            ``"int8"`` quantises it at load unless the file is already int8; ``"auto"`` runs it as it is).
        **overrides: ``size``, ``input_size``, ``patch_size``, ``sample_rate`` when the file name does not
            follow the official grammar.
    """
    if norm_stats is not None and not isinstance(norm_stats, NormStats):
        norm_stats = tuple(float(v) for v in norm_stats)
    precision = default_precision() if precision is None else str(precision).lower()
    if is_onnx_path(path):  # ONNX Runtime on the CPU; the file's metadata holds front end and statistics
        onnx_bundle = load_onnx_bundle(path, precision="fp32" if precision == AUTO else precision,
                                       norm_stats=norm_stats)
        return AudioEncoder(onnx_bundle, device="cpu", precision=onnx_bundle.config["precision"])
    bundle = load_encoder(path, norm_stats=norm_stats, trust_pickle=trust_pickle, accept_licence=accept_licence,
                          **overrides)
    if precision != AUTO:
        return AudioEncoder(bundle, device=device, precision=precision)
    return _load_auto(bundle, path, device, accept_licence)


def _load_auto(bundle: EncoderBundle, path: str | os.PathLike, device: str | torch.device | None,
               accept_licence: bool = False) -> AudioEncoder:
    """``precision="auto"``: the path :func:`~kikimimi.inference.cpu_paths.choose_cpu_path` picks (logged at INFO,
    shown by ``kikimimi -v``), fp32 when the chosen path cannot be prepared now."""
    device = resolve_device(device)
    try:
        source = resolve_model_source(path, accept_licence=accept_licence, progress=False)  # fetched already
    except Exception:  # noqa: BLE001 - loaded already; without a file the choice is fp32
        source = None
    choice = choose_cpu_path(bundle, source, lambda b, p: AudioEncoder(b, device="cpu", precision=p), device=device)
    try:
        onnx_dir = PathCache().artifacts(choice.key) if choice.key else None
        prepared, precision = prepare_path(bundle, choice.path, onnx_dir)
    except Exception as exc:  # noqa: BLE001 - e.g. the onnx extra removed since the choice was cached
        _log.warning("precision auto: %s could not be prepared (%s); running fp32", choice.path, exc)
        choice = PathChoice("fp32", f"{choice.path} could not be prepared ({type(exc).__name__})")
        prepared, precision = bundle, "fp32"
    model = AudioEncoder(prepared, device=device, precision=precision)
    model.precision_choice = choice
    if precision == "bf16" and choice.key and isinstance(model.encoder, Bf16Autocast):  # a NaN batch: not bf16 again
        model.encoder.on_nonfinite = functools.partial(record_nonfinite, choice.key, choice.path)
    _log.info("%s", choice.line())
    return model


def random_init_like(model: AudioEncoder, seed: int = 0) -> AudioEncoder:
    """The same architecture, front end and normalisation as ``model`` with freshly initialised weights.

    The "random init" baseline of evaluation reports: a score only means something next to the same
    network before pre-training.
    """
    bundle = copy.copy(model.bundle)
    torch.manual_seed(seed)
    bundle.encoder = model.encoder.fresh_like()
    bundle.head = bundle.audio_proj = bundle.text_proj = None
    return AudioEncoder(bundle, device=model.device, precision=model.precision)


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
