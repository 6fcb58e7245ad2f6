"""Batch embedding of many files: one output per input, resumable, failures listed, shardable.

Outputs (under ``out_dir``, mirroring the inputs' relative paths): clip level → ``<key>.npy`` ``[D]``;
frame level → ``<key>.npz`` with ``embeddings [T, D]`` and ``timestamps_ms [T]``. A ``manifest.csv``
(``file_name,source,frames,dim``) lists what exists and ``errors.csv`` what failed. Every output is
written atomically, so a killed job resumes where it stopped (existing outputs are skipped).

Sharding: with ``WORLD_SIZE`` > 1 in the environment (e.g. ``torchrun --nproc_per_node=N -m kikimimi
embed …``) rank ``r`` takes inputs ``r, r + N, r + 2N, …`` and writes ``manifest.rank<r>.csv`` /
``errors.rank<r>.csv``; no process group is needed.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.features.prep_cache import plan_outputs
from kikimimi.fileio import atomic_open, atomic_write_text
from kikimimi.inference.encoder import AudioEncoder


@dataclass
class EmbedJobResult:
    """Counts of an embedding job and the failed ``(source, reason)`` pairs."""

    out_dir: Path
    found: int = 0
    embedded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def shard_of_environment() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment variables; (0, 1) when absent."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _save(path: Path, level: str, emb: np.ndarray, ts: np.ndarray | None) -> None:
    """Write one output atomically, streaming straight into the temporary file (no extra copies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        if level == "clip":
            np.save(f, emb.astype(np.float32, copy=False))
        else:
            np.savez(f, embeddings=emb.astype(np.float32, copy=False), timestamps_ms=ts.astype(np.float64))


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _embed_batch(model: AudioEncoder, waves: list[np.ndarray], level: str,
                 batch_size: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Embeddings (and frame timestamps) of equal- or mixed-length waveforms, one tuple per wave."""
    if level == "clip":
        return [(e, None) for e in model.embed(waves, batch_size=batch_size)]
    embs, stamps = model.embed_frames(waves, batch_size=batch_size, stack=False)
    return list(zip(embs, stamps, strict=True))


def run_embed_job(model: AudioEncoder, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                  level: str = "clip", batch_size: int = 8, rank: int = 0, world_size: int = 1,
                  progress: bool = False) -> EmbedJobResult:
    """Embed every audio file in ``inputs`` (files, folders, CSV lists) into ``out_dir``."""
    if level not in ("clip", "frame"):
        raise ValueError(f"level must be 'clip' or 'frame', got {level!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".npy" if level == "clip" else ".npz"
    plan = [(src, str(Path(key).with_suffix(suffix).as_posix())) for src, key in plan_outputs(inputs)]
    plan = plan[rank::world_size]
    result = EmbedJobResult(out, found=len(plan))
    todo = [(src, key) for src, key in plan if not (out / key).exists()]
    result.skipped = len(plan) - len(todo)

    bar = None
    if progress:
        bar = tqdm(total=len(todo), desc="embed", unit="file")
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        waves, keys = [], []
        for src, key in batch:
            try:
                waves.append(load_audio(src, model.sample_rate)[0])
                keys.append(key)
            except AudioDecodeError as exc:
                result.failed.append((str(src), exc.reason))
        if waves:
            sources = {key: src for src, key in batch}
            try:
                outputs = _embed_batch(model, waves, level, batch_size)
            except (ValueError, RuntimeError):  # e.g. one clip too short for the encoder: go one by one
                outputs = []
                for wave, key in zip(waves, keys, strict=True):
                    try:
                        outputs.extend(_embed_batch(model, [wave], level, 1))
                    except (ValueError, RuntimeError) as exc:
                        outputs.append(None)
                        result.failed.append((str(sources[key]), f"cannot embed: {exc}"))
            for output, key in zip(outputs, keys, strict=True):
                if output is not None:
                    _save(out / key, level, *output)
                    result.embedded += 1
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()

    tag = "" if world_size == 1 else f".rank{rank}"
    rows = []
    for src, key in plan:
        path = out / key
        if path.exists():
            arr = np.load(path) if level == "clip" else np.load(path)["embeddings"]
            rows.append((key, str(src), 1 if arr.ndim == 1 else arr.shape[0], arr.shape[-1]))
    atomic_write_text(out / f"manifest{tag}.csv", _csv(("file_name", "source", "frames", "dim"), rows))
    atomic_write_text(out / f"errors{tag}.csv", _csv(("source", "error"), result.failed))
    return result
