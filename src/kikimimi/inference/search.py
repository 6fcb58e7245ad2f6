"""A text-to-audio search index over a folder: CLAP audio embeddings + a manifest, updated incrementally.

An index folder holds ``manifest.json`` and one ``embeddings-<token>.npy`` (float32 ``[N, D]``, row i =
``manifest["entries"][i]``, not normalised). The manifest records the model, the indexed root, and per
file its key (path relative to the root), size in bytes and mtime in ns. Writes are atomic and ordered —
the new embeddings file first, then the manifest that names it, then the old embeddings file is removed —
so a reader always sees a consistent pair. One ``index`` at a time writes into a folder: it holds
``.kikimimi-index.lock`` (:func:`kikimimi.fileio.output_lock`); a second one stops at once with
:class:`kikimimi.fileio.OutputInUseError`.

:func:`update_index` rescans the root and re-embeds only files that are new or whose size/mtime changed;
removed files are dropped. Unreadable files are listed under ``errors`` with their stat and retried only
when they change. Progress is saved while embedding (every ``save_every_s`` seconds): a run killed midway
leaves a consistent index of the files finished so far, and the next run embeds only the rest.
:func:`search` ranks the indexed files by cosine similarity to a text query.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.fileio import atomic_save_npy, atomic_write_json, collect_audio_files, output_lock, relative_key
from kikimimi.inference.clap import cosine_similarity

__all__ = ["FORMAT", "IndexUpdate", "SearchHit", "SearchIndex", "SearchIndexError", "search", "update_index"]

FORMAT = "kikimimi-search-index/1"
MANIFEST = "manifest.json"


class SearchIndexError(ValueError):
    """The index folder is unusable or belongs to another model; the message names the folder and the fix."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: file ``key`` (relative to the indexed root), absolute ``path`` and cosine ``score``."""

    key: str
    path: str
    score: float


@dataclass
class IndexUpdate:
    """What :func:`update_index` did (lists of file keys; ``errors`` = ``(key, reason)``)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def embedded(self) -> int:
        """Number of files embedded in this update."""
        return len(self.added) + len(self.changed)


@dataclass
class SearchIndex:
    """In-memory index: ``entries`` (dicts with ``key``, ``path``, ``size``, ``mtime_ns``) and
    ``embeddings`` ``[len(entries), dim]`` float32."""

    root: str
    model: str
    dim: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    embeddings_file: str | None = None

    @classmethod
    def load(cls, index_dir: str | os.PathLike) -> SearchIndex:
        """Read an index folder; raises :class:`SearchIndexError` when it is missing or inconsistent."""
        folder = Path(index_dir)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise SearchIndexError(f"'{folder}': no {MANIFEST} (build the index with `kikimimi index DIR -m MODEL "
                                   f"-o {folder}`)")
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SearchIndexError(f"'{manifest}': unreadable manifest ({exc})") from exc
        if data.get("format") != FORMAT:
            raise SearchIndexError(f"'{manifest}': not a kikimimi search index (format {data.get('format')!r})")
        entries = data.get("entries", [])
        dim = int(data.get("dim", 0))
        emb_name = data.get("embeddings")
        if entries:
            emb_path = folder / str(emb_name)
            if not emb_path.is_file():
                raise SearchIndexError(f"'{emb_path}': embeddings file named by the manifest is missing")
            emb = np.load(emb_path, allow_pickle=False)
            if emb.shape != (len(entries), dim):
                raise SearchIndexError(f"'{emb_path}': shape {emb.shape} does not match the manifest "
                                       f"({len(entries)} files × {dim})")
        else:
            emb = np.zeros((0, dim), dtype=np.float32)
        return cls(str(data.get("root", "")), str(data.get("model", "")), dim, entries,
                   emb.astype(np.float32, copy=False), dict(data.get("errors", {})), emb_name)

    def save(self, index_dir: str | os.PathLike) -> None:
        """Write the embeddings, then the manifest naming them, then remove the previous embeddings file."""
        folder = Path(index_dir)
        folder.mkdir(parents=True, exist_ok=True)
        old = self.embeddings_file
        name = f"embeddings-{secrets.token_hex(6)}.npy"
        atomic_save_npy(folder / name, np.ascontiguousarray(self.embeddings, dtype=np.float32))
        atomic_write_json(folder / MANIFEST, {
            "format": FORMAT, "root": self.root, "model": self.model, "dim": self.dim, "embeddings": name,
            "entries": self.entries, "errors": self.errors})
        self.embeddings_file = name
        if old and old != name and (folder / old).is_file():
            (folder / old).unlink()

    def search(self, query: np.ndarray, top: int = 10) -> list[SearchHit]:
        """The ``top`` files most similar (cosine) to one query embedding ``[dim]``, best first."""
        if not self.entries:
            return []
        scores = cosine_similarity(np.asarray(query).reshape(1, -1), self.embeddings)[0]
        order = np.argsort(-scores, kind="stable")[: max(0, int(top))]
        return [SearchHit(self.entries[i]["key"], self.entries[i]["path"], float(scores[i])) for i in order]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def update_index(model: Any, root: str | os.PathLike, index_dir: str | os.PathLike, *, model_id: str,
                 batch_size: int = 8, rebuild: bool = False, save_every_s: float = 60.0,
                 log: Callable[[str], None] | None = None) -> IndexUpdate:
    """Create or bring up to date the index of every audio file under ``root``.

    Args:
        model: anything with ``sample_rate`` and ``encode_audio(waves, sample_rate=, batch_size=) -> [B, D]``
            (e.g. :class:`kikimimi.inference.clap.CLAPModel`).
        root: folder to index (recursively; see :func:`kikimimi.fileio.collect_audio_files`).
        index_dir: index folder (created when missing).
        model_id: identifies the model (the CLI stores the checkpoint path); an existing index built with
            another model raises unless ``rebuild``.
        rebuild: discard the existing index and embed everything.
        save_every_s: save the index of the files finished so far after a batch when this many seconds
            passed since the last save (0: after every batch), so that a killed run loses little.

    Returns:
        :class:`IndexUpdate`; only ``added`` and ``changed`` files were embedded.

    Raises:
        SearchIndexError: the folder to index is missing, or the index belongs to another model or root.
        kikimimi.fileio.OutputInUseError: another process is writing into ``index_dir``.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise SearchIndexError(f"'{root_path}': folder to index not found")
    folder = Path(index_dir)
    with output_lock(folder, "index"):
        return _update_locked(model, root_path, folder, model_id, batch_size, rebuild, save_every_s, log)


