"""Download, verify and cache registered models; turn a name or a path into a local weight file (a small hub).

``resolve_model_source("m2d-vit-base-mr7")`` → ``<home>/models/m2d-vit-base-mr7/<official folder>/checkpoint-300.pth``
(home: :func:`kikimimi.checkpoints.home.cache_root`). What happens on the way:

- **one process at a time** per model (a ``filelock`` lock file in ``<home>/locks``); a second process waits,
  then finds the finished download;
- **licence gate**: the first download of a gated (official) file prints its licence summary and needs
  ``accept_licence=True``, ``--accept-licence`` or ``KIKIMIMI_ACCEPT_LICENCE=1``;
- **download** with ``requests`` (a progress bar) into a temporary ``.<file>.kikimimi-<pid>-<hex>.part`` file,
  retried with exponential back-off, under an overall deadline (:data:`DEADLINE_S`, ``KIKIMIMI_DOWNLOAD_DEADLINE_S``)
  and a low-speed limit (fewer than :data:`LOW_SPEED_BYTES` in :data:`LOW_SPEED_WINDOW_S` seconds fails the
  attempt); a full disk is reported as such (:class:`DiskFullError`), never retried as a network error;
- **a transfer is complete only if it can prove it**: its length must equal the ``Content-Length`` the server
  sent, and its SHA-256 the registry's pin (or, for a kikimimi folder, the ``weights_sha256`` of its
  ``config.json``). A body with neither a ``Content-Length`` nor a published hash cannot be told from a cut one:
  it is refused, nothing cached;
- **verification**: the SHA-256 (and size) the registry knows, else the hash seen now is recorded (trust on
  first use) in ``<model folder>/kikimimi-download.json``; every later load re-hashes the files and refuses
  a changed one;
- **safe unpacking** of zips: absolute paths, ``..`` members, symlinks, too many members, a member or a total
  over the limits, member sizes that do not fit in the archive, and zip bombs (every member's
  uncompressed size is bounded by :data:`MAX_RATIO` × its compressed size + :data:`RATIO_SLACK_BYTES`, with
  no size exemption) are refused before anything is written; a body that is no zip is one line of error;
- **atomic install**: everything is assembled in a hidden staging folder that is renamed into place as a
  whole, so an interrupted run leaves no folder that looks complete; the ``.part`` files and staging folders
  of killed runs (their writer's pid is gone) are removed by the next fetch;
- **offline** (``KIKIMIMI_OFFLINE=1``, or the network failing after the retries): the cache only; otherwise
  one message naming the URL and the place to put a hand-downloaded file (``<home>/downloads/<file name>``,
  verified and unpacked on the next load).

``KIKIMIMI_MODEL_MIRROR=http://host:port`` replaces the ``https://github.com`` prefix of official URLs (a
mirror, or the local server of the tests).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import filelock
import requests
import urllib3
from tqdm import tqdm

from kikimimi.checkpoints.digest import sha256_file, sha256_file_cached
from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.hf_hub import download_hf, is_hf_uri
from kikimimi.checkpoints.home import cache_root
from kikimimi.checkpoints.registry import ModelEntry, UnknownModelError, find_entry, get_entry, packaged_sums
from kikimimi.fileio import atomic_write_json, pid_alive

__all__ = [
    "ACCEPT_ENV",
    "DEADLINE_ENV",
    "DiskFullError",
    "FetchError",
    "HashMismatchError",
    "LicenceNotAcceptedError",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "OfflineError",
    "UnsafeArchiveError",
    "cached_weights",
    "clean_leftovers",
    "download_url",
    "fetch",
    "find_weight_file",
    "manual_path",
    "model_dir",
    "read_record",
    "remove",
    "resolve_model_source",
    "safe_extract",
    "safe_extract_tar",
]

MIRROR_ENV = "KIKIMIMI_MODEL_MIRROR"
OFFLINE_ENV = "KIKIMIMI_OFFLINE"
ACCEPT_ENV = "KIKIMIMI_ACCEPT_LICENCE"
GITHUB = "https://github.com"
RECORD_NAME = "kikimimi-download.json"

#: Download attempts and the first back-off delay (doubled after each failure), seconds.
RETRIES = 3
BACKOFF_S = 2.0
#: Seconds without data before a connection counts as failed.
TIMEOUT_S = 60.0
#: Overall limit of one download (every attempt and back-off together), seconds; ``KIKIMIMI_DOWNLOAD_DEADLINE_S``
#: overrides it.
DEADLINE_S = 6 * 3600.0
DEADLINE_ENV = "KIKIMIMI_DOWNLOAD_DEADLINE_S"
#: Low-speed limit (as curl's ``--speed-limit``/``--speed-time``): an attempt that receives fewer than
#: LOW_SPEED_BYTES within any LOW_SPEED_WINDOW_S seconds fails (and is retried while the deadline allows).
LOW_SPEED_BYTES = 16 * 1024
LOW_SPEED_WINDOW_S = 60.0
#: Zip limits: total uncompressed bytes, one member's uncompressed bytes, members; and the bomb guard: every
#: member's uncompressed size must be at most MAX_RATIO × its compressed size + RATIO_SLACK_BYTES (the slack
#: lets a tiny config file of repeated bytes through; with MAX_MEMBERS it bounds a bomb to ~4 MB).
MAX_ARCHIVE_BYTES = 32 * 2**30
MAX_MEMBER_BYTES = 16 * 2**30
MAX_MEMBERS = 1000
MAX_RATIO = 100.0
RATIO_SLACK_BYTES = 4096
#: Marker in the names of kikimimi's temporary downloads and staging folders: ``.<stem>.kikimimi-<pid>-<hex>``.
TEMP_MARK = "kikimimi"
_LEFTOVER_RE = re.compile(rf"^\..+\.{TEMP_MARK}-(\d+)-[0-9a-f]{{8}}\.(part|staging)$")
_CHUNK = 1 << 20
_log = logging.getLogger(__name__)
#: How long a process waits for another one downloading the same model, seconds.
LOCK_TIMEOUT_S = 6 * 3600.0
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt")
FOLDER_FILES = ("config.json", "model.safetensors")


class FetchError(CheckpointError):
    """A registered model could not be downloaded, verified or unpacked."""


class LicenceNotAcceptedError(FetchError):
    """The first download of a gated file needs an explicit acceptance of its licence."""


class OfflineError(FetchError):
    """Not cached, and offline (``KIKIMIMI_OFFLINE=1``) or the network failed."""


class HashMismatchError(FetchError):
    """A download or a cached file whose SHA-256 / size differs from the known or recorded one."""


class UnsafeArchiveError(FetchError):
    """A zip with absolute paths, ``..`` members, symlinks or an oversized / bomb-like content."""


class DiskFullError(FetchError):
    """The disk filled up while a download or an unpacked model was written (not a network error)."""


class _TransferFailed(Exception):
    """One download attempt failed in a way a retry may fix (cut, too slow, refused connection…)."""


class _HTTPRefused(Exception):
    """The server answered a 4xx that a retry will not change."""


def _free_mb(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(folder).free / 1e6:.0f} MB free"
        except OSError:
            continue
    return "free space unknown"


def disk_full_error(path: Path, exc: OSError) -> DiskFullError | None:
    """A :class:`DiskFullError` for an ``ENOSPC``/``EDQUOT`` error while writing ``path``, else ``None``."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFullError(None, f"disk full while writing {path} ({_free_mb(path.parent)}); free some space "
                               "and run again")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def models_dir() -> Path:
    return cache_root() / "models"


