"""Batch embedding of many files: one output per input, resumable, failures listed, shardable.

Outputs (under ``out_dir``, mirroring the inputs' relative paths): clip level → ``<key>.npy`` ``[D]``;
frame level → ``<key>.npz`` with ``embeddings [T, D]`` and ``timestamps_ms [T]``. A ``manifest.csv``
(``file_name,source,frames,dim``) lists what exists and ``errors.csv`` what failed. Every output is
written atomically, so a killed job resumes where it stopped (existing outputs are skipped).

Sharding: with ``WORLD_SIZE`` > 1 in the environment (e.g. ``torchrun --nproc_per_node=N -m kikimimi
embed …``) rank ``r`` takes inputs ``r, r + N, r + 2N, …`` and writes ``manifest.rank<r>.csv`` /
``errors.rank<r>.csv``; no process group is needed.

What wrote the outputs is recorded in ``embed.json`` (model source file, its size and modification time,
normalisation statistics, precision, level, dimension); a later job into the same folder with other settings is
refused (:class:`EmbedOutputMismatch`) unless ``overwrite=True``, which recomputes every output. A job holds
the folder's lock (``.kikimimi-embed.lock``, one per rank under torchrun) so a second process stops at once.
When every rank of a sharded job has written its ``manifest.rank<r>.csv``, the last one to finish also writes the
merged ``manifest.csv`` / ``errors.csv``.

Long files at frame level (longer than ``stream_over_s``, with a chunked encoder such as M2D) are streamed
one at a time (:mod:`kikimimi.inference.long_files`): memory stays bounded whatever the duration, and the
output has the same layout. The manifest reads only the array headers of the outputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio
from kikimimi.features.prep_cache import plan_outputs
from kikimimi.fileio import atomic_open, atomic_write_json, atomic_write_text, output_lock
from kikimimi.inference.encoder import AudioEncoder
from kikimimi.inference.long_files import can_stream, write_frame_embeddings_streamed


@dataclass
class EmbedJobResult:
    """Counts of an embedding job and the failed ``(source, reason)`` pairs."""

    out_dir: Path
    found: int = 0
    embedded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


#: what wrote the outputs of an embedding folder
RECORD_NAME = "embed.json"


class EmbedOutputMismatch(ValueError):
    """The output folder holds embeddings written by another model or with other settings."""


def job_record(model: AudioEncoder, level: str) -> dict[str, object]:
    """The settings that decide the outputs: model source (path, size, mtime), statistics, precision, level."""
    source = str(model.bundle.config.get("source") or "")
    stat = os.stat(source) if source and os.path.exists(source) else None
    return {"model": os.path.abspath(source) if source else repr(model), "model_bytes": stat.st_size if stat else None,
            "model_mtime_ns": stat.st_mtime_ns if stat else None, "family": model.family,
            "norm_stats": [float(model.norm_stats.mean), float(model.norm_stats.std)],
            "precision": getattr(model, "precision", "fp32"), "level": level,
            "sample_rate": int(model.sample_rate), "dim": int(model.embedding_dim)}


def _check_record(out: Path, record: dict[str, object], overwrite: bool) -> bool:
    """Whether existing outputs may be kept (``False``: recompute all); raises on a mismatch without overwrite."""
    path = out / RECORD_NAME
    if not path.exists():
        return not overwrite
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    if old == record:
        return not overwrite
    if overwrite:
        return False
    changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
    raise EmbedOutputMismatch(
        f"'{out}' holds embeddings written with other settings ({', '.join(changed)} differ: e.g. "
        f"{changed[0]} {old.get(changed[0])!r} there, {record.get(changed[0])!r} now); choose another output "
        "folder or pass --overwrite to recompute every file")


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


def _npy_shape(fh) -> tuple[int, ...]:
    """Shape from an ``.npy`` stream's header (the data is not read)."""
    version = np.lib.format.read_magic(fh)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:  # pragma: no cover - version 3 headers (non-ASCII field names) are not written here
        raise ValueError(f"unsupported .npy header version {version}")
    return read(fh)[0]


