"""File helpers: atomic writers, input-list collection (files / folders / CSV lists), stable keys, output locks.

Atomic writers write to a temporary file in the destination folder, flush + fsync it, then
``os.replace`` it over the destination: readers see either the old file or the complete new one,
never a partial write. If writing fails the temporary file is removed and the old file is kept.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import filelock
import numpy as np

__all__ = [
    "AUDIO_EXTENSIONS",
    "InputListError",
    "OutputInUseError",
    "atomic_open",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "collect_audio_files",
    "missing_files",
    "output_lock",
    "relative_key",
    "require_existing_files",
    "summarise_names",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
#: Column names recognised (case-insensitively) in CSV input lists, in order of preference.
CSV_PATH_COLUMNS = ("file_name", "path")


class InputListError(ValueError):
    """A CSV input list cannot be used. The message names the file and (when known) the row."""


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# --------------------------------------------------------------------------------------------
# Atomic writers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit fsync it and move it onto ``path``.

    ``mode`` must be a write mode (``"wb"`` or ``"w"``; text kwargs such as ``encoding`` pass
    through). On an exception inside the block the temporary file is deleted, ``path`` is left
    untouched and the exception propagates. The new file gets the old file's permission bits, or
    the usual ``0o666 & ~umask`` for a new file.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open supports write modes 'w'/'wb', got {mode!r}")
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            perm = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            perm = 0o666 & ~_UMASK
        os.chmod(tmp_name, perm)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename (best effort; not supported on every platform)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (newlines written as given)."""
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``header`` and ``rows`` as CSV text with ``\n`` line ends (for :func:`atomic_write_text`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (UTF-8, trailing newline)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)  # serialise first: errors leave no file
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write ``array`` in ``.npy`` format to exactly ``path`` (no suffix is added)."""
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomically ``torch.save(obj)`` to ``path``."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


# --------------------------------------------------------------------------------------------
# Input collection
# --------------------------------------------------------------------------------------------


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _scan_folder(folder: Path, recursive: bool) -> list[Path]:
    """Audio files below ``folder``, sorted by relative path; hidden files/folders (``.x``,
    macOS ``._x.wav`` resource forks) are skipped."""
    found = []
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    for p in pattern:
        rel = p.relative_to(folder)
        if p.suffix.lower() in AUDIO_EXTENSIONS and not _is_hidden(rel) and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_csv_list(csv_path: Path) -> list[Path]:
    """Paths listed in a CSV. See :func:`collect_audio_files` for the rules."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputListError(f"'{csv_path}': input list not found") from exc
    except UnicodeDecodeError as exc:
        raise InputListError(
            f"'{csv_path}': not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputListError(f"'{csv_path}': cannot read input list ({exc.strerror or exc})") from exc
    if "\x00" in text:
        raise InputListError(f"'{csv_path}': contains NUL bytes; not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise InputListError(f"'{csv_path}': malformed CSV at row {reader.line_num}: {exc}") from exc
    if not rows:
        raise InputListError(f"'{csv_path}': the input list is empty")

    first_line, header = rows[0]
    names = [c.strip().lower() for c in header]
    column = next((names.index(n) for n in CSV_PATH_COLUMNS if n in names), None)
    if column is not None:
        data = rows[1:]
    elif Path(header[0].strip()).suffix.lower() in AUDIO_EXTENSIONS:
        column, data = 0, rows  # no header line: the first row is already a file
    else:
        column, data = 0, rows[1:]  # unknown header: use the first column
    if not data:
        raise InputListError(f"'{csv_path}': the input list has a header (row {first_line}) but no rows")

    base = os.fspath(csv_path.parent)
    out = []
    n_fields = len(header)
    for line, row in data:
        if len(row) != n_fields:
            raise InputListError(
                f"'{csv_path}': row {line} has {len(row)} fields but the header (row {first_line}) "
                f"has {n_fields}")
        name = row[column].strip()
        if not name:
            raise InputListError(f"'{csv_path}': row {line} has an empty file name")
        if name.startswith("~"):
            name = os.path.expanduser(name)
        # one string join and one Path per row: a million-row list is read in seconds, not a minute
        out.append(Path(os.path.join(base, name)))
    return out


def collect_audio_files(inputs: Sequence[str | os.PathLike], *, recursive: bool = True) -> list[Path]:
    """Expand user inputs into a list of audio file paths.

    Each input may be:
    - a folder: its audio files (:data:`AUDIO_EXTENSIONS`, case-insensitive), recursively when
      ``recursive``, sorted by relative path; hidden files and folders are skipped;
    - a ``.csv`` list: column ``file_name`` or ``path`` if present, else the first column (the
      first row is data when it names an audio file, else a header); relative paths are resolved
      against the CSV's folder. Listed files that do not exist are kept, so the consumer reports
      them. Problems with the CSV itself raise :class:`InputListError` naming the file and row;
    - any other path: kept as given (even when missing or not an audio extension; the decoder
      reports the problem).
    Order follows the inputs; repeated paths are kept once (first occurrence).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[str] = set()
    cwd = os.getcwd()  # once, not per file (os.path.abspath asks the kernel every time)
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = _scan_folder(p, recursive)
        elif p.suffix.lower() == ".csv":
            found = _read_csv_list(p)
        else:
            found = [p]
        for f in found:
            key = os.path.normpath(os.path.join(cwd, f))
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def relative_key(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """A stable, filesystem-safe key for an input file, e.g. for cache and output file names.

    ``path`` relative to ``root`` as a POSIX string (``"sub/a.wav"``) when it lies under ``root``;
    otherwise ``"_ext/<8 hex of the absolute path hash>/<file name>"`` so that files with the same
    name from different folders never collide. ``root=None`` uses only the hashed form.
    """
    abs_path = os.path.normpath(os.path.abspath(os.fspath(path)))
    if root is not None:
        abs_root = os.path.normpath(os.path.abspath(os.fspath(root)))
        try:
            rel = os.path.relpath(abs_path, abs_root)
        except ValueError:  # different drives (Windows)
            rel = None
        if rel is not None and rel != "." and not rel.startswith(".." + os.sep) and rel != "..":
            return Path(rel).as_posix()
    digest = hashlib.sha1(abs_path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"_ext/{digest}/{os.path.basename(abs_path)}"


#: how many names a summary of many failures prints before "… and N more"
SUMMARY_NAMES = 20


def summarise_names(names: Sequence[str | os.PathLike], limit: int = SUMMARY_NAMES) -> list[str]:
    """At most ``limit`` of ``names`` (as strings), then ``"… and N more"`` when there are more."""
    shown = [os.fspath(n) for n in names[:limit]]
    if len(names) > limit:
        shown.append(f"… and {len(names) - limit:,} more")
    return shown


def missing_files(files: Sequence[str | os.PathLike]) -> list[Path]:
    """The ``files`` that do not exist, in order (one ``stat`` each: about a second per million files)."""
    return [f if isinstance(f, Path) else Path(f) for f in files if not os.path.exists(f)]


def require_existing_files(files: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Fail fast when none of ``files`` (from :func:`collect_audio_files` over ``inputs``) exists.

    A CSV list whose every row names a missing file (a wrong folder, a list from another machine) is a bad
    input list, not a million failed files: :class:`InputListError` with a summary of at most
    :data:`SUMMARY_NAMES` names and the count, instead of one line per file.

    Returns:
        The missing files (empty when all exist) when at least one file exists, for the caller to report
        (e.g. with :func:`summarise_names`) and skip.
    """
    missing = missing_files(files)
    if files and len(missing) == len(files):
        lists = [os.fspath(i) for i in inputs if Path(i).suffix.lower() == ".csv"]
        where = (f" (relative paths in a CSV list are resolved against the list's folder: {', '.join(lists)})"
                 if lists else "")
        names = "\n  ".join(summarise_names(missing))
        raise InputListError(f"none of the {len(files):,} input files exists{where}:\n  {names}")
    return missing


# --------------------------------------------------------------------------------------------
# Output locks
# --------------------------------------------------------------------------------------------


class OutputInUseError(OSError):
    """Another process holds the output folder's lock. The message names the folder, the command and its pid."""


#: the name :func:`atomic_open` gives its temporary files: ``.<name>.<8 random characters>.tmp``
_TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the :func:`atomic_open` temporaries below ``folder`` (left by a killed writer); returns them.

    Only safe while no other process writes there, i.e. under :func:`output_lock`.
    """
    removed = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if _TEMPORARY_NAME.match(name):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str, *, rank: int | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``folder`` (created) while the block runs; yields the lock file.

    The lock is ``folder/.kikimimi-<what>.lock`` (``.kikimimi-<what>-rank<N>.lock`` with ``rank``, so the
    processes of one ``torchrun`` job, each writing its own shard, do not exclude each other). It is an OS
    file lock (``filelock``): the kernel releases it when the holder exits, even after ``kill -9``, so a
    resumed run is never locked out by a dead one. The holder's pid is written next to it
    (``….lock.pid``) for the message a second process gets.

    Raises:
        OutputInUseError: immediately (no waiting) when another process holds the lock:
            ``'<folder>' is in use by another kikimimi <what> (pid N); wait for it or choose another output``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    stem = f".kikimimi-{what}" + (f"-rank{rank}" if rank is not None else "")
    lock_path = out / f"{stem}.lock"
    pid_path = out / f"{stem}.lock.pid"
    lock = filelock.FileLock(str(lock_path), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            pid = pid_path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise OutputInUseError(f"'{out}' is in use by another kikimimi {what} (pid {pid}); wait for it or "
                               "choose another output") from None
    try:
        atomic_write_text(pid_path, f"{os.getpid()}\n")
        if rank is None:  # sole writer now: temporaries left in the folder belong to a writer that died
            remove_stale_temporaries(out)
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            pid_path.unlink()
        lock.release()