def model_dir(entry: ModelEntry) -> Path:
    """``<home>/models/<name>``: the unpacked model and its download record."""
    return models_dir() / entry.name


def manual_path(entry: ModelEntry) -> Path:
    """Where a hand-downloaded file is picked up: ``<home>/downloads/<file name of the URL>``."""
    return cache_root() / "downloads" / (entry.file_name or entry.name)


def download_url(entry: ModelEntry, file: str | None = None) -> str:
    """The URL to fetch (``file`` below a folder base URL), with the ``KIKIMIMI_MODEL_MIRROR`` prefix applied."""
    url = entry.url.rstrip("/") + "/" + file if file else entry.url
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and url.startswith(GITHUB + "/"):
        url = mirror.rstrip("/") + url[len(GITHUB):]
    return url


def read_record(entry: ModelEntry) -> dict[str, Any] | None:
    """The download record of a cached model, or ``None`` when it is not (completely) cached."""
    path = model_dir(entry) / RECORD_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_weights(entry: ModelEntry) -> Path | None:
    """The cached weight file / folder without re-hashing (for listings), or ``None``."""
    if entry.is_local:
        path = Path(entry.url)
        return path if path.exists() else None
    record = read_record(entry)
    if record is None:
        return None
    path = model_dir(entry) / record["weights"]
    return path if path.exists() else None


# ------------------------------------------------------------------------------------------ locking
@contextmanager
def _locked(entry: ModelEntry) -> Iterator[None]:
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder / f"{entry.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"kikimimi: waiting for another process fetching '{entry.name}' (lock {lock.lock_file})",
              file=sys.stderr)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except filelock.Timeout as exc:
            raise FetchError(None, f"'{entry.name}': gave up waiting {LOCK_TIMEOUT_S:.0f} s for the lock "
                                   f"{lock.lock_file}; delete it if no kikimimi process is running") from exc
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------ licence
def _licence_text(entry: ModelEntry) -> str:
    info = entry.licence_info
    return f"{info.title}: {info.summary} Full licence: {info.url}."


