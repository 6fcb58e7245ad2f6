"""Log-mel of long inputs with bounded memory: consecutive waveform blocks in, log-mel frames out.

:func:`iter_log_mel` yields the log-mel piece by piece (memory: one block plus ``n_fft`` samples of
context, whatever the duration); :func:`log_mel_from_blocks` and :func:`stream_log_mel` collect the pieces
into the whole-input log-mel. All give exactly :func:`kikimimi.features.frontend.log_mel` of the
concatenated waveform, including the reflect-padded edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from kikimimi.audio.decode import audio_info, stream_audio
from kikimimi.features.frontend import FrontendConfig, cpu_module, resolve_config

__all__ = ["iter_log_mel", "log_mel_from_blocks", "stream_log_mel"]


def _limited(blocks: Iterable[np.ndarray], max_samples: int | None) -> Iterator[np.ndarray]:
    seen = 0
    for block in blocks:
        if max_samples is not None:
            block = block[: max(0, max_samples - seen)]
        if block.size:
            seen += block.size
            yield block
        if max_samples is not None and seen >= max_samples:
            return


def iter_log_mel(blocks: Iterable[np.ndarray], config: FrontendConfig | str = "m2d-16k") -> Iterator[np.ndarray]:
    """Log-mel frames of a waveform given as consecutive mono blocks, yielded as they can be computed.

    Each yielded piece is ``[n_mels, k]`` float32 (k ≥ 1); their concatenation along time equals ``log_mel``
    of the concatenated blocks (``total_samples // hop + 1`` frames). At most one block plus ``n_fft``
    samples of context are held. The first block (or the first few, if tiny) must together hold
    ``n_fft // 2 + 1`` samples before the start padding can be formed; the end padding is built from the
    last ``n_fft // 2 + 1`` samples once the blocks run out.

    Raises:
        ValueError: an input too short for the front end (after the blocks ran out).
    """
    config = resolve_config(config)
    module = cpu_module(config)
    pad, hop, n_fft = config.pad, config.hop_length, config.n_fft
    buffer = np.zeros(0, dtype=np.float32)  # padded-signal samples not yet fully consumed
    last_real = np.zeros(0, dtype=np.float32)  # the latest pad + 1 waveform samples
    started = False
    total = 0
    emitted = 0

    def frames() -> np.ndarray | None:
        # Every frame that lies entirely inside the buffer; the consumed samples are dropped.
        nonlocal buffer
        if buffer.size < n_fft:
            return None
        n_frames = 1 + (buffer.size - n_fft) // hop
        used = (n_frames - 1) * hop + n_fft
        with torch.inference_mode():
            out = module.frames_from_padded(torch.from_numpy(buffer[:used]).unsqueeze(0))[0].numpy()
        buffer = buffer[n_frames * hop :]
        return out

    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        total += block.size
        buffer = np.concatenate([buffer, block])
        last_real = np.concatenate([last_real, block[-(pad + 1) :]])[-(pad + 1) :]
        if not started:
            if buffer.size < pad + 1:
                continue
            buffer = np.concatenate([buffer[pad:0:-1], buffer])  # start padding
            started = True
        out = frames()
        if out is not None:
            emitted += out.shape[1]
            yield out

    module.check_length(total)
    # End padding: the `pad` samples before the last one, reversed.
    buffer = np.concatenate([buffer, last_real[-2::-1]])
    out = frames()
    if out is not None:
        emitted += out.shape[1]
        yield out
    expected = config.num_frames(total)
    if emitted != expected:  # pragma: no cover - internal consistency guard
        raise RuntimeError(f"streamed log-mel has {emitted} frames, expected {expected}")


def log_mel_from_blocks(
    blocks: Iterable[np.ndarray],
    config: FrontendConfig | str = "m2d-16k",
    *,
    expected_samples: int | None = None,
) -> np.ndarray:
    """Log-mel of a waveform given as consecutive mono blocks, equal to ``log_mel`` of their concatenation.

    The pieces of :func:`iter_log_mel` collected into one array. ``expected_samples`` (a hint, e.g. from the
    file header) lets the result be allocated once instead of grown.

    Returns:
        ``[n_mels, total_samples // hop + 1]`` float32.
    """
    config = resolve_config(config)
    capacity = config.num_frames(expected_samples) if expected_samples else 1024
    result = np.empty((config.n_mels, capacity), dtype=np.float32)
    filled = 0
    for out in iter_log_mel(blocks, config):
        n_frames = out.shape[1]
        if filled + n_frames > result.shape[1]:  # grow geometrically (only when the hint was low)
            grown = np.empty((config.n_mels, max(2 * result.shape[1], filled + n_frames)), np.float32)
            grown[:, :filled] = result[:, :filled]
            result = grown
        result[:, filled : filled + n_frames] = out
        filled += n_frames
    return result if filled == result.shape[1] else result[:, :filled].copy()


def stream_log_mel(
    path: str | Path,
    config: FrontendConfig | str = "m2d-16k",
    block_s: float = 60.0,
    *,
    limit_s: float | None = None,
) -> np.ndarray:
    """Log-mel of a (long) audio file with bounded memory, equal to the whole-file :func:`log_mel`.

    The file is read with :func:`kikimimi.audio.decode.stream_audio` (mono, resampled to ``config.sample_rate``)
    in blocks of ``block_s`` seconds; each block is processed with ``n_fft // 2`` samples of context on
    either side so frames line up with the whole-file result, including the reflect-padded edges.

    Args:
        path: audio file.
        config: front-end config or preset name.
        block_s: block length in seconds (memory ~ block samples x a few float32 copies).
        limit_s: if given, only the first ``limit_s`` seconds are used (same as truncating the waveform).

    Returns:
        ``[n_mels, frames]`` float32 with ``frames = samples // hop + 1``.
    """
    config = resolve_config(config)
    if block_s <= 0:
        raise ValueError(f"block_s must be > 0 seconds, got {block_s}")
    block_samples = max(int(round(block_s * config.sample_rate)), config.n_fft)
    max_samples = None if limit_s is None else int(round(limit_s * config.sample_rate))
    info = audio_info(path)
    hint = int(round(info.frames * config.sample_rate / info.sample_rate))
    if max_samples is not None:
        hint = min(hint, max_samples)
    blocks = stream_audio(path, block_samples, sample_rate=config.sample_rate)
    try:
        return log_mel_from_blocks(_limited(blocks, max_samples), config, expected_samples=hint)
    except ValueError as exc:
        raise ValueError(f"'{path}': {exc}") from exc
