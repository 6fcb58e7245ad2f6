"""File helpers: atomic writers, input-list collection (files / folders / CSV lists), stable keys, output locks,
folder ownership stamps and content fingerprints.

Atomic writers write to a temporary file in the destination folder, flush + fsync it, then
``os.replace`` it over the destination: readers see either the old file or the complete new one,
never a partial write. If writing fails the temporary file is removed and the old file is kept.
Temporary files are named ``.kikimimi-<pid>-<8 random>.<destination name>.tmp``: only kikimimi makes such
names, and the writer's pid tells a later run whether the writer is still alive
(:func:`remove_stale_temporaries` deletes only those of dead writers, never another program's files).

One owner per output folder: every job that writes a folder holds its lock (:func:`output_lock`, one per
folder whatever the job) and stamps it (:func:`claim_folder`, ``.kikimimi-job.json``: job kind, settings
fingerprint, kikimimi version); a folder stamped by another kind of job or other settings is refused
(:class:`FolderOwnedError`) unless the user asks to overwrite it. :func:`file_fingerprint` identifies weight
files by content (SHA-256, cached by path, size and mtime).
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
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import filelock
import numpy as np

__all__ = [
    "AUDIO_EXTENSIONS",
    "STAMP_NAME",
    "FolderOwnedError",
    "InputListError",
    "OutputInUseError",
    "atomic_open",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "claim_folder",
    "collect_audio_files",
    "file_fingerprint",
    "missing_files",
    "output_lock",
    "pid_alive",
    "refuse_if_in_use",
    "read_stamp",
    "relative_key",
    "remove_stale_temporaries",
    "require_existing_files",
    "settings_fingerprint",
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


#: temporaries of :func:`atomic_open`: ``.kikimimi-<pid>-<8 random>.<destination name, cut>.tmp``
_TEMPORARY_PREFIX = ".kikimimi-"
_SHOWN_NAME = 120  # characters of the destination name kept in a temporary's name (file names stop at 255 bytes)
_TEMPORARY_NAME = re.compile(r"^\.kikimimi-(\d+)-[a-z0-9_]{8}\..*\.tmp$")


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
    fd, tmp_name = tempfile.mkstemp(prefix=f"{_TEMPORARY_PREFIX}{os.getpid()}-",
                                    suffix=f".{path.name[:_SHOWN_NAME]}.tmp", dir=folder)
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts as alive)."""
    if pid <= 0:
        return True  # not a pid we wrote: never treat it as dead
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # e.g. Windows: unknown; keep the file
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete :func:`atomic_open` temporaries below ``folder`` whose writer is dead; returns them.

    Only files named ``.kikimimi-<pid>-<8 random>.<name>.tmp`` (a name only kikimimi makes) are considered,
    and only when process ``<pid>`` no longer exists: another program's temporaries (``.x.12345678.tmp``) and
    those of a living kikimimi process (another job writing into the same tree) are never touched.
    """
    removed = []
    walk = os.walk(folder) if recursive else [(os.fspath(folder), [], [e.name for e in os.scandir(folder)
                                                                      if e.is_file(follow_symlinks=False)])]
    alive: dict[int, bool] = {}
    for root, _dirs, names in walk:
        for name in names:
            match = _TEMPORARY_NAME.match(name)
            if not match:
                continue
            pid = int(match.group(1))
            if pid not in alive:
                alive[pid] = pid_alive(pid)
            if alive[pid]:
                continue
            path = Path(root) / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


#: the lock every kikimimi job writing a folder holds (``.kikimimi-rank<N>.lock`` too for torchrun shards)
LOCK_NAME = ".kikimimi.lock"


def _holder(pid_path: Path) -> tuple[str, str]:
    """(pid, job) recorded next to a lock, ``("unknown", "job")`` when unreadable."""
    try:
        parts = pid_path.read_text(encoding="utf-8").split()
    except OSError:
        parts = []
    return (parts[0] if parts else "unknown"), (parts[1] if len(parts) > 1 else "job")


class _FolderLock:
    """An OS lock on ``folder/.kikimimi.lock``: exclusive for a job, shared for the ranks of a torchrun job
    (each rank also holds its own exclusive ``.kikimimi-rank<N>.lock``). POSIX ``flock``; ``filelock``
    (exclusive only) elsewhere. The kernel drops the lock when the holder dies, even after ``kill -9``."""

    def __init__(self, path: Path, shared: bool) -> None:
        self.path, self.shared = path, shared
        self._fd: int | None = None
        self._fallback: filelock.BaseFileLock | None = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._fallback = filelock.FileLock(str(self.path), timeout=0, is_singleton=False)
            try:
                self._fallback.acquire()
            except filelock.Timeout:
                return False
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fallback is not None:
            self._fallback.release()
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def refuse_if_in_use(folder: str | os.PathLike, *, lock_name: str = LOCK_NAME) -> None:
    """Fail fast, before a job loads its model, when another process holds ``folder``'s lock.

    A look, not a hold: the lock is taken and dropped at once (nothing is created when ``folder`` does not exist).
    The job still takes :func:`output_lock` when it starts writing; this only spares a second job the minutes of
    loading a model before it learns that the folder is busy.

    Raises:
        OutputInUseError: as :func:`output_lock` does.
    """
    lock_path = Path(folder) / lock_name
    if not lock_path.exists():
        return
    lock = _FolderLock(lock_path, shared=False)
    if lock.acquire():
        lock.release()
        return
    raise _in_use(Path(folder), *_holder(Path(folder) / f"{lock_name}.pid"))


def _in_use(folder: Path, pid: str, job: str) -> OutputInUseError:
    return OutputInUseError(f"'{folder}' is in use by another kikimimi {job} (pid {pid}); wait for it or "
                            "choose another output")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str, *, rank: int | None = None, sweep: bool = True,
                lock_name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold the lock of the output ``folder`` (created) while the block runs; yields the lock file.

    One lock per folder, whatever the job: ``folder/.kikimimi.lock`` covers every kikimimi job (``prep``,
    ``embed``, ``index``, …), so two jobs of any kinds never write one folder at once. With ``rank`` (the
    processes of one ``torchrun`` job, each writing its own shard) the folder lock is shared and each rank also
    holds ``.kikimimi-rank<N>.lock`` exclusively. The holder's pid and job are written next to the lock
    (``….lock.pid``: ``"<pid> <what>"``) for the message a second process gets. With ``sweep`` (and no
    ``rank``) the dead writers' temporaries below the folder are removed (:func:`remove_stale_temporaries`).
    ``lock_name``: another lock file, for a writer of one file rather than of the folder (a results file).

    Raises:
        OutputInUseError: immediately (no waiting) when another process holds the lock:
            ``'<folder>' is in use by another kikimimi <job> (pid N); wait for it or choose another output``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    locks: list[tuple[_FolderLock, Path]] = [(_FolderLock(out / lock_name, shared=rank is not None),
                                              out / f"{lock_name}.pid")]
    if rank is not None:
        stem = f".kikimimi-rank{rank}.lock"
        locks.append((_FolderLock(out / stem, shared=False), out / f"{stem}.pid"))
    held: list[_FolderLock] = []
    try:
        for lock, pid_path in locks:
            if not lock.acquire():
                pid, job = _holder(pid_path)
                if pid == "unknown" and rank is not None:  # the exclusive holder of the folder lock
                    pid, job = _holder(out / f"{lock_name}.pid")
                for other in sorted(out.glob(".kikimimi-rank*.lock.pid")) if pid == "unknown" else []:
                    pid, job = _holder(other)  # the folder is shared by the ranks of a torchrun job
                    break
                raise _in_use(out, pid, job)
            held.append(lock)
        mine = [pid_path for _lock, pid_path in locks[1:]] if rank is not None else [locks[0][1]]
        for pid_path in mine:
            atomic_write_text(pid_path, f"{os.getpid()} {what}\n")
        if rank is None and sweep:  # sole writer now: kikimimi temporaries of dead writers can go
            remove_stale_temporaries(out)
        yield locks[-1][0].path
    finally:
        for lock, pid_path in reversed(locks):
            if lock in held:
                if lock is locks[-1][0] or rank is None:
                    with contextlib.suppress(OSError):
                        pid_path.unlink()
                lock.release()


# --------------------------------------------------------------------------------------------
# Ownership stamps and fingerprints
# --------------------------------------------------------------------------------------------

#: the stamp every job writes into the folder it owns
STAMP_NAME = ".kikimimi-job.json"
STAMP_FORMAT = "kikimimi-job/1"
#: files that show a folder holds a job's outputs written before stamps existed
JOB_MARKERS = {"prep": "prep.json", "embed": "embed.json", "index": "manifest.json", "eval": "report.json"}


class FolderOwnedError(ValueError):
    """The output folder holds another job's outputs (another kind, or other settings); one line names both."""