def _licence_gate(entry: ModelEntry, accept_licence: bool) -> None:
    info = entry.licence_info
    if not info.gated:
        return
    if not (accept_licence or _env_flag(ACCEPT_ENV)):
        raise LicenceNotAcceptedError(
            None,
            f"'{entry.name}' is distributed under the {_licence_text(entry)} To accept it and download "
            f"{download_url(entry)}, pass accept_licence=True (Python), --accept-licence (command line) or set "
            f"{ACCEPT_ENV}=1.",
        )
    print(f"kikimimi: '{entry.name}': licence accepted — {_licence_text(entry)}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ download
def _manual_hint(entry: ModelEntry) -> str:
    if entry.kind == "folder":
        where = model_dir(entry)
        return (f"download {', '.join(download_url(entry, f) for f in FOLDER_FILES)} yourself into {where}/ "
                f"and register that folder instead")
    return (f"download {download_url(entry)} yourself and put it at {manual_path(entry)} (it is verified and "
            "unpacked on the next load)")


def deadline_s() -> float:
    """The overall download deadline in seconds (``KIKIMIMI_DOWNLOAD_DEADLINE_S``, else :data:`DEADLINE_S`)."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            raise FetchError(None, f"{DEADLINE_ENV}={text!r} is not a number of seconds") from None
        if value > 0:
            return value
    return float(DEADLINE_S)


def _temp_name(stem: str, kind: str) -> str:
    """``.<stem>.kikimimi-<pid>-<8 hex>.<kind>``: a name only kikimimi makes, with its writer's pid."""
    return f".{stem}.{TEMP_MARK}-{os.getpid()}-{secrets.token_hex(4)}.{kind}"


def clean_leftovers() -> list[Path]:
    """Remove the ``.part`` files (``<home>/downloads``) and staging folders (``<home>/models``) of killed runs.

    Only names made by :func:`_temp_name` are considered, and only those whose writer (the pid in the name) is no
    longer alive; anything else is left alone. Returns what was removed.
    """
    removed = []
    for folder in (cache_root() / "downloads", models_dir()):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _LEFTOVER_RE.match(name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            path = folder / name
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                _log.debug("could not remove the leftover %s (%s)", path, exc)
                continue
            removed.append(path)
    if removed:
        print(f"kikimimi: removed {len(removed)} leftover(s) of interrupted downloads "
              f"({', '.join(p.name for p in removed[:3])}{', …' if len(removed) > 3 else ''})", file=sys.stderr)
    return removed


@dataclass
class Transfer:
    """A finished download: the temporary file, its size and SHA-256, and the ``Content-Length`` sent (or
    ``None`` when the server sent none)."""

    path: Path
    size: int
    sha256: str
    content_length: int | None


def _open_part(path: Path) -> IO[bytes]:
    """Create the temporary download file (exclusively; a seam for the disk-full test)."""
    return open(path, "xb")


def _network_errors() -> tuple[type[BaseException], ...]:
    return (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _download_once(url: str, folder: Path, stem: str, progress: bool, deadline: float) -> Transfer:
    """One attempt: ``url`` → ``folder/.<stem>.kikimimi-<pid>-<hex>.part`` (removed on any failure).

    Raises:
        _TransferFailed: refused/cut connection, timeout, too slow, deadline reached, length short of the
            ``Content-Length``: worth a retry.
        _HTTPRefused: an HTTP 4xx other than 408/429 (not worth a retry).
        DiskFullError: ENOSPC while writing. FetchError: another local write error, or a body sent with a
            ``Content-Encoding`` (its bytes are not the file's).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / _temp_name(stem, "part")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _TransferFailed("the deadline passed")
    wait = max(0.05, min(TIMEOUT_S, remaining))
    digest, received = hashlib.sha256(), 0
    headers = {"User-Agent": "kikimimi", "Accept-Encoding": "identity"}
    try:
        with requests.get(url, stream=True, timeout=(wait, wait), headers=headers) as response:
            status = response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise _HTTPRefused(f"{url} answered HTTP {status}")
            if status >= 400:
                raise _TransferFailed(f"HTTP {status}")
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise FetchError(None, f"{url} was sent with Content-Encoding {encoding!r}; its length and hash "
                                       "cannot be checked against the file")
            length_text = response.headers.get("Content-Length")
            length = int(length_text) if length_text and length_text.strip().isdigit() else None
            bar = tqdm(total=length, unit="B", unit_scale=True, desc=stem, disable=not progress, leave=False)
            try:
                out = _open_part(tmp)
            except OSError as exc:
                raise disk_full_error(tmp, exc) or FetchError(tmp, f"cannot write ({exc.strerror or exc})") from exc
            with out, bar:
                window_start, window_bytes = time.monotonic(), 0
                while True:
                    chunk = response.raw.read1(_CHUNK, decode_content=False)
                    now = time.monotonic()
                    if chunk:
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise disk_full_error(tmp, exc) or FetchError(
                                tmp, f"cannot write ({exc.strerror or exc})") from exc
                        digest.update(chunk)
                        received += len(chunk)
                        window_bytes += len(chunk)
                        bar.update(len(chunk))
                    if length is not None and received > length:
                        raise _TransferFailed(f"more bytes than the Content-Length {length}")
                    if now > deadline:
                        raise _TransferFailed(f"the deadline passed after {received} bytes")
                    if now - window_start >= LOW_SPEED_WINDOW_S:
                        if window_bytes < LOW_SPEED_BYTES:
                            raise _TransferFailed(f"too slow: {window_bytes} bytes in the last "
                                                  f"{now - window_start:.0f} s (limit {LOW_SPEED_BYTES} per "
                                                  f"{LOW_SPEED_WINDOW_S:g} s)")
                        window_start, window_bytes = now, 0
                    if not chunk:
                        break
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise disk_full_error(tmp, exc) or FetchError(tmp, f"cannot write ({exc.strerror or exc})") \
                        from exc
        if length is not None and received != length:
            raise _TransferFailed(f"cut short: {received} of {length} bytes (Content-Length)")
    except (FetchError, _TransferFailed, _HTTPRefused):
        tmp.unlink(missing_ok=True)
        raise
    except _network_errors() as exc:
        tmp.unlink(missing_ok=True)
        raise _TransferFailed(str(exc) or type(exc).__name__) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Transfer(tmp, received, digest.hexdigest(), length)


def _download(entry: ModelEntry, url: str, folder: Path, stem: str, progress: bool) -> Transfer:
    """``url`` → a complete temporary file in ``folder`` (retries with back-off inside the overall deadline);
    the caller removes it."""
    limit = deadline_s()
    deadline = time.monotonic() + limit
    last: Exception | None = None
    for attempt in range(1, RETRIES + 1):
        try:
            return _download_once(url, folder, stem, progress, deadline)
        except _HTTPRefused as exc:
            raise FetchError(None, f"'{entry.name}': {exc}; {_manual_hint(entry)}") from None
        except _TransferFailed as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OfflineError(None, f"'{entry.name}': {url} did not finish within the {limit:g}-s deadline "
                                     f"({DEADLINE_ENV}; last: {last}); {_manual_hint(entry)}")
        if attempt < RETRIES:
            delay = min(BACKOFF_S * 2 ** (attempt - 1), remaining)
            warnings.warn(f"'{entry.name}': download attempt {attempt}/{RETRIES} of {url} failed ({last}); "
                          f"retrying in {delay:g} s", stacklevel=2)
            time.sleep(delay)
    raise OfflineError(None, f"'{entry.name}': could not download {url} after {RETRIES} attempts ({last}); "
                             f"{_manual_hint(entry)}")


# ------------------------------------------------------------------------------------------ unpacking
def _room_to_unpack(archive: Path, dest: Path, total: int, limit: int) -> Path:
    """Refuse ``total`` uncompressed bytes above ``limit`` or above the free space of ``dest`` (created); returns
    ``dest`` resolved, the root every member must stay under."""
    if total > limit:
        raise UnsafeArchiveError(archive, f"{total} bytes uncompressed (more than the limit {limit}); refused")
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DiskFullError(None, f"disk full: unpacking {archive} into {dest} needs {total / 1e6:.0f} MB "
                                  f"({free / 1e6:.0f} MB free); free some space and run again")
    return dest.resolve()


def _member_target(archive: Path, root: Path, name: str) -> Path:
    """Where member ``name`` unpacks under ``root``; refused when it would land outside it."""
    target = root.joinpath(*_member_parts(name))
    if root not in target.resolve().parents and target.resolve() != root:
        raise UnsafeArchiveError(archive, f"member {name!r} resolves outside {root}; refused")
    return target


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def open_zip(archive: Path, origin: str | None = None) -> zipfile.ZipFile:
    """``zipfile.ZipFile(archive)``, or one line of :class:`FetchError` saying what the file is instead."""
    try:
        return zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        try:
            with open(archive, "rb") as fh:
                head = fh.read(16)
            size = archive.stat().st_size
        except OSError:
            head, size = b"", 0
        what = f"{size} bytes starting with {head!r}" if size else "an empty file"
        raise FetchError(archive, f"{origin or 'the file'} is not a zip archive ({what}; {exc}); an error page "
                                  "or a cut transfer? Nothing was installed") from None


def safe_extract(archive: Path, dest: Path, *, max_bytes: int | None = None) -> list[Path]:
    """Unpack ``archive`` into ``dest`` after checking every member; returns the files written.

    Raises:
        UnsafeArchiveError: an absolute or drive path, a ``..`` member, a symlink, more than
            :data:`MAX_MEMBERS` members, a member over :data:`MAX_MEMBER_BYTES`, more than ``max_bytes``
            (default :data:`MAX_ARCHIVE_BYTES`) in total, compressed sizes that do not fit in the archive, or a
            member whose uncompressed size exceeds :data:`MAX_RATIO` × its compressed size +
            :data:`RATIO_SLACK_BYTES` (a zip bomb; no member is exempt, whatever its size).
        DiskFullError: the disk has less free space than the archive unpacks to, or fills up while writing.
        FetchError: not a readable zip.
    """
    limit = MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes
    archive_size = archive.stat().st_size
    with open_zip(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeArchiveError(archive, f"{len(infos)} members (more than {MAX_MEMBERS}); refused")
        total = packed = 0
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                raise UnsafeArchiveError(archive, f"member {name!r} has an absolute path; refused")
            if ".." in _member_parts(name):
                raise UnsafeArchiveError(archive, f"member {name!r} points outside the archive folder ('..'); "
                                                  "refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(archive, f"member {name!r} is a symbolic link; refused")
            if info.file_size > MAX_MEMBER_BYTES:
                raise UnsafeArchiveError(archive, f"member {name!r} unpacks to {info.file_size} bytes (more than "
                                                  f"the per-member limit {MAX_MEMBER_BYTES}); refused")
            if info.file_size > MAX_RATIO * info.compress_size + RATIO_SLACK_BYTES:
                ratio = info.file_size / max(info.compress_size, 1)
                raise UnsafeArchiveError(archive, f"member {name!r} expands {ratio:.0f}-fold ({info.compress_size} "
                                                  f"→ {info.file_size} bytes; limit {MAX_RATIO:g}-fold): a zip "
                                                  "bomb? refused")
            if info.header_offset + info.compress_size > archive_size:
                raise UnsafeArchiveError(archive, f"member {name!r} claims {info.compress_size} compressed bytes "
                                                  f"beyond the end of the {archive_size}-byte archive; refused")
            total += info.file_size
            packed += info.compress_size
        if packed > archive_size:
            raise UnsafeArchiveError(archive, f"its members claim {packed} compressed bytes in a {archive_size}-"
                                              "byte archive; refused")
        root = _room_to_unpack(archive, dest, total, limit)
        written = []
        for info in infos:
            target = _member_target(archive, root, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_member(zf, info, target, archive)
            written.append(target)
    return written


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Copy one member, counting: never more than its declared size (zipfile also checks size and CRC)."""
    count = 0
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while block := src.read(_CHUNK):
                count += len(block)
                if count > info.file_size:
                    raise UnsafeArchiveError(archive, f"member {info.filename!r} unpacks to more than its declared "
                                                      f"{info.file_size} bytes; refused")
                out.write(block)
    except OSError as exc:
        raise disk_full_error(target, exc) or FetchError(target, f"cannot write ({exc.strerror or exc})") from exc
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise FetchError(archive, f"member {info.filename!r} is damaged ({exc}); nothing was installed") from None


def _open_tar(archive: Path, origin: str | None = None) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """The opened tar archive (any compression) and its members, or one line of :class:`FetchError`."""
    try:
        tf = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise FetchError(archive, f"{origin or 'the file'} is not a tar archive ({exc}); an error page or a cut "
                                  "transfer? Nothing was installed") from None
    members: list[tarfile.TarInfo] = []
    try:
        for info in tf:
            members.append(info)
            if len(members) > MAX_MEMBERS:
                tf.close()
                raise UnsafeArchiveError(archive, f"more than {MAX_MEMBERS} members; refused")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        tf.close()
        raise FetchError(archive, f"{origin or 'the tar archive'} is damaged ({exc}); nothing was installed") from None
    return tf, members


def safe_extract_tar(archive: Path, dest: Path, *, max_bytes: int | None = None) -> list[Path]:
    """Unpack a tar archive (``.tgz``: gzip-compressed) into ``dest`` after checking every member, as
    :func:`safe_extract` does for a zip; returns the files written.

    Raises:
        UnsafeArchiveError: an absolute or drive path, a ``..`` member, a link, device or other non-regular member,
            more than :data:`MAX_MEMBERS` members, a member over :data:`MAX_MEMBER_BYTES` or more than
            ``max_bytes`` (default :data:`MAX_ARCHIVE_BYTES`) in total.
        DiskFullError: the disk has less free space than the archive unpacks to, or fills up while writing.
        FetchError: not a readable tar archive.
    """
    limit = MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes
    tf, members = _open_tar(archive)
    with tf:
        total = 0
        for info in members:
            name = info.name
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                raise UnsafeArchiveError(archive, f"member {name!r} has an absolute path; refused")
            if ".." in _member_parts(name):
                raise UnsafeArchiveError(archive, f"member {name!r} points outside the archive folder ('..'); "
                                                  "refused")
            if not (info.isfile() or info.isdir()):
                raise UnsafeArchiveError(archive, f"member {name!r} is a link or a special file; refused")
            if info.size > MAX_MEMBER_BYTES:
                raise UnsafeArchiveError(archive, f"member {name!r} unpacks to {info.size} bytes (more than the "
                                                  f"per-member limit {MAX_MEMBER_BYTES}); refused")
            total += info.size if info.isfile() else 0
        root = _room_to_unpack(archive, dest, total, limit)
        written = []
        for info in members:
            target = _member_target(archive, root, info.name)
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with tf.extractfile(info) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out, _CHUNK)
            except OSError as exc:
                problem = FetchError(target, f"cannot write ({exc.strerror or exc})")
                raise disk_full_error(target, exc) or problem from exc
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise FetchError(archive, f"member {info.name!r} is damaged ({exc}); nothing was installed") from None
            written.append(target)
    return written


def _single_top_folder(archive: Path, origin: str | None = None, kind: str = "zip") -> bool:
    if kind == "tgz":
        tf, members = _open_tar(archive, origin)
        tf.close()
        names = [(_member_parts(m.name), m.isdir()) for m in members]
    else:
        with open_zip(archive, origin) as zf:
            names = [(_member_parts(i.filename), i.is_dir()) for i in zf.infolist()]
    tops = {parts[0] for parts, _ in names if parts}
    return len(tops) == 1 and all(len(parts) > 1 or is_dir for parts, is_dir in names)


def _check_inner(entry: ModelEntry, weights: Path, digest: str | None = None) -> None:
    """Refuse an unpacked weight file whose SHA-256 is not the registry's ``inner_sha256`` pin."""
    if entry.inner_sha256 is None:
        return
    seen = digest or sha256_file(weights)
    if seen != entry.inner_sha256:
        raise HashMismatchError(None, f"'{entry.name}': the weight file {weights.name} inside the archive has "
                                         f"SHA-256 {seen}, the registry expects {entry.inner_sha256}; refused, "
                                         "nothing cached")


def find_weight_file(root: Path, inner: str | None = None) -> Path:
    """The weight file of an unpacked release: ``inner`` if present, else the single weight file, else the
    highest ``checkpoint-N.pth``.

    Raises:
        FetchError: no weight file, or several without a ``checkpoint-N`` order.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if inner is not None:
        named = [p for p in files if p.name == inner]
        if named:
            return named[0]
    if len(files) == 1:
        return files[0]
    numbered = [(int(m.group(1)), p) for p in files if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name))]
    if numbered:
        return max(numbered)[1]
    listing = ", ".join(str(p.relative_to(root)) for p in files) or "none"
    raise FetchError(root, f"cannot tell which weight file to load (weight files: {listing})")


# ------------------------------------------------------------------------------------------ records
def _file_facts(root: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    return {p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size} for p in files}


def _verify(entry: ModelEntry, record: dict[str, Any]) -> Path:
    """Re-hash the cached files against the record (and the registry's pin); the weight path."""
    root = model_dir(entry)
    if "verified_by" not in record:
        _log.debug("%s: downloaded before transfers were proved complete (no Content-Length / pin recorded); "
                   "verified against its recorded hashes only", root)
    if entry.sha256 is not None and record.get("source_sha256") != entry.sha256:
        raise HashMismatchError(root, f"the cached '{entry.name}' was downloaded with SHA-256 "
                                      f"{record.get('source_sha256')}, but the registry pins {entry.sha256}; run "
                                      f"`kikimimi models remove {entry.name}` and fetch it again")
    inner = record.get("files", {}).get(record.get("weights"), {}).get("sha256")
    if entry.inner_sha256 is not None and inner != entry.inner_sha256:
        raise HashMismatchError(root, f"the cached '{entry.name}' weight file has SHA-256 {inner}, but the registry "
                                      f"expects {entry.inner_sha256}; run `kikimimi models remove {entry.name}` and "
                                      "fetch it again")
    for rel, facts in record.get("files", {}).items():
        path = root / rel
        if not path.is_file():
            raise HashMismatchError(path, f"file of the cached '{entry.name}' is missing; run "
                                          f"`kikimimi models remove {entry.name}` and fetch it again")
        size = path.stat().st_size
        digest = sha256_file_cached(path) if size == facts["size"] else None
        if digest != facts["sha256"]:
            seen = f"SHA-256 {digest}" if digest else f"size {size} bytes"
            want = f"SHA-256 {facts['sha256']}" if digest else f"{facts['size']} bytes"
            raise HashMismatchError(path, f"changed since '{entry.name}' was downloaded on "
                                          f"{record.get('downloaded_at', '?')}: {seen}, recorded {want}; refused. "
                                          f"If you did not change it on purpose, run `kikimimi models remove "
                                          f"{entry.name}` and fetch it again")
    return root / record["weights"]


def _check_download(entry: ModelEntry, size: int, digest: str, origin: str) -> None:
    if entry.size_bytes is not None and size != entry.size_bytes:
        raise HashMismatchError(None, f"'{entry.name}': {origin} has {size} bytes, the registry says "
                                      f"{entry.size_bytes}; refused, nothing cached")
    if entry.sha256 is not None and digest != entry.sha256:
        raise HashMismatchError(None, f"'{entry.name}': {origin} has SHA-256 {digest}, the registry says "
                                      f"{entry.sha256}; refused, nothing cached")


def _proof(entry: ModelEntry, transfer: Transfer, url: str, published_sha256: str | None) -> str:
    """How ``transfer`` is known to be complete (``"sha256"`` or ``"content-length"``), else refuse it.

    A published hash (already compared) proves the bytes; a ``Content-Length`` equal to the bytes received
    (checked while downloading) proves the length. A body with neither could have been cut anywhere.
    """
    if published_sha256 is not None:
        return "sha256"
    if transfer.content_length is not None:
        return "content-length"
    raise FetchError(None, f"'{entry.name}': {url} was sent without a Content-Length and no SHA-256 is published "
                           f"for it, so a cut transfer cannot be told from a complete one ({transfer.size} bytes "
                           f"received); refused, nothing cached. Pin its hash (register_model(..., sha256=...)) "
                           f"or {_manual_hint(entry)}")


def _install(entry: ModelEntry, staging: Path, weights: Path, source_sha256: str, source_size: int,
             url: str, accepted: bool, verified_by: str, content_length: int | None) -> Path:
    """Write the record into ``staging`` and rename it to the model folder; the installed weight path."""
    files = [p for p in staging.rglob("*") if p.is_file()]
    record = {
        "name": entry.name,
        "url": url,
        "kind": entry.kind,
        "source_sha256": source_sha256,
        "source_size": source_size,
        "content_length": content_length,
        "verified_by": verified_by,
        "weights": weights.relative_to(staging).as_posix(),
        "files": _file_facts(staging, files),
        "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "licence": entry.licence,
        "licence_accepted": accepted,
    }
    atomic_write_json(staging / RECORD_NAME, record)
    final = model_dir(entry)
    if final.exists():  # an incomplete or removed-record leftover (we hold the lock)
        shutil.rmtree(final)
    os.replace(staging, final)
    return final / record["weights"]


def _fetch_folder(entry: ModelEntry, staging: Path, progress: bool, accepted: bool) -> Path:
    """A kikimimi folder: ``config.json`` (complete when it parses) then ``model.safetensors``, proved by the
    registry's pin, else the ``weights_sha256`` its ``config.json`` records, else its ``Content-Length``."""
    config_url = download_url(entry, "config.json")
    config = _download(entry, config_url, staging, "config.json", progress)
    os.replace(config.path, staging / "config.json")
    try:
        meta = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FetchError(None, f"'{entry.name}': {config_url} is not a readable config.json ({exc}); "
                               "refused, nothing cached") from None
    recorded = meta.get("weights_sha256") if isinstance(meta, dict) else None
    weights_url = download_url(entry, "model.safetensors")
    transfer = _download(entry, weights_url, staging, "model.safetensors", progress)
    weights = staging / "model.safetensors"
    os.replace(transfer.path, weights)
    _check_download(entry, transfer.size, transfer.sha256, "model.safetensors")
    if isinstance(recorded, str) and recorded != transfer.sha256:
        raise HashMismatchError(None, f"'{entry.name}': {weights_url} has SHA-256 {transfer.sha256}, its "
                                      f"config.json records {recorded}; refused, nothing cached")
    published = entry.sha256 or (recorded if isinstance(recorded, str) else None)
    verified_by = _proof(entry, transfer, weights_url, published)
    return _install(entry, staging, staging, transfer.sha256, transfer.size, download_url(entry), accepted,
                    verified_by, transfer.content_length)


def fetch(entry: ModelEntry | str, *, accept_licence: bool = False, progress: bool = True) -> Path:
    """A registered model's local weight file (official) or folder (kikimimi), downloading it if needed.

    Args:
        entry: a :class:`ModelEntry` or a registered name / alias.
        accept_licence: accept the licence of a gated file on its first download (also
            ``KIKIMIMI_ACCEPT_LICENCE=1``).
        progress: show a progress bar while downloading (stderr).

    Raises:
        LicenceNotAcceptedError, OfflineError, HashMismatchError, UnsafeArchiveError, DiskFullError, FetchError
        (all :class:`~kikimimi.checkpoints.CheckpointError`).
    """
    if isinstance(entry, str):
        entry = get_entry(entry)
    if entry.is_local:
        path = Path(entry.url)
        if entry.packaged:
            return _check_packaged(entry, path)
        if not path.exists():
            raise FetchError(path, f"registered as '{entry.name}' but missing")
        return path
    with _locked(entry):
        clean_leftovers()
        record = read_record(entry)
        if record is not None:
            return _verify(entry, record)
        models_dir().mkdir(parents=True, exist_ok=True)
        staging = models_dir() / _temp_name(entry.name, "staging")
        try:
            staging.mkdir()
            return _fetch_into(entry, staging, accept_licence, progress)
        except OSError as exc:
            full = disk_full_error(Path(exc.filename or staging), exc)
            if full is None:
                raise
            raise full from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _check_packaged(entry: ModelEntry, folder: Path) -> Path:
    """A packaged model's folder, once its ``model.safetensors`` (and every other file its ``SHA256SUMS`` lists: a
    captioner's language model and tokenizer) matches the SHA-256 recorded there.

    Raises:
        FetchError: the folder is not in this installation, or has no ``SHA256SUMS``.
        HashMismatchError: the weights differ from the recorded SHA-256 (a damaged or replaced file).
    """
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FetchError(folder, f"the packaged model '{entry.name}' is not in this installation (no "
                                 "model.safetensors); reinstall kikimimi, or build the folder with "
                                 "benchmarks/open_suite/ship_open_model.py")
    if entry.sha256 is None:
        raise FetchError(folder, f"the packaged model '{entry.name}' has no SHA256SUMS (or a malformed one); "
                                 "reinstall kikimimi")
    seen = sha256_file_cached(weights)
    if seen != entry.sha256:
        raise HashMismatchError(weights, f"SHA-256 {seen}, but SHA256SUMS of the packaged model '{entry.name}' "
                                         f"records {entry.sha256}; the file is damaged: reinstall kikimimi")
    for name, digest in packaged_sums(folder).items():  # the other listed files (a captioner's language model…)
        path = folder / name
        seen = sha256_file_cached(path) if path.is_file() else "missing"
        if name != "model.safetensors" and seen != digest:
            raise HashMismatchError(path, f"SHA-256 {seen}, but SHA256SUMS of the packaged model '{entry.name}' "
                                          f"records {digest}; the file is damaged: reinstall kikimimi")
    return folder


def _fetch_into(entry: ModelEntry, staging: Path, accept_licence: bool, progress: bool) -> Path:
    if entry.kind == "folder":
        if _env_flag(OFFLINE_ENV):
            raise OfflineError(None, f"'{entry.name}': not in the cache and {OFFLINE_ENV}=1; {_manual_hint(entry)}")
        _licence_gate(entry, accept_licence)
        return _fetch_folder(entry, staging, progress, accept_licence)
    manual = manual_path(entry)
    downloaded: Path | None = None
    if manual.is_file():
        source, origin, url = manual, str(manual), f"file://{manual}"
        digest, size = sha256_file(source), source.stat().st_size
        _check_download(entry, size, digest, origin)
        verified_by, content_length = "manual file", None
    else:
        if _env_flag(OFFLINE_ENV):
            raise OfflineError(None, f"'{entry.name}': not in the cache and {OFFLINE_ENV}=1; {_manual_hint(entry)}")
        _licence_gate(entry, accept_licence)
        url = download_url(entry)
        transfer = _download(entry, url, manual.parent, entry.file_name, progress)
        downloaded = source = transfer.path
        origin = f"the download of {url}"
        digest, size, content_length = transfer.sha256, transfer.size, transfer.content_length
    try:
        if downloaded is not None:
            _check_download(entry, size, digest, origin)
            verified_by = _proof(entry, transfer, url, entry.sha256)
        if entry.kind in ("zip", "tgz"):
            dest = staging if _single_top_folder(source, origin, entry.kind) else staging / entry.folder_name
            (safe_extract_tar if entry.kind == "tgz" else safe_extract)(source, dest)
            weights = find_weight_file(staging, entry.inner)
            _check_inner(entry, weights)
        else:
            weights = staging / entry.file_name
            shutil.copyfile(source, weights)
        path = _install(entry, staging, weights, digest, size, url, accept_licence, verified_by, content_length)
    finally:
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
    if downloaded is None:
        manual.unlink(missing_ok=True)  # consumed: the verified copy now lives in the model folder
    return path


def remove(entry: ModelEntry | str) -> bool:
    """Delete a cached model (and a hand-placed download of it); ``True`` when something was removed."""
    if isinstance(entry, str):
        entry = get_entry(entry)
    if entry.is_local:
        return False
    with _locked(entry):
        removed = False
        if model_dir(entry).exists():
            shutil.rmtree(model_dir(entry))
            removed = True
        if entry.kind != "folder" and manual_path(entry).is_file():
            manual_path(entry).unlink()
            removed = True
        return removed


# ------------------------------------------------------------------------------------------ resolver
def _looks_like_name(text: str) -> bool:
    return bool(text) and "/" not in text and os.sep not in text and Path(text).suffix.lower() not in (
        *WEIGHT_SUFFIXES, ".safetensors", ".zip", ".json", ".bin")


def resolve_model_source(source: str | os.PathLike, *, accept_licence: bool = False, progress: bool = True) -> Path:
    """A path to load from: an existing path as it is; a registered name (or alias) fetched into the cache;
    ``hf://owner/name[@revision]`` downloaded into the Hugging Face cache (:func:`~kikimimi.checkpoints.hf_hub.
    download_hf`).

    Raises:
        UnknownModelError: ``source`` is neither an existing path nor a registered name but looks like a name
            (no folder separator, no weight-file suffix); the message lists close matches.
        FetchError (and subclasses): see :func:`fetch`.
    """
    if is_hf_uri(source):
        return download_hf(str(source), progress=progress)
    path = Path(source)
    if path.exists():
        return path
    text = os.fspath(source)
    entry = find_entry(text)
    if entry is None:
        if _looks_like_name(text):
            try:
                get_entry(text)
            except UnknownModelError as exc:
                raise UnknownModelError(text, f"no such file or folder, and {exc.reason}") from None
        return path
    return fetch(entry, accept_licence=accept_licence, progress=progress)
