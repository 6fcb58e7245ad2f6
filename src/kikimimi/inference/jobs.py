"""Batch embedding of many files: one output per input, resumable, failures listed, shardable.

Outputs (under ``out_dir``, mirroring the inputs' relative paths): clip level → ``<key>.npy`` ``[D]``;
frame level → ``<key>.npz`` with ``embeddings [T, D]`` and ``timestamps_ms [T]``. A ``manifest.csv``
(``file_name,source,frames,dim``) lists what exists and ``errors.csv`` what failed. Every output is
written atomically, so a killed job resumes where it stopped (existing outputs are skipped).

Sharding: with ``WORLD_SIZE`` > 1 in the environment (e.g. ``torchrun --nproc_per_node=N -m kikimimi
embed …``) rank ``r`` takes inputs ``r, r + N, r + 2N, …`` and writes ``manifest.rank<r>.csv`` /
``errors.rank<r>.csv``; no process group is needed.

What wrote the outputs is the job's identity (:func:`job_record`): a content fingerprint of the weights actually
loaded (SHA-256, cached by path, size and mtime), the model config, the front end (sample rate, log-mel settings,
normalisation statistics) and the options that change outputs (precision, level), plus the model as the user named
it. It is recorded in ``embed.json`` and in the folder's ownership stamp (:func:`kikimimi.fileio.claim_folder`); a
later job into the same folder with another identity, or another kind of job (``prep``, ``index``…), is refused
(:class:`EmbedOutputMismatch`, one line naming both) unless ``overwrite=True``, which recomputes every output.
An existing output is kept only when the stamp matches and its shape matches the one recorded in the manifest
(or the model's dimension). Embeddings with NaN or infinite values are a failure of that file, never written.
A job holds the folder's lock (:func:`kikimimi.fileio.output_lock`; shared by the ranks of a torchrun job) so a
second process stops at once.
When every rank of a sharded job has written its ``manifest.rank<r>.csv``, the last one to finish also writes the
merged ``manifest.csv`` / ``errors.csv``.

Long files at frame level (longer than ``stream_over_s``, with a chunked encoder such as M2D) are streamed
one at a time (:mod:`kikimimi.inference.long_files`): memory stays bounded whatever the duration, and the
output has the same layout. The manifest reads only the array headers of the outputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio
from kikimimi.checkpoints import resolve_model_source
from kikimimi.checkpoints.home import cache_root
from kikimimi.features.prep_cache import plan_outputs
from kikimimi.fileio import (
    FolderOwnedError,
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    claim_folder,
    file_fingerprint,
    output_lock,
)
from kikimimi.inference.embed_outputs import MANIFEST_COLUMNS
from kikimimi.inference.encoder import AudioEncoder
from kikimimi.inference.long_files import (
    can_stream,
    can_stream_clip,
    clip_embedding_streamed,
    write_frame_embeddings_streamed,
)


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
    """The output folder holds embeddings written by another model or with other settings, or another job's
    outputs."""


#: the digests of weight files, by (path, size, mtime_ns): a rerun on unchanged weights hashes nothing
FINGERPRINT_CACHE = "weights-fingerprints.json"
#: non-finite embeddings are a failure of their file
NON_FINITE = "the embedding has NaN or infinite values (the model or the audio overflowed); not written"


def fingerprint_cache_file() -> Path:
    """``<kikimimi home>/cache/weights-fingerprints.json``."""
    return cache_root() / "cache" / FINGERPRINT_CACHE


def _memory_fingerprint(bundle: Any) -> str:
    """SHA-256 of the tensors of a loaded bundle (when the file it came from is not known)."""
    h = hashlib.sha256()
    for part in ("encoder", "head", "audio_proj", "text_proj"):
        module = getattr(bundle, part, None)
        if module is None or not hasattr(module, "state_dict"):
            continue
        for name, value in module.state_dict().items():
            if isinstance(value, torch.Tensor):
                h.update(f"{part}.{name}:{tuple(value.shape)}:{value.dtype}\n".encode())
                h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_path(model: Any, model_arg: str | os.PathLike | None) -> Path | None:
    """The file or folder the weights were loaded from: ``model_arg`` (a path, or a registered name resolved
    to its cached file) when given, else ``None`` (the bundle's ``source`` names the *original* checkpoint of a
    converted or fine-tuned model, not the weights in use, so it is never used)."""
    if model_arg is None:
        return None
    try:
        path = Path(resolve_model_source(model_arg, progress=False))
    except Exception:  # noqa: BLE001 - an unresolvable name: identify by the loaded tensors instead
        return None
    return path if path.exists() else None


def job_record(model: AudioEncoder, level: str, model_arg: str | os.PathLike | None = None) -> dict[str, object]:
    """The identity of an embedding job: everything that decides its outputs.

    ``weights_sha256`` is a content fingerprint of the weights actually loaded: the file or folder named by
    ``model_arg`` (SHA-256 of the weight files, including a safetensors header, cached by path, size and mtime in
    ``<kikimimi home>/cache``), or of the loaded tensors when ``model_arg`` is not given; then the model config
    (without its informational ``source``), the front end (sample rate, log-mel settings, statistics) and the
    options that change outputs (precision, level). Names and paths are not part of it (see :func:`describe_model`).
    """
    bundle = model.bundle
    path = weights_path(model, model_arg)
    if path is not None:
        fp = file_fingerprint(path, cache_file=fingerprint_cache_file())
        weights = {"weights_sha256": fp["sha256"], "weights_bytes": fp["bytes"]}
    else:
        weights = {"weights_sha256": _memory_fingerprint(bundle), "weights_bytes": None}
    config = {k: v for k, v in dict(bundle.config).items() if k != "source"}
    frontend = bundle.frontend.to_dict() if hasattr(bundle.frontend, "to_dict") else repr(bundle.frontend)
    return {**weights, "family": model.family,
            "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest(),
            "frontend": frontend, "norm_stats": [float(model.norm_stats.mean), float(model.norm_stats.std)],
            "precision": getattr(model, "precision", "fp32"), "level": level,
            "sample_rate": int(model.sample_rate), "dim": int(model.embedding_dim)}


def describe_model(record: dict[str, object], model_arg: str | os.PathLike | None) -> str:
    """A short description for messages and records: the model as the user named it and its weights digest."""
    name = os.fspath(model_arg) if model_arg is not None else "a loaded model"
    return f"model '{name}', weights {str(record.get('weights_sha256'))[:12]}"


def _check_record(out: Path, record: dict[str, object], overwrite: bool, describe: str = "") -> bool:
    """Whether existing outputs may be kept (``False``: recompute all); raises on a mismatch without overwrite."""
    try:
        return claim_folder(out, "embed", record, describe=describe, overwrite=overwrite, what="embeddings")
    except FolderOwnedError as exc:
        raise EmbedOutputMismatch(f"{exc} to recompute every file" if str(exc).endswith("--overwrite")
                                  else str(exc)) from None


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
                  progress: bool = False, stream_over_s: float = 300.0, overwrite: bool = False,
                  model_arg: str | os.PathLike | None = None) -> EmbedJobResult:
    """Embed every audio file in ``inputs`` (files, folders, CSV lists) into ``out_dir``.

    At frame level, files longer than ``stream_over_s`` seconds are streamed (bounded memory) when the
    encoder allows it (:func:`kikimimi.inference.long_files.can_stream`). ``model_arg``: the path or registered
    name ``model`` was loaded from (its weight files are fingerprinted; without it, the loaded tensors are).

    Raises:
        EmbedOutputMismatch: ``out_dir`` holds outputs of another model/settings and ``overwrite`` is false.
        kikimimi.fileio.OutputInUseError: another process is writing into ``out_dir`` (the same rank).
    """
    if level not in ("clip", "frame"):
        raise ValueError(f"level must be 'clip' or 'frame', got {level!r}")
    out = Path(out_dir)
    record = job_record(model, level, model_arg)  # before the lock: hashing new weights may take a while
    with output_lock(out, "embed", rank=rank if world_size > 1 else None):
        return _run_locked(model, inputs, out, level, batch_size, rank, world_size, progress, stream_over_s,
                           overwrite, record, describe_model(record, model_arg))


def _recorded_shapes(out: Path) -> dict[str, tuple[int, int]]:
    """``file_name -> (frames, dim)`` from the manifests an earlier run wrote (empty when none)."""
    shapes: dict[str, tuple[int, int]] = {}
    for manifest in sorted(out.glob("manifest*.csv")):
        try:
            with open(manifest, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    shapes[row["file_name"]] = (int(row["frames"]), int(row["dim"]))
        except (OSError, ValueError, KeyError, TypeError, csv.Error):
            continue
    return shapes


def _trusted(path: Path, level: str, dim: int, recorded: tuple[int, int] | None) -> bool:
    """Whether an existing output may be kept: readable, the level's layout, the model's dimension and the shape
    the manifest recorded for it (when it did)."""
    try:
        shape = output_shape(path, level)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    if len(shape) != (1 if level == "clip" else 2) or shape[-1] != dim:
        return False
    return recorded is None or recorded == (1 if len(shape) == 1 else shape[0], shape[-1])


def all_finite(path: Path, level: str, block_bytes: int = 1 << 22) -> bool:
    """Whether an output's embeddings are all finite, read in blocks (bounded memory for long frame files)."""
    with (open(path, "rb") if level == "clip" else zipfile.ZipFile(path).open("embeddings.npy")) as fh:
        _npy_shape(fh)
        block_bytes -= block_bytes % 4
        for block in iter(lambda: fh.read(block_bytes), b""):
            if not np.isfinite(np.frombuffer(block[: len(block) - len(block) % 4], dtype=np.float32)).all():
                return False
    return True


