"""Pre-compute log-mel spectrograms of many audio files into a cache folder (``kikimimi prep``).

Layout of a cache folder ``CACHE``::

    CACHE/prep.json        front-end preset + config, dtype and duration limit of every file in it
    CACHE/<key>.npy        one log-mel [n_mels, frames] per input (float32 or float16)
    CACHE/manifest.csv     file_name,source,duration_s,frames,sample_rate (one row per .npy)
    CACHE/errors.csv       source,error (inputs of the last run that could not be converted)

``<key>`` mirrors the input's path relative to the folder (or CSV list, or file's folder) it was
found through, with the audio suffix replaced by ``.npy`` (``sub/dog.wav`` -> ``sub/dog.npy``; when
two inputs would map to the same name the later keeps its suffix: ``sub/dog.flac.npy``). Files
outside a CSV list's folder go to ``_ext/<hash>/name.npy`` (:func:`kikimimi.fileio.relative_key`).

Manifest columns: ``file_name`` is the ``.npy`` path relative to ``CACHE``; ``source`` the absolute
input path; ``duration_s`` the converted duration in seconds (after ``limit_s``); ``frames`` the
number of log-mel frames; ``sample_rate`` the source file's own rate in Hz (features are always at the
preset's rate, recorded in ``prep.json``).

Runs are resumable: outputs are written atomically, an existing valid ``.npy`` is not recomputed,
and the manifest is rebuilt from every output that exists for the current inputs. A cache holds one
preset/dtype/limit only; asking for another raises :class:`PrepError` (``overwrite`` recomputes every file
instead). One job at a time writes into a cache: ``prep`` holds the folder's lock
(:func:`kikimimi.fileio.output_lock`, common to every kikimimi job), and a second one stops at once with
:class:`kikimimi.fileio.OutputInUseError` naming the first one's pid. The cache is stamped as ``prep``'s
(:func:`kikimimi.fileio.claim_folder`): a folder holding another job's outputs (e.g. ``embed``'s) is refused.

This module owns the format on both sides: :func:`prep_cache` writes a cache; :func:`is_prep_cache`,
:func:`read_settings`, :func:`cache_preset`, :func:`read_manifest`, :func:`cache_entries` and
:func:`open_log_mel` read one (training corpora, :mod:`kikimimi.data.corpus`).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kikimimi.audio.decode import audio_info, load_audio
from kikimimi.features.frontend import FrontendConfig, get_preset, log_mel
from kikimimi.features.streaming import stream_log_mel
from kikimimi.fileio import (
    FolderOwnedError,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    claim_folder,
    collect_audio_files,
    csv_text,
    output_lock,
    relative_key,
    require_existing_files,
)

__all__ = [
    "ERRORS_COLUMNS",
    "ERRORS_NAME",
    "FILE_COLUMN",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "SETTINGS_NAME",
    "PrepError",
    "PrepResult",
    "PrepTask",
    "cache_entries",
    "cache_preset",
    "convert_file",
    "is_prep_cache",
    "open_log_mel",
    "plan_outputs",
    "prep_cache",
    "read_manifest",
    "read_settings",
]

#: file names inside a cache folder
SETTINGS_NAME = "prep.json"
MANIFEST_NAME = "manifest.csv"
ERRORS_NAME = "errors.csv"
#: the manifest column naming each entry's ``.npy`` relative to the cache folder
FILE_COLUMN = "file_name"
MANIFEST_COLUMNS = (FILE_COLUMN, "source", "duration_s", "frames", "sample_rate")
ERRORS_COLUMNS = ("source", "error")
PREP_FORMAT = "kikimimi-logmel-cache"
DTYPES = ("float32", "float16")
# Files longer than this are converted block by block (bounded memory) instead of loaded whole.
STREAM_THRESHOLD_S = 120.0
STREAM_BLOCK_S = 60.0


class PrepError(RuntimeError):
    """A cache cannot be (re)built as requested (mixed presets, no inputs, bad options)."""


@dataclass(frozen=True)
class PrepTask:
    """One conversion: ``source`` audio -> ``output`` ``.npy`` (picklable, sent to worker processes)."""

    source: str
    output: str
    config: dict[str, Any]
    dtype: str = "float32"
    limit_s: float | None = None
    stream_threshold_s: float = STREAM_THRESHOLD_S
    block_s: float = STREAM_BLOCK_S


@dataclass
class PrepResult:
    """Outcome of :func:`prep_cache`.

    ``converted`` counts files computed in this run, ``skipped`` those already in the cache,
    ``failed`` lists ``(source, error)``, ``manifest_rows`` the rows written to ``manifest.csv``.
    """

    cache_dir: Path
    found: int = 0
    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest_rows: int = 0

    @property
    def manifest_path(self) -> Path:
        return self.cache_dir / MANIFEST_NAME

    @property
    def errors_path(self) -> Path:
        return self.cache_dir / ERRORS_NAME


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------


def _root_of(item: Path) -> Path:
    if item.is_dir():
        return item
    return item.parent  # a CSV list (paths relative to its folder) or a single file


def plan_outputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """Expand ``inputs`` (files, folders, CSV lists) into ``(source, key)`` pairs in a stable order.

    ``key`` is the ``.npy`` path (POSIX, relative to the cache) for ``source``; see the module doc.
    Raises :class:`kikimimi.fileio.InputListError` for a malformed CSV list, or one whose every file is
    missing (a summary of the first names, not one line per file).
    """
    plan: list[tuple[Path, str]] = []
    seen_sources: set[str] = set()
    used_keys: set[str] = set()
    for item in inputs:
        item_path = Path(item).expanduser()
        root = _root_of(item_path)
        found = collect_audio_files([item_path])
        if item_path.suffix.lower() == ".csv":
            require_existing_files(found, [item_path])
        for source in found:
            absolute = os.path.normpath(os.path.abspath(source))
            if absolute in seen_sources:
                continue
            seen_sources.add(absolute)
            rel = relative_key(source, root)
            key = str(Path(rel).with_suffix(".npy").as_posix()) if Path(rel).suffix else rel + ".npy"
            if key in used_keys:
                key = rel + ".npy"
            if key in used_keys:  # pragma: no cover - only with pathological names
                raise PrepError(f"two inputs map to the same cache file {key!r}; rename one of them")
            used_keys.add(key)
            plan.append((Path(absolute), key))
    return plan


# ----------------------------------------------------------------------------------------------
# One file (runs in worker processes)
# ----------------------------------------------------------------------------------------------


def _init_worker() -> None:
    torch.set_num_threads(1)


def convert_file(task: PrepTask) -> dict[str, Any]:
    """Convert one file and write its ``.npy`` atomically.

    Returns the manifest fields except ``file_name``: ``source``, ``duration_s``, ``frames``,
    ``sample_rate``. Audio shorter than one STFT window is zero-padded to it. Raises
    :class:`kikimimi.audio.decode.AudioDecodeError` for unreadable audio.
    """
    config = FrontendConfig.from_dict(task.config)
    info = audio_info(task.source)
    duration = info.duration_s if task.limit_s is None else min(info.duration_s, task.limit_s)
    if duration > task.stream_threshold_s:
        lms = stream_log_mel(task.source, config, block_s=task.block_s, limit_s=task.limit_s)
        duration_s = duration
    else:
        wave, _ = load_audio(task.source, config.sample_rate)
        if task.limit_s is not None:
            wave = wave[: int(round(task.limit_s * config.sample_rate))]
        duration_s = wave.shape[0] / config.sample_rate
        if wave.shape[0] < config.min_samples:  # shorter than one STFT window (12.6 ms at 16 kHz): pad silence
            wave = np.pad(wave, (0, config.min_samples - wave.shape[0]))
        try:
            lms = log_mel(wave, config)
        except ValueError as exc:
            raise ValueError(f"'{task.source}': {exc}") from exc
    output = Path(task.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(output, lms.astype(task.dtype, copy=False))
    return {
        "source": task.source,
        "duration_s": round(float(duration_s), 6),
        "frames": int(lms.shape[1]),
        "sample_rate": int(info.sample_rate),
    }


def _run_task(task: PrepTask) -> tuple[PrepTask, dict[str, Any] | None, str | None]:
    try:
        return task, convert_file(task), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported per file and the run goes on
        message = str(exc) or type(exc).__name__
        return task, None, f"{type(exc).__name__}: {message}"


# ----------------------------------------------------------------------------------------------
# Reading a cache
# ----------------------------------------------------------------------------------------------


def is_prep_cache(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder holding ``manifest.csv`` and ``prep.json`` (a ``kikimimi prep`` cache)."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST_NAME).is_file() and (p / SETTINGS_NAME).is_file()


def read_settings(cache_dir: str | os.PathLike) -> Any:
    """The parsed ``CACHE/prep.json`` (a dict for every cache :func:`prep_cache` wrote).

    Raises:
        ValueError: the file is missing, unreadable or not JSON (the message names it).
    """
    path = Path(cache_dir) / SETTINGS_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"'{path}': cannot read the cache description: {err}") from None


def cache_preset(cache_dir: str | os.PathLike) -> str | None:
    """The front-end preset name recorded in ``CACHE/prep.json`` (``None`` when it names none).

    A ``preset`` given as a full front-end config dict yields that dict's ``name``.
    Raises ``ValueError`` as :func:`read_settings`.
    """
    settings = read_settings(cache_dir)
    preset = settings.get("preset") if isinstance(settings, dict) else None
    if isinstance(preset, dict):
        preset = preset.get("name")
    return preset


def read_manifest(cache_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of ``CACHE/manifest.csv`` as dicts (string values)."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"'{path}': no manifest; run `kikimimi prep ... -o {cache_dir}` first")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cache_entries(cache_dir: str | os.PathLike) -> list[Path]:
    """The ``.npy`` files of a cache in manifest order (``CACHE / file_name``; existence is not checked).

    Raises:
        ValueError: the manifest has no ``file_name`` column or a row with an empty one.
        OSError: the manifest cannot be read.
    """
    root = Path(cache_dir)
    path = root / MANIFEST_NAME
    files: list[Path] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or FILE_COLUMN not in reader.fieldnames:
            raise ValueError(f"'{path}': needs a '{FILE_COLUMN}' column, got {reader.fieldnames}")
        for row_no, row in enumerate(reader, start=2):
            name = (row.get(FILE_COLUMN) or "").strip()
            if not name:
                raise ValueError(f"'{path}' row {row_no}: empty {FILE_COLUMN}")
            files.append(root / name)
    return files


def open_log_mel(path: str | os.PathLike, n_mels: int | None = None) -> np.ndarray:
    """One cached log-mel ``[n_mels, frames]``, memory-mapped read-only in its stored dtype (an official
    ``*_lms`` file's ``[1, n_mels, frames]`` is read as ``[n_mels, frames]``).

    Raises:
        ValueError: not a ``.npy`` array, not 2-D, or (when ``n_mels`` is given) another number of mel bins.
        OSError: the file cannot be read.
    """
    lms = np.load(path, mmap_mode="r", allow_pickle=False)
    if lms.ndim == 3 and lms.shape[0] == 1:
        lms = lms[0]
    if lms.ndim != 2:
        raise ValueError(f"expected a log-mel array [n_mels, frames], got shape {lms.shape}")
    if n_mels is not None and lms.shape[0] != n_mels:
        raise ValueError(f"has {lms.shape[0]} mel bins, the front end expects {n_mels}")
    return lms


# ----------------------------------------------------------------------------------------------
# Cache bookkeeping
# ----------------------------------------------------------------------------------------------


def _settings(preset: str, config: FrontendConfig, dtype: str, limit_s: float | None) -> dict[str, Any]:
    return {
        "format": PREP_FORMAT,
        "version": 1,
        "preset": preset,
        "frontend": config.to_dict(),
        "dtype": dtype,
        "limit_s": limit_s,
    }


def _check_or_write_settings(cache_dir: Path, settings: dict[str, Any], overwrite: bool = False) -> None:
    path = cache_dir / SETTINGS_NAME
    try:
        _check_settings(cache_dir, settings, overwrite)
        claim_folder(cache_dir, "prep", settings, describe=f"preset {settings['preset']}, {settings['dtype']}",
                     overwrite=overwrite, legacy_ok=True, what="log-mel caches")
    except FolderOwnedError as exc:
        raise PrepError(str(exc)) from None
    atomic_write_json(path, settings)


def _check_settings(cache_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Raise :class:`PrepError` when ``CACHE/prep.json`` records other settings (and not ``overwrite``)."""
    path = cache_dir / SETTINGS_NAME
    if path.exists() and not overwrite:
        try:
            stored = read_settings(cache_dir)
        except ValueError as exc:
            raise PrepError(f"{exc}; delete it or use another -o") from exc
        keys = ("preset", "dtype", "limit_s") if stored.get("preset") != settings["preset"] else (
            "preset", "frontend", "dtype", "limit_s")
        diffs = [f"{k}: cache has {stored.get(k)!r}, requested {settings[k]!r}" for k in keys
                 if stored.get(k) != settings[k]]
        if diffs:
            raise PrepError(
                f"'{path}': this cache was built with different settings ({'; '.join(diffs)}); "
                "one cache holds one preset/dtype/limit - choose another output folder (-o) or pass --overwrite"
            )


def _existing_frames(path: Path, n_mels: int, dtype: str) -> int | None:
    """Frame count of a valid existing output, or None if missing/invalid (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        array = open_log_mel(path, n_mels)
    except (OSError, ValueError):
        return None
    if array.dtype != np.dtype(dtype):
        return None
    return int(array.shape[1])


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def prep_cache(
    inputs: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    preset: str = "m2d-16k",
    *,
    workers: int = 1,
    dtype: str = "float32",
    limit_s: float | None = None,
    progress: bool = False,
    stream_threshold_s: float = STREAM_THRESHOLD_S,
    block_s: float = STREAM_BLOCK_S,
    on_result: Callable[[str, str | None], None] | None = None,
    overwrite: bool = False,
) -> PrepResult:
    """Convert ``inputs`` into log-mel ``.npy`` files under ``cache_dir`` (see the module doc).

    Args:
        inputs: audio files, folders (recursive) and/or CSV lists.
        cache_dir: output folder (created if needed).
        preset: front-end preset name (``m2d-16k``, ``m2d-32k``, ``byola``).
        workers: processes; 1 converts in this process. Each worker uses one torch thread.
        dtype: ``"float32"`` or ``"float16"`` for the stored arrays.
        limit_s: convert only the first ``limit_s`` seconds of each file.
        progress: show a tqdm progress bar on stderr.
        stream_threshold_s: files longer than this (seconds) are streamed block by block.
        block_s: block length in seconds when streaming.
        on_result: optional callback ``(source, error_or_None)`` after each conversion.
        overwrite: recompute every file, also when ``cache_dir`` holds another job's outputs or other settings.

    Returns:
        :class:`PrepResult`. Bad files do not raise; they are listed in ``errors.csv``.

    Raises:
        kikimimi.fileio.OutputInUseError: another process is writing into ``cache_dir``.
    """
    if dtype not in DTYPES:
        raise PrepError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if limit_s is not None and not limit_s > 0:
        raise PrepError(f"limit_s must be > 0 seconds, got {limit_s}")
    if workers < 1:
        raise PrepError(f"workers must be >= 1, got {workers}")
    config = get_preset(preset)
    cache = Path(cache_dir)
    plan = plan_outputs(inputs)
    if not plan:
        raise PrepError(f"no audio files found in {[str(i) for i in inputs]}")
    with output_lock(cache, "prep"):  # a second prep into the same cache stops at once (OutputInUseError)
        return _prep_locked(cache, plan, config, preset, dtype, limit_s, workers, progress, stream_threshold_s,
                            block_s, on_result, overwrite)


def _prep_locked(cache: Path, plan: list[tuple[Path, str]], config: FrontendConfig, preset: str, dtype: str,
                 limit_s: float | None, workers: int, progress: bool, stream_threshold_s: float, block_s: float,
                 on_result: Callable[[str, str | None], None] | None, overwrite: bool = False) -> PrepResult:
    """The body of :func:`prep_cache`, run while this process holds the cache's lock."""
    _check_or_write_settings(cache, _settings(preset, config, dtype, limit_s), overwrite)

    result = PrepResult(cache_dir=cache, found=len(plan))
    rows: dict[str, dict[str, Any]] = {}
    todo: list[PrepTask] = []
    existing: list[tuple[Path, str, int]] = []
    for source, key in plan:
        frames = None if overwrite else _existing_frames(cache / key, config.n_mels, dtype)
        if frames is None:
            todo.append(PrepTask(str(source), str(cache / key), config.to_dict(), dtype, limit_s,
                                 stream_threshold_s, block_s))
        else:
            existing.append((source, key, frames))
    key_of = {str(cache / key): key for _, key in plan}

    # Metadata of outputs from earlier runs (header reads only).
    for source, key, frames in existing:
        result.skipped += 1
        try:
            info = audio_info(source)
        except Exception as exc:  # noqa: BLE001 - source gone or unreadable: keep going, report it
            result.failed.append((str(source), f"{type(exc).__name__}: {exc} (cached output kept)"))
            continue
        duration = info.duration_s if limit_s is None else min(info.duration_s, limit_s)
        rows[key] = {"source": str(source), "duration_s": round(duration, 6), "frames": frames,
                     "sample_rate": info.sample_rate}

    def record(task: PrepTask, row: dict[str, Any] | None, error: str | None) -> None:
        if row is not None:
            rows[key_of[task.output]] = row
            result.converted += 1
        else:
            result.failed.append((task.source, error or "unknown error"))
        if on_result is not None:
            on_result(task.source, error)

    bar = tqdm(total=len(todo), disable=not progress or not todo, unit="file", desc="prep", leave=True)
    try:
        if workers == 1 or len(todo) <= 1:
            for task in todo:
                record(*_run_task(task))
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                                     initializer=_init_worker) as pool:
                futures: dict[Future, PrepTask] = {pool.submit(_run_task, task): task for task in todo}
                for future in as_completed(futures):
                    try:
                        record(*future.result())
                    except BrokenProcessPool:
                        record(futures[future], None,
                               "worker process died (out of memory or crashed); run prep again to resume")
                    bar.update(1)
    finally:
        bar.close()
        _write_tables(cache, plan, rows, result)
    return result


def _write_tables(cache: Path, plan: list[tuple[Path, str]], rows: dict[str, dict[str, Any]],
                  result: PrepResult) -> None:
    manifest = [[key, rows[key]["source"], rows[key]["duration_s"], rows[key]["frames"],
                 rows[key]["sample_rate"]] for _, key in plan if key in rows]
    atomic_write_text(cache / MANIFEST_NAME, csv_text(MANIFEST_COLUMNS, manifest))
    atomic_write_text(cache / ERRORS_NAME, csv_text(ERRORS_COLUMNS, result.failed))
    result.manifest_rows = len(manifest)
