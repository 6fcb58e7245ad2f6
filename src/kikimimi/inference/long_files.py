"""Frame-level embedding of long files with bounded memory: chunks in, frames written out as they come.

Memory does not grow with the duration: the file is decoded in blocks (:func:`kikimimi.audio.decode.stream_audio`),
its log-mel computed piece by piece (:func:`kikimimi.features.streaming.iter_log_mel`), normalised, cut into
the encoder's chunks and encoded ``batch_size`` chunks at a time; the frame features go to a temporary file
on disk and are finally copied into the same ``.npz`` layout as the in-memory path
(``embeddings [T', D]`` float32, ``timestamps_ms [T']`` float64), so every reader keeps working.

Why this equals the whole-file result: an encoder with a chunk length (M2D) cuts the log-mel every
``chunk_frames`` frames and encodes each chunk on its own (docs/reference.md §4.1); only the last chunk is
padded. Cutting the stream at multiples of ``chunk_frames`` and handing each span to the encoder's own
``split_chunks`` therefore gives the same chunks as ``split_chunks`` of the whole log-mel. Encoders that take
the whole clip at once (BYOL-A, ``chunk_frames is None``) cannot be streamed this way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from kikimimi.audio.decode import stream_audio
from kikimimi.features.streaming import iter_log_mel
from kikimimi.fileio import atomic_open
from kikimimi.inference.encoder import AudioEncoder
from kikimimi.models.vit import AudioViT

__all__ = ["can_stream", "iter_frame_features", "write_frame_embeddings_streamed"]

_COPY_BYTES = 8 << 20


def can_stream(model: AudioEncoder) -> bool:
    """Whether ``model``'s encoder cuts inputs into fixed chunks (M2D), so long files can be streamed."""
    return model.encoder.chunk_frames is not None


def can_stream_clip(model: AudioEncoder) -> bool:
    """Whether ``model``'s clip embeddings can be computed streamed (:func:`clip_embedding_streamed`): a chunked
    encoder that pools a clip by the mean of its frames (the M2D ViT)."""
    return can_stream(model) and isinstance(model.encoder, AudioViT)


def _counted(blocks: Iterable[np.ndarray], counter: list[int]) -> Iterator[np.ndarray]:
    for block in blocks:
        counter[0] += block.size
        yield block


@torch.inference_mode()
def _encode_span(model: AudioEncoder, span: np.ndarray, batch_size: int) -> np.ndarray:
    """Frame features ``[T', D]`` of a normalised log-mel span ``[n_mels, T]`` (the encoder's chunking)."""
    chunks = model.encoder.split_chunks(torch.from_numpy(span).to(model.device))
    out = []
    for start in range(0, len(chunks), batch_size):
        part = chunks[start:start + batch_size]
        widths = {c.shape[-1] for c in part}
        if len(widths) == 1:
            frames = model.encoder.encode_chunks(torch.stack(part))
            out.extend(frames.float().cpu())
        else:  # the short last chunk: on its own
            out.extend(model.encoder.encode_chunks(c[None])[0].float().cpu() for c in part)
    return torch.cat(out, dim=0).numpy()


def iter_frame_features(model: AudioEncoder, path: str | os.PathLike, *, block_s: float = 60.0,
                        batch_size: int = 8, samples_seen: list[int] | None = None) -> Iterator[np.ndarray]:
    """Frame features of a long file, ``[n_i, D]`` float32 pieces in time order.

    Their concatenation equals ``model.embed_frames(path)[0][0]``. ``samples_seen`` (a one-element list), if
    given, holds the number of waveform samples read so far at the model rate (the total once exhausted).

    Raises:
        ValueError: the encoder takes whole clips (BYOL-A), or the file is too short for the front end.
        kikimimi.audio.decode.AudioDecodeError: an unreadable file.
    """
    if not can_stream(model):
        raise ValueError(f"'{path}': the {model.family} encoder takes whole clips; it cannot be streamed")
    counter = samples_seen if samples_seen is not None else [0]
    counter[0] = 0
    unit = int(model.encoder.chunk_frames)
    group = unit * max(1, batch_size)
    mean, std = model.norm_stats.mean, model.norm_stats.std
    block_samples = max(1, int(round(block_s * model.sample_rate)))
    blocks = _counted(stream_audio(path, block_samples, sample_rate=model.sample_rate), counter)
    pending = np.zeros((model.bundle.frontend.n_mels, 0), dtype=np.float32)
    try:
        for piece in iter_log_mel(blocks, model.bundle.frontend):
            piece -= mean
            piece /= std
            pending = np.concatenate([pending, piece], axis=1)
            while pending.shape[1] >= group:  # whole chunks only; the stream may go on
                yield _encode_span(model, np.ascontiguousarray(pending[:, :group]), batch_size)
                pending = pending[:, group:]
    except ValueError as exc:
        raise ValueError(f"'{path}': {exc}") from exc
    if pending.shape[1]:  # the tail: whole chunks and the padded last one
        yield _encode_span(model, np.ascontiguousarray(pending), batch_size)


def _write_npy_header(fh, shape: tuple[int, ...], dtype: np.dtype) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(fh, header)


def write_frame_embeddings_streamed(model: AudioEncoder, path: str | os.PathLike, out_path: str | os.PathLike, *,
                                    block_s: float = 60.0, batch_size: int = 8) -> tuple[int, int]:
    """Embed ``path`` at frame level into ``out_path`` (``.npz``: ``embeddings``, ``timestamps_ms``), streaming.

    The frames are spooled to a temporary file beside ``out_path`` while they are computed, then copied into
    the ``.npz`` (written atomically: a killed job leaves no partial output). Returns ``(frames, dim)``.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = [0]
    n_frames, dim = 0, int(model.embedding_dim)
    with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".frames") as spool:
        for frames in iter_frame_features(model, path, block_s=block_s, batch_size=batch_size, samples_seen=seen):
            spool.write(np.ascontiguousarray(frames, dtype=np.float32).tobytes())
            n_frames += frames.shape[0]
        stamps = model.timestamps_ms(n_frames, seen[0]).astype(np.float64)
        spool.seek(0)
        with atomic_open(out, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("embeddings.npy", "w", force_zip64=True) as member:
                _write_npy_header(member, (n_frames, dim), np.float32)
                shutil.copyfileobj(spool, member, _COPY_BYTES)
            with zf.open("timestamps_ms.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, stamps)
    return n_frames, dim


def clip_embedding_streamed(model: AudioEncoder, path: str | os.PathLike, *, block_s: float = 60.0,
                            batch_size: int = 8) -> np.ndarray:
    """The clip embedding ``[D]`` float32 of a long file, streamed: the running mean of its frame features.

    Equals ``model.embed(path)`` (the M2D ViT pools a clip by the mean of its frames) up to float rounding (the sum
    is kept in float64), with memory bounded by one block instead of the whole file's waveform and frames (a
    3-hour file embedded in memory peaked at 1.8 GB).

    Raises:
        ValueError: the encoder takes whole clips or does not pool by the mean; the file is too short.
        kikimimi.audio.decode.AudioDecodeError: an unreadable file.
    """
    if not can_stream_clip(model):
        raise ValueError(f"'{path}': only mean-pooled chunked encoders (M2D) are embedded streamed")
    total: np.ndarray | None = None
    count = 0
    for piece in iter_frame_features(model, path, block_s=block_s, batch_size=batch_size):
        part = piece.astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
        count += piece.shape[0]
    if total is None or count == 0:
        raise ValueError(f"'{path}': no frames")
    return (total / count).astype(np.float32)