def _run_locked(model: AudioEncoder, inputs: Sequence[str | os.PathLike], out: Path, level: str, batch_size: int,
                rank: int, world_size: int, progress: bool, stream_over_s: float, overwrite: bool,
                record: dict[str, object], describe: str) -> EmbedJobResult:
    if rank == 0 or world_size == 1:
        keep_existing = _check_record(out, record, overwrite, describe)
        atomic_write_json(out / RECORD_NAME, {**record, "model": describe})
    else:  # rank 0 stamps the folder; the other ranks only check it
        try:
            keep_existing = claim_folder(out, "embed", record, describe=describe, overwrite=overwrite,
                                         what="embeddings", write=False)
        except FolderOwnedError as exc:
            raise EmbedOutputMismatch(str(exc)) from None
    suffix = ".npy" if level == "clip" else ".npz"
    plan = [(src, str(Path(key).with_suffix(suffix).as_posix())) for src, key in plan_outputs(inputs)]
    plan = plan[rank::world_size]
    result = EmbedJobResult(out, found=len(plan))
    recorded = _recorded_shapes(out) if keep_existing else {}
    dim = int(model.embedding_dim)
    todo = [(src, key) for src, key in plan
            if not (keep_existing and (out / key).exists() and _trusted(out / key, level, dim, recorded.get(key)))]
    result.skipped = len(plan) - len(todo)

    streamable = can_stream(model) if level == "frame" else can_stream_clip(model)
    bar = None
    if progress:
        bar = tqdm(total=len(todo), desc="embed", unit="file")
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        waves, keys = [], []
        for src, key in batch:
            try:
                if streamable and level == "clip" and audio_info(src).duration_s > stream_over_s:
                    waves.append(None)  # embedded streamed below, in bounded memory
                    keys.append(key)
                    continue
                if streamable and audio_info(src).duration_s > stream_over_s:
                    write_frame_embeddings_streamed(model, src, out / key, batch_size=batch_size)
                    if not all_finite(out / key, level):
                        (out / key).unlink(missing_ok=True)
                        result.failed.append((str(src), NON_FINITE))
                        continue
                    result.embedded += 1
                    continue
                waves.append(load_audio(src, model.sample_rate)[0])
                keys.append(key)
            except AudioDecodeError as exc:
                result.failed.append((str(src), exc.reason))
            except ValueError as exc:  # streamed file too short for the front end
                result.failed.append((str(src), f"cannot embed: {exc}"))
        streamed = {key for wave, key in zip(waves, keys, strict=True) if wave is None}
        for key in streamed:
            src = next(s for s, k in batch if k == key)
            try:
                emb = clip_embedding_streamed(model, src, batch_size=batch_size)
            except AudioDecodeError as exc:
                result.failed.append((str(src), exc.reason))
                continue
            except ValueError as exc:
                result.failed.append((str(src), f"cannot embed: {exc}"))
                continue
            if not np.isfinite(emb).all():
                result.failed.append((str(src), NON_FINITE))
                (out / key).unlink(missing_ok=True)
                continue
            _save(out / key, level, emb, None)
            result.embedded += 1
        waves, keys = ([w for w in waves if w is not None], [k for k in keys if k not in streamed])
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
                if output is None:
                    continue
                if not np.isfinite(output[0]).all():
                    result.failed.append((str(sources[key]), NON_FINITE))
                    (out / key).unlink(missing_ok=True)  # an older output of this file is stale too
                    continue
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
    atomic_write_text(out / f"manifest{tag}.csv", _csv(MANIFEST_COLUMNS, rows))  # read by embed_outputs
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
