"""The server reads only what it indexed: checks on every indexed file it opens.

At load, :func:`check_entries` validates the manifest against its indexed folder (the root): a key must be a
relative path without ``..``, and the path the entry names must be the key under the root — an edited
manifest naming ``/etc/passwd`` or ``../x`` is never served. At every request, :func:`open_indexed`:

1. resolves ``root/key`` (following links) and refuses a target outside the root (a symlink swapped in
   for an indexed file and pointing at an SSH key, say) or without an audio suffix;
2. opens the resolved file without following a link, and checks on the open descriptor that it is a regular
   file and the same file the index recorded: size and modification time (nanoseconds), plus device and inode
   when the manifest records them (``dev``, ``ino``), and the resolved path when it differs from the
   recorded one. A hard link or a replaced file is refused with 409 "re-index to serve it";
3. hands out that descriptor (:class:`ServedFile`): the bytes streamed are those of the checked file even if
   the name is swapped again afterwards.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kikimimi.fileio import AUDIO_EXTENSIONS

__all__ = ["ServedFile", "check_entries", "entry_problem", "open_indexed"]

#: suffixes a served file may have (the index's own, plus a few the decoder reads)
SERVED_SUFFIXES = frozenset(AUDIO_EXTENSIONS) | {".oga", ".au", ".caf", ".w64", ".aifc"}
_STALE = "the file changed since it was indexed; re-index to serve it"


@dataclass
class ServedFile:
    """An indexed file opened after the checks: ``fd`` (read-only; closed by :meth:`close` or ``with``),
    ``path`` (resolved, inside the root), ``size`` in bytes, ``identity`` ``(dev, ino, size, mtime_ns)``."""

    fd: int
    path: str
    size: int
    identity: tuple[int, int, int, int]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ServedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or a relative path
        return False


def entry_problem(entry: dict[str, Any], root: str, real_root: str | None = None) -> str | None:
    """Why a manifest ``entry`` must not be served from ``root`` (None: it may be, subject to the request-time
    checks of :func:`open_indexed`); ``real_root`` is ``os.path.realpath(root)`` when the caller has it."""
    key = entry.get("key")
    if not isinstance(key, str) or not key or "\x00" in key or "\\" in key:
        return "the key is not a relative path"
    parts = PurePosixPath(key).parts
    if PurePosixPath(key).is_absolute() or ".." in parts or key.startswith("~"):
        return "the key leaves the indexed folder"
    if not root or not os.path.isabs(root):
        return "the index records no absolute indexed folder"
    recorded = entry.get("path")
    if recorded is not None:
        real_root = real_root or os.path.realpath(root)
        if not isinstance(recorded, str) or not _inside(os.path.normpath(recorded), real_root):
            return "the manifest names a file outside the indexed folder"
    if PurePosixPath(key).suffix.lower() not in SERVED_SUFFIXES:
        return "not an audio file name"
    return None


def check_entries(index: Any) -> dict[str, str]:
    """``{key: reason}`` for every manifest entry of ``index`` (a :class:`~kikimimi.inference.search.SearchIndex`)
    that is never served (see :func:`entry_problem`)."""
    out, real_root = {}, os.path.realpath(index.root) if index.root else None
    for entry in index.entries:
        problem = entry_problem(entry, index.root, real_root)
        if problem:
            out[str(entry.get("key"))] = problem
    return out


def open_indexed(root: str, entry: dict[str, Any]) -> ServedFile | tuple[int, str]:
    """Open the indexed file of ``entry`` under ``root`` after every check (module docstring).

    Returns:
        the opened :class:`ServedFile`, or ``(HTTP status, one-line reason)`` when it must not be served: 404
        (not there, outside the folder, not a regular audio file), 409 (changed since it was indexed).
    """
    real_root = os.path.realpath(root) if root else ""
    problem = entry_problem(entry, root, real_root)
    if problem:
        return 404, f"not served: {problem}"
    real = os.path.realpath(os.path.join(real_root, *PurePosixPath(entry["key"]).parts))
    if not _inside(real, real_root):
        return 404, "not served: the indexed name now links outside the indexed folder"
    if Path(real).suffix.lower() not in SERVED_SUFFIXES:
        return 404, "not served: the indexed name now links to a file that is not audio"
    recorded = entry.get("path")
    if isinstance(recorded, str) and os.path.normpath(recorded) != real:
        return 409, _STALE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        return 404, "the indexed file is not there any more; re-scan"
    except OSError:
        return 404, "the indexed file cannot be opened"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _refuse(fd, 404, "not served: the indexed name is not a regular file")
        if (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
            return _refuse(fd, 409, _STALE)
        for field, value in (("dev", st.st_dev), ("ino", st.st_ino)):
            if entry.get(field) is not None and entry.get(field) != value:
                return _refuse(fd, 409, _STALE)
    except BaseException:
        os.close(fd)
        raise
    return ServedFile(fd, real, int(st.st_size), (int(st.st_dev), int(st.st_ino), int(st.st_size),
                                                  int(st.st_mtime_ns)))


def _refuse(fd: int, status: int, reason: str) -> tuple[int, str]:
    os.close(fd)
    return status, reason