def kikimimi_version() -> str:
    """The installed kikimimi version (``"unknown"`` when not installed as a package)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "unknown"
    try:
        return version("kikimimi")
    except PackageNotFoundError:
        return "unknown"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def settings_fingerprint(settings: Any) -> str:
    """Hex SHA-256 of ``settings`` as canonical JSON (sorted keys): equal settings, equal fingerprints."""
    return hashlib.sha256(_canonical(settings)).hexdigest()


def read_stamp(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ownership stamp of ``folder`` (``None`` when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == STAMP_FORMAT else None


def _short(describe: str, fingerprint: str) -> str:
    return f"{describe}; settings {fingerprint[:12]}" if describe else f"settings {fingerprint[:12]}"


def claim_folder(folder: str | os.PathLike, job: str, settings: dict[str, Any], *, describe: str = "",
                 overwrite: bool = False, overwrite_flag: str = "--overwrite", legacy_ok: bool = False,
                 what: str = "outputs", write: bool = True) -> bool:
    """Check and write the ownership stamp of ``folder`` for ``job`` run with ``settings`` (call under the
    folder's :func:`output_lock`).

    ``settings`` must hold everything that changes the outputs (it is fingerprinted and compared);
    ``describe`` is a short human description recorded and quoted in messages (e.g. the model as the user
    named it), never compared. ``legacy_ok``: a folder of this job written before stamps existed (its
    :data:`JOB_MARKERS` file, no stamp) is accepted (the job checks its own old record). ``write=False`` only
    checks (the other ranks of a torchrun job, whose rank 0 writes the stamp).

    Returns:
        Whether outputs already in the folder may be kept: ``True`` when the stamp matches (and not
        ``overwrite``), ``False`` for a new folder or when overwriting (recompute everything).

    Raises:
        FolderOwnedError: the folder holds outputs of another kind of job, of other settings, or of this job
            from before stamps, and ``overwrite`` is false. One line naming both and the way out.
    """
    out = Path(folder)
    fingerprint = settings_fingerprint(settings)
    stamp = read_stamp(out)
    keep = not overwrite
    if stamp is None:
        others = [j for j, marker in JOB_MARKERS.items() if (out / marker).is_file() and not (j == job and legacy_ok)]
        if others and not overwrite:
            old = others[0]
            raise FolderOwnedError(
                f"'{out}' holds outputs of `kikimimi {old}` written without an ownership stamp; this `kikimimi "
                f"{job}` cannot tell whether they match: choose another folder or pass {overwrite_flag}")
        keep = keep and not others
    elif stamp.get("job") != job or stamp.get("fingerprint") != fingerprint:
        if not overwrite:
            there = _short(str(stamp.get("describe") or ""), str(stamp.get("fingerprint") or ""))
            here = _short(describe, fingerprint)
            if stamp.get("job") != job:
                raise FolderOwnedError(
                    f"'{out}' holds outputs of `kikimimi {stamp.get('job')}` ({there}); this `kikimimi {job}` "
                    f"({here}) would mix them: choose another folder or pass {overwrite_flag}")
            differ = sorted(k for k in {*(stamp.get("settings") or {}), *settings}
                            if (stamp.get("settings") or {}).get(k) != settings.get(k))
            raise FolderOwnedError(
                f"'{out}' holds {what} written with other settings ({', '.join(differ) or 'settings'} differ: "
                f"{there} there, {here} now); choose another folder or pass {overwrite_flag}")
        keep = False
    if not write:
        return keep
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / STAMP_NAME, {
        "format": STAMP_FORMAT, "job": job, "fingerprint": fingerprint, "describe": describe,
        "kikimimi": kikimimi_version(), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": json.loads(_canonical(settings))})
    return keep


#: weight files (and their configs) that :func:`file_fingerprint` hashes inside a model folder
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx", ".gguf", ".npz", ".json")
_FINGERPRINT_CACHE_LIMIT = 2000


def _hash_one(path: Path) -> dict[str, Any]:
    """SHA-256 of one file (streamed, 1 MiB blocks), plus that of a safetensors header (its tensor table)."""
    h = hashlib.sha256()
    header = None
    with open(path, "rb") as fh:
        if path.suffix == ".safetensors":
            head = fh.read(8)
            h.update(head)
            if len(head) == 8:
                n = int.from_bytes(head, "little")
                if 0 < n <= 100 << 20:
                    text = fh.read(n)
                    h.update(text)
                    header = hashlib.sha256(text).hexdigest()
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    out: dict[str, Any] = {"sha256": h.hexdigest()}
    if header is not None:
        out["header_sha256"] = header
    return out


def _weight_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in WEIGHT_FILE_SUFFIXES)
    files = [path]
    if path.suffix == ".safetensors" and (path.parent / "config.json").is_file():
        files.append(path.parent / "config.json")  # a kikimimi weight file is read with its config
    return files


def file_fingerprint(path: str | os.PathLike, *, cache_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """A content fingerprint of a weight file, or of a model folder's weight and config files.

    Returns ``{"sha256": hex, "bytes": total size, "files": [names]}`` (``"header_sha256"``: the safetensors
    header of a single ``.safetensors`` file). Each file is hashed streamed (constant memory); with
    ``cache_file`` (a small JSON file) each file's digest is remembered by (absolute path, size, mtime, ctime,
    inode), so a rerun on unchanged weights reads nothing, and any write to a file (which sets its ctime) has it
    hashed again.

    Raises:
        OSError: a file cannot be read.
    """
    root = Path(path)
    files = _weight_files(root)
    cache: dict[str, Any] = {}
    if cache_file is not None:
        try:
            loaded = json.loads(Path(cache_file).read_text(encoding="utf-8"))
            cache = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            cache = {}
    total = hashlib.sha256()
    size, changed, header = 0, False, None
    digests: list[str] = []
    for f in files:
        st = f.stat()
        key = os.path.abspath(f)
        hit = cache.get(key)
        # ctime cannot be set by a user (touch sets mtime only): any write to the file invalidates the entry
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
        if isinstance(hit, dict) and all(hit.get(k) == v for k, v in stamp.items()):
            digest = hit
        else:
            digest = {**stamp, **_hash_one(f)}
            cache[key] = digest
            changed = True
        size += st.st_size
        digests.append(str(digest["sha256"]))
        total.update(f"{f.name}\0{digest['sha256']}\n".encode("utf-8", "surrogatepass"))
        header = header or digest.get("header_sha256")
    if cache_file is not None and changed:
        if len(cache) > _FINGERPRINT_CACHE_LIMIT:  # keep the newest entries
            cache = dict(list(cache.items())[-_FINGERPRINT_CACHE_LIMIT:])
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write_json(cache_file, cache, indent=None)
    out: dict[str, Any] = {"sha256": digests[0] if len(digests) == 1 else total.hexdigest(),
                           "bytes": size, "files": [f.name for f in files]}
    if header is not None and len(files) <= 2:
        out["header_sha256"] = header
    return out