def _update_locked(model: Any, root_path: Path, folder: Path, model_id: str, batch_size: int, rebuild: bool,
                   save_every_s: float, log: Callable[[str], None] | None) -> IndexUpdate:
    """The body of :func:`update_index`, run while this process holds the index folder's lock."""
    old: SearchIndex | None = None
    if (folder / MANIFEST).is_file() and not rebuild:
        old = SearchIndex.load(folder)
        if old.model != model_id:
            raise SearchIndexError(f"'{folder}': built with model '{old.model}', not '{model_id}'; use a new index "
                                   "folder or rebuild it (--rebuild)")
        if Path(old.root).resolve() != root_path.resolve():
            raise SearchIndexError(f"'{folder}': indexes '{old.root}', not '{root_path}'; use a new index folder "
                                   "or rebuild it (--rebuild)")
    previous = {e["key"]: (i, e) for i, e in enumerate(old.entries)} if old else {}
    old_errors = old.errors if old else {}
    update = IndexUpdate()
    files = collect_audio_files([root_path])
    keep_rows: list[tuple[dict[str, Any], np.ndarray | None]] = []  # entry, embedding or None (to embed)
    todo: list[tuple[int, Path]] = []
    errors: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for path in files:
        key = relative_key(path, root_path)
        seen.add(key)
        st = _stat(path)
        if st is None:
            update.errors.append((key, "cannot stat the file"))
            continue
        entry = {"key": key, "path": str(path.resolve()), "size": st[0], "mtime_ns": st[1]}
        prior = previous.get(key)
        if prior is not None and (prior[1]["size"], prior[1]["mtime_ns"]) == st:
            keep_rows.append((prior[1], old.embeddings[prior[0]]))  # type: ignore[union-attr]
            update.unchanged.append(key)
            continue
        err = old_errors.get(key)
        if err is not None and (err.get("size"), err.get("mtime_ns")) == st:
            errors[key] = err
            update.errors.append((key, str(err.get("reason", "unreadable"))))
            continue
        (update.changed if prior is not None else update.added).append(key)
        todo.append((len(keep_rows), path))
        keep_rows.append((entry, None))
    update.removed = sorted(k for k in previous if k not in seen)

    sr = int(model.sample_rate)
    failed: set[int] = set()
    pending = {slot for slot, _ in todo}
    old_rows = {prior[1]["key"]: old.embeddings[prior[0]] for prior in previous.values()} if old else {}
    saved_as = old.embeddings_file if old else None
    last_save = time.monotonic()
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        waves, slots = [], []
        for slot, path in batch:
            try:
                waves.append(load_audio(path, sr)[0])
                slots.append(slot)
            except AudioDecodeError as exc:
                entry = keep_rows[slot][0]
                errors[entry["key"]] = {"size": entry["size"], "mtime_ns": entry["mtime_ns"], "reason": exc.reason}
                update.errors.append((entry["key"], exc.reason))
                failed.add(slot)
        if waves:
            emb = np.asarray(model.encode_audio(waves, sample_rate=sr, batch_size=batch_size), dtype=np.float32)
            for slot, e in zip(slots, emb, strict=True):
                keep_rows[slot] = (keep_rows[slot][0], e)
        pending.difference_update(slot for slot, _ in batch)
        if log:
            log(f"embedded {min(start + batch_size, len(todo))}/{len(todo)}")
        if pending and time.monotonic() - last_save >= save_every_s:
            # a consistent index of what is finished: files still to embed keep their previous row (if any), so
            # a rerun after a kill sees them as new/changed again and embeds only those
            partial = []
            for i, (entry, vec) in enumerate(keep_rows):
                if i in pending:
                    prior = previous.get(entry["key"])
                    if prior is not None:
                        partial.append((prior[1], old_rows[entry["key"]]))
                elif i not in failed and vec is not None:
                    partial.append((entry, vec))
            saved_as = _save_rows(folder, root_path, model_id, partial, errors, old, saved_as)
            last_save = time.monotonic()
    for key in (k for k, _ in update.errors):
        for lst in (update.added, update.changed):
            if key in lst:
                lst.remove(key)
    rows = [(e, v) for i, (e, v) in enumerate(keep_rows) if i not in failed and v is not None]
    current = _save_rows(folder, root_path, model_id, rows, errors, old, saved_as)
    _remove_leftovers(folder, current)
    return update


