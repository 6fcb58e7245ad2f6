"""Download, verify and cache registered models; turn a name or a path into a local weight file (a small hub).

``resolve_model_source("m2d-vit-base-mr7")`` → ``<home>/models/m2d-vit-base-mr7/<official folder>/checkpoint-300.pth``
(home: :func:`kikimimi.checkpoints.home.cache_root`). What happens on the way:

- **one process at a time** per model (a ``filelock`` lock file in ``<home>/locks``); a second process waits,
  then finds the finished download;
- **licence gate**: the first download of a gated (official) file prints its licence summary and needs
  ``accept_licence=True``, ``--accept-licence`` or ``KIKIMIMI_ACCEPT_LICENCE=1``;
- **download** with ``pooch``'s HTTP downloader (``requests``; a progress bar; a transfer cut short of its
  ``Content-Length`` is an error) into a temporary ``*.part`` file, retried with exponential back-off;
- **verification**: the SHA-256 (and size) the registry knows, else the hash seen now is recorded (trust on
  first use) in ``<model folder>/kikimimi-download.json``; every later load re-hashes the files and refuses
  a changed one;
- **safe unpacking** of zips: absolute paths, ``..`` members, symlinks, too many members, oversized totals and
  zip bombs (uncompressed/compressed ratio) are refused before anything is written;
- **atomic install**: everything is assembled in a hidden staging folder that is renamed into place as a
  whole, so an interrupted run leaves no folder that looks complete;
- **offline** (``KIKIMIMI_OFFLINE=1``, or the network failing after the retries): the cache only; otherwise
  one message naming the URL and the place to put a hand-downloaded file (``<home>/downloads/<file name>``,
  verified and unpacked on the next load).

``KIKIMIMI_MODEL_MIRROR=http://host:port`` replaces the ``https://github.com`` prefix of official URLs (a
mirror, or the local server of the tests).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import pooch

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.home import cache_root
from kikimimi.checkpoints.registry import ModelEntry, UnknownModelError, find_entry, get_entry
from kikimimi.fileio import atomic_write_json

__all__ = [
    "ACCEPT_ENV",
    "FetchError",
    "HashMismatchError",
    "LicenceNotAcceptedError",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "OfflineError",
    "UnsafeArchiveError",
    "cached_weights",
    "download_url",
    "fetch",
    "find_weight_file",
    "manual_path",
    "model_dir",
    "read_record",
    "remove",
    "resolve_model_source",
    "safe_extract",
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
#: Zip limits: total uncompressed bytes, members, uncompressed/compressed ratio of a member > 1 MiB.
MAX_ARCHIVE_BYTES = 32 * 2**30
MAX_MEMBERS = 1000
MAX_RATIO = 100.0
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


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _download_once(url: str, folder: Path, stem: str, progress: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{stem}.", suffix=".part", dir=folder)
    os.close(fd)
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S,
                                      headers={"User-Agent": "kikimimi"})
    try:
        downloader(url, tmp, None)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _download(entry: ModelEntry, url: str, folder: Path, stem: str, progress: bool) -> Path:
    """``url`` → a complete temporary file in ``folder`` (retries with back-off); the caller removes it."""
    last: Exception | None = None
    for attempt in range(1, RETRIES + 1):
        try:
            return _download_once(url, folder, stem, progress)
        except OSError as exc:  # requests' errors are OSErrors: refused/cut connection, timeout, short transfer
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", 0) or 0
            if 400 <= status < 500 and status not in (408, 429):
                raise FetchError(None, f"'{entry.name}': {url} answered HTTP {status}; {_manual_hint(entry)}") from exc
            last = exc
        if attempt < RETRIES:
            delay = BACKOFF_S * 2 ** (attempt - 1)
            warnings.warn(f"'{entry.name}': download attempt {attempt}/{RETRIES} of {url} failed ({last}); "
                          f"retrying in {delay:g} s", stacklevel=2)
            time.sleep(delay)
    raise OfflineError(None, f"'{entry.name}': could not download {url} after {RETRIES} attempts ({last}); "
                             f"{_manual_hint(entry)}")


# ------------------------------------------------------------------------------------------ unpacking
def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def safe_extract(archive: Path, dest: Path, *, max_bytes: int | None = None) -> list[Path]:
    """Unpack ``archive`` into ``dest`` after checking every member; returns the files written.

    Raises:
        UnsafeArchiveError: an absolute or drive path, a ``..`` member, a symlink, more than
            :data:`MAX_MEMBERS` members, more than ``max_bytes`` (default :data:`MAX_ARCHIVE_BYTES`) in total,
            or a member over 1 MiB whose uncompressed/compressed ratio exceeds :data:`MAX_RATIO`.
        FetchError: not a readable zip.
    """
    limit = MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(archive, f"not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeArchiveError(archive, f"{len(infos)} members (more than {MAX_MEMBERS}); refused")
        total = 0
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                raise UnsafeArchiveError(archive, f"member {name!r} has an absolute path; refused")
            if ".." in _member_parts(name):
                raise UnsafeArchiveError(archive, f"member {name!r} points outside the archive folder ('..'); "
                                                  "refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(archive, f"member {name!r} is a symbolic link; refused")
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 2**20 and ratio > MAX_RATIO:
                raise UnsafeArchiveError(archive, f"member {name!r} expands {ratio:.0f}-fold (a zip bomb?); refused")
            total += info.file_size
        if total > limit:
            raise UnsafeArchiveError(archive, f"{total} bytes uncompressed (more than the limit {limit}); refused")
        written = []
        root = dest.resolve()
        for info in infos:
            target = root.joinpath(*_member_parts(info.filename))
            if root not in target.resolve().parents and target.resolve() != root:
                raise UnsafeArchiveError(archive, f"member {info.filename!r} resolves outside {dest}; refused")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            written.append(target)
    return written


def _single_top_folder(archive: Path) -> bool:
    with zipfile.ZipFile(archive) as zf:
        tops = {_member_parts(i.filename)[0] for i in zf.infolist() if _member_parts(i.filename)}
        return len(tops) == 1 and all(len(_member_parts(i.filename)) > 1 or i.is_dir() for i in zf.infolist())


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
    if entry.sha256 is not None and record.get("source_sha256") != entry.sha256:
        raise HashMismatchError(root, f"the cached '{entry.name}' was downloaded with SHA-256 "
                                      f"{record.get('source_sha256')}, but the registry pins {entry.sha256}; run "
                                      f"`kikimimi models remove {entry.name}` and fetch it again")
    for rel, facts in record.get("files", {}).items():
        path = root / rel
        if not path.is_file():
            raise HashMismatchError(path, f"file of the cached '{entry.name}' is missing; run "
                                          f"`kikimimi models remove {entry.name}` and fetch it again")
        size = path.stat().st_size
        digest = sha256_file(path) if size == facts["size"] else None
        if digest != facts["sha256"]:
            seen = f"SHA-256 {digest}" if digest else f"size {size} bytes"
            want = f"SHA-256 {facts['sha256']}" if digest else f"{facts['size']} bytes"
            raise HashMismatchError(path, f"changed since '{entry.name}' was downloaded on "
                                          f"{record.get('downloaded_at', '?')}: {seen}, recorded {want}; refused. "
                                          f"If you did not change it on purpose, run `kikimimi models remove "
                                          f"{entry.name}` and fetch it again")
    return root / record["weights"]


def _check_download(entry: ModelEntry, path: Path, digest: str, origin: str) -> None:
    size = path.stat().st_size
    if entry.size_bytes is not None and size != entry.size_bytes:
        raise HashMismatchError(None, f"'{entry.name}': {origin} has {size} bytes, the registry says "
                                      f"{entry.size_bytes}; refused, nothing cached")
    if entry.sha256 is not None and digest != entry.sha256:
        raise HashMismatchError(None, f"'{entry.name}': {origin} has SHA-256 {digest}, the registry says "
                                      f"{entry.sha256}; refused, nothing cached")


def _install(entry: ModelEntry, staging: Path, weights: Path, source_sha256: str, source_size: int,
             url: str, accepted: bool) -> Path:
    """Write the record into ``staging`` and rename it to the model folder; the installed weight path."""
    files = [p for p in staging.rglob("*") if p.is_file()]
    record = {
        "name": entry.name,
        "url": url,
        "kind": entry.kind,
        "source_sha256": source_sha256,
        "source_size": source_size,
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


def _fetch_folder(entry: ModelEntry, staging: Path, progress: bool) -> tuple[Path, str, int, str]:
    for name in FOLDER_FILES:
        tmp = _download(entry, download_url(entry, name), staging, name, progress)
        os.replace(tmp, staging / name)
    digest = sha256_file(staging / "model.safetensors")
    _check_download(entry, staging / "model.safetensors", digest, "model.safetensors")
    return staging, digest, (staging / "model.safetensors").stat().st_size, download_url(entry)


def fetch(entry: ModelEntry | str, *, accept_licence: bool = False, progress: bool = True) -> Path:
    """A registered model's local weight file (official) or folder (kikimimi), downloading it if needed.

    Args:
        entry: a :class:`ModelEntry` or a registered name / alias.
        accept_licence: accept the licence of a gated file on its first download (also
            ``KIKIMIMI_ACCEPT_LICENCE=1``).
        progress: show a progress bar while downloading (stderr).

    Raises:
        LicenceNotAcceptedError, OfflineError, HashMismatchError, UnsafeArchiveError, FetchError (all
        :class:`~kikimimi.checkpoints.CheckpointError`).
    """
    if isinstance(entry, str):
        entry = get_entry(entry)
    if entry.is_local:
        path = Path(entry.url)
        if not path.exists():
            raise FetchError(path, f"registered as '{entry.name}' but missing")
        return path
    with _locked(entry):
        record = read_record(entry)
        if record is not None:
            return _verify(entry, record)
        models_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".staging", dir=models_dir()))
        try:
            return _fetch_into(entry, staging, accept_licence, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fetch_into(entry: ModelEntry, staging: Path, accept_licence: bool, progress: bool) -> Path:
    if entry.kind == "folder":
        if _env_flag(OFFLINE_ENV):
            raise OfflineError(None, f"'{entry.name}': not in the cache and {OFFLINE_ENV}=1; {_manual_hint(entry)}")
        _licence_gate(entry, accept_licence)
        root, digest, size, url = _fetch_folder(entry, staging, progress)
        return _install(entry, staging, root, digest, size, url, accept_licence)
    manual = manual_path(entry)
    downloaded: Path | None = None
    if manual.is_file():
        source, origin, url = manual, str(manual), f"file://{manual}"
    else:
        if _env_flag(OFFLINE_ENV):
            raise OfflineError(None, f"'{entry.name}': not in the cache and {OFFLINE_ENV}=1; {_manual_hint(entry)}")
        _licence_gate(entry, accept_licence)
        url = download_url(entry)
        downloaded = source = _download(entry, url, manual.parent, entry.file_name, progress)
        origin = f"the download of {url}"
    try:
        digest, size = sha256_file(source), source.stat().st_size
        _check_download(entry, source, digest, origin)
        if entry.kind == "zip":
            dest = staging if _single_top_folder(source) else staging / entry.folder_name
            safe_extract(source, dest)
            weights = find_weight_file(staging, entry.inner)
        else:
            weights = staging / entry.file_name
            shutil.copyfile(source, weights)
        path = _install(entry, staging, weights, digest, size, url, accept_licence)
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
    """A path to load from: an existing path as it is; a registered name (or alias) fetched into the cache.

    Raises:
        UnknownModelError: ``source`` is neither an existing path nor a registered name but looks like a name
            (no folder separator, no weight-file suffix); the message lists close matches.
        FetchError (and subclasses): see :func:`fetch`.
    """
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