def output_shape(path: Path, level: str) -> tuple[int, ...]:
    """Shape of an output's embeddings without loading them: clip ``(D,)``, frame ``(T, D)``."""
    if level == "clip":
        with open(path, "rb") as fh:
            return _npy_shape(fh)
    with zipfile.ZipFile(path) as zf, zf.open("embeddings.npy") as fh:
        return _npy_shape(fh)


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
        return [(e, None) for e in model.embed(waves, model.sample_rate, batch_size=batch_size)]
    embs, stamps = model.embed_frames(waves, model.sample_rate, batch_size=batch_size, stack=False)
    return list(zip(embs, stamps, strict=True))


def run_embed_job(model: AudioEncoder, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                  level: str = "clip", batch_size: int = 8, rank: int = 0, world_size: int = 1,
                  progress: bool = False, stream_over_s: float = 300.0, overwrite: bool = False) -> EmbedJobResult:
    """Embed every audio file in ``inputs`` (files, folders, CSV lists) into ``out_dir``.

    At frame level, files longer than ``stream_over_s`` seconds are streamed (bounded memory) when the
    encoder allows it (:func:`kikimimi.inference.long_files.can_stream`).

    Raises:
        EmbedOutputMismatch: ``out_dir`` holds outputs of another model/settings and ``overwrite`` is false.
        kikimimi.fileio.OutputInUseError: another process is writing into ``out_dir`` (the same rank).
    """
    if level not in ("clip", "frame"):
        raise ValueError(f"level must be 'clip' or 'frame', got {level!r}")
    out = Path(out_dir)
    with output_lock(out, "embed", rank=rank if world_size > 1 else None):
        return _run_locked(model, inputs, out, level, batch_size, rank, world_size, progress, stream_over_s,
                           overwrite)


def _run_locked(model: AudioEncoder, inputs: Sequence[str | os.PathLike], out: Path, level: str, batch_size: int,
                rank: int, world_size: int, progress: bool, stream_over_s: float, overwrite: bool) -> EmbedJobResult:
    record = job_record(model, level)
    keep_existing = _check_record(out, record, overwrite)
    if rank == 0:
        atomic_write_json(out / RECORD_NAME, record)
    suffix = ".npy" if level == "clip" else ".npz"
    plan = [(src, str(Path(key).with_suffix(suffix).as_posix())) for src, key in plan_outputs(inputs)]
    plan = plan[rank::world_size]
    result = EmbedJobResult(out, found=len(plan))
    todo = [(src, key) for src, key in plan if not (keep_existing and (out / key).exists())]
    result.skipped = len(plan) - len(todo)

    streamable = level == "frame" and can_stream(model)
    bar = None
    if progress:
        bar = tqdm(total=len(todo), desc="embed", unit="file")
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        waves, keys = [], []
        for src, key in batch:
            try:
                if streamable and audio_info(src).duration_s > stream_over_s:
                    write_frame_embeddings_streamed(model, src, out / key, batch_size=batch_size)
                    result.embedded += 1
                    continue
                waves.append(load_audio(src, model.sample_rate)[0])
                keys.append(key)
            except AudioDecodeError as exc:
                result.failed.append((str(src), exc.reason))
            except ValueError as exc:  # streamed file too short for the front end
                result.failed.append((str(src), f"cannot embed: {exc}"))
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
            shape = output_shape(path, level)
            rows.append((key, str(src), 1 if len(shape) == 1 else shape[0], shape[-1]))
    atomic_write_text(out / f"manifest{tag}.csv", _csv(("file_name", "source", "frames", "dim"), rows))
    atomic_write_text(out / f"errors{tag}.csv", _csv(("source", "error"), result.failed))
    if world_size > 1:
        _merge_shards(out, world_size)
    return result


def _merge_shards(out: Path, world_size: int) -> None:
    """Write ``manifest.csv`` / ``errors.csv`` once every rank's shard files exist (rows sorted by file name)."""
    for name in ("manifest", "errors"):
        shards = [out / f"{name}.rank{r}.csv" for r in range(world_size)]
        if not all(p.exists() for p in shards):
            return
        header, rows = None, []
        for shard in shards:
            with open(shard, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                rows.extend(reader)
        atomic_write_text(out / f"{name}.csv", _csv(header or (), sorted(rows)))