def _remove_leftovers(folder: Path, current: str | None) -> None:
    """Delete what a killed run can leave behind (under the lock, so no writer is using them): embeddings files
    the manifest does not name and half-written temporary files."""
    stale = [*folder.glob("embeddings-*.npy"), *folder.glob(".embeddings-*.tmp"), *folder.glob(f".{MANIFEST}.*.tmp")]
    for path in stale:
        if path.name != current:
            path.unlink(missing_ok=True)


def _save_rows(folder: Path, root_path: Path, model_id: str, rows: list[tuple[dict[str, Any], np.ndarray]],
               errors: dict[str, dict[str, Any]], old: SearchIndex | None, previous_file: str | None) -> str | None:
    """Write ``rows`` (entry, embedding ``[dim]``) as the index in ``folder``; returns the new embeddings file."""
    dims = {int(v.shape[-1]) for _, v in rows}
    if len(dims) > 1:
        raise SearchIndexError(f"'{folder}': embeddings of different sizes {sorted(dims)}; rebuild the index")
    dim = dims.pop() if dims else (old.dim if old else 0)
    index = SearchIndex(str(root_path.resolve()), model_id, dim, [e for e, _ in rows],
                        np.stack([v for _, v in rows]).astype(np.float32) if rows
                        else np.zeros((0, dim), dtype=np.float32),
                        errors, previous_file)
    index.save(folder)
    return index.embeddings_file


def search(index: SearchIndex | str | os.PathLike, query: str | Sequence[str] | np.ndarray, model: Any = None,
           top: int = 10) -> list[SearchHit]:
    """Rank indexed files for a text query (needs ``model.encode_text``) or a query embedding ``[dim]``."""
    idx = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    if isinstance(query, np.ndarray):
        emb = query
    else:
        if model is None:
            raise ValueError("a text query needs a model with encode_text")
        emb = np.asarray(model.encode_text([query] if isinstance(query, str) else list(query)))[0]
    if idx.entries and emb.shape[-1] != idx.dim:
        raise SearchIndexError(f"query embedding has {emb.shape[-1]} dims but the index holds {idx.dim}-d "
                               "embeddings; search with the model that built the index")
    return idx.search(emb, top)
