"""SHA-256 of weight files, hashed once per process per (path, size, modification time).

A 1.6-GB official file takes seconds to hash; a process that loads it again (or verifies it on every
``fetch``) reuses the digest as long as the file's size and ``st_mtime_ns`` are unchanged. Any write to the
file changes its modification time, so an edited or replaced file is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["sha256_file", "sha256_file_cached"]

_CACHE: dict[tuple[str, int, int, int], str] = {}
_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (read in ``chunk``-byte blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file_cached(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered in this process for the file's (path, inode, size, mtime)."""
    st = Path(path).stat()
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _LOCK:
        known = _CACHE.get(key)
    if known is not None:
        return known
    digest = sha256_file(path)
    with _LOCK:
        _CACHE[key] = digest
    return digest
