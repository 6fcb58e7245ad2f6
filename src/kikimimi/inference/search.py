"""A text-to-audio search index over a folder: CLAP audio embeddings of segments + a manifest, updated incrementally.

An index folder holds ``manifest.json``, one ``embeddings-<token>.npy`` (float32 ``[R, D]``, not normalised)
and, for an approximate vector index, one ``vectors-<token>.npz`` (:mod:`kikimimi.inference.vector_index`).
The manifest records the model, the indexed root, the segmenting (``window_s``, ``hop_s``), the vector index
built (kind, parameters, measured recall) and per file its key (path relative to the root), size in bytes,
mtime in ns, duration in seconds and its ``segments`` ``[[start_s, end_s], ...]``: the embedding rows are the
files' segments in manifest order. A file no longer than ``window_s`` is one segment (the whole file); a
longer one is cut into windows of ``window_s`` every ``hop_s`` seconds, the last window ending at the end of
the file, so a hit in a two-hour recording says where. Format ``/1`` indexes (whole files, no segments) are
still read and searched; updating one re-embeds every file with the new segmenting.

Writes are atomic and ordered — the new embeddings (and vector) files first, then the manifest that names
them, then the old files are removed — so a reader always sees a consistent set. One ``index`` at a time
writes into a folder: it holds ``.kikimimi-index.lock`` (:func:`kikimimi.fileio.output_lock`); a second
one stops at once with :class:`kikimimi.fileio.OutputInUseError`.

:func:`update_index` rescans the root and re-embeds only files that are new or whose size/mtime changed;
removed files are dropped. Unreadable files are listed under ``errors`` with their stat and retried only
when they change. Progress is saved while embedding (every ``save_every_s`` seconds): a run killed midway
leaves a consistent index of the files finished so far, and the next run embeds only the rest.
:func:`search` ranks the indexed segments by cosine similarity to a text query or an embedding.
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

from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio, stream_audio
from kikimimi.fileio import atomic_save_npy, atomic_write_json, collect_audio_files, output_lock, relative_key
from kikimimi.inference.vector_index import EXACT_BELOW, VectorIndex, VectorIndexError

__all__ = ["DEFAULT_HOP_S", "DEFAULT_WINDOW_S", "FORMAT", "IndexUpdate", "SearchHit", "SearchIndex",
           "SearchIndexError", "embed_segments", "search", "segment_bounds", "update_index"]

FORMAT = "kikimimi-search-index/2"
#: formats :meth:`SearchIndex.load` reads (``/1``: one whole-file row per entry, no segments)
READABLE_FORMATS = (FORMAT, "kikimimi-search-index/1")
MANIFEST = "manifest.json"
#: default segment window and hop, seconds
DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0


class SearchIndexError(ValueError):
    """The index folder is unusable or belongs to another model; the message names the folder and the fix."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: file ``key`` (relative to the indexed root), absolute ``path``, cosine ``score`` and
    the segment ``start_s``..``end_s`` in seconds (``end_s`` None: the whole file of a format-/1 index)."""

    key: str
    path: str
    score: float
    start_s: float = 0.0
    end_s: float | None = None
    row: int = -1


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



def _entry_segments(entry: dict[str, Any]) -> list[list[float | None]]:
    """An entry's segments ``[[start_s, end_s], ...]`` (a format-/1 entry: the whole file, end unknown)."""
    segs = entry.get("segments")
    return [[0.0, entry.get("duration_s")]] if not segs else segs


@dataclass
class SearchIndex:
    """In-memory index: ``entries`` (dicts with ``key``, ``path``, ``size``, ``mtime_ns``, ``duration_s``,
    ``segments``) and ``embeddings`` ``[rows, dim]`` float32 (one row per segment, entries in order).

    ``window_s``/``hop_s`` are the segmenting it was built with (None for a format-/1 index);
    ``vectors_info`` describes the vector index (:meth:`VectorIndex.describe`), ``vectors_file`` names its
    saved file (approximate kinds). :attr:`vector_index` is built or read on first use.
    """

    root: str
    model: str
    dim: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    embeddings_file: str | None = None
    window_s: float | None = DEFAULT_WINDOW_S
    hop_s: float | None = DEFAULT_HOP_S
    vectors_info: dict[str, Any] | None = None
    vectors_file: str | None = None
    folder: str | None = None
    format: str = FORMAT
    _vectors: VectorIndex | None = field(default=None, repr=False)
    _rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

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
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            got = data.get("format") if isinstance(data, dict) else None
            raise SearchIndexError(f"'{manifest}': not a kikimimi search index this version reads (format {got!r}; "
                                   f"expected {' or '.join(READABLE_FORMATS)}); rebuild it with `kikimimi index "
                                   "--rebuild`")
        entries = data.get("entries", [])
        dim = int(data.get("dim", 0))
        emb_name = data.get("embeddings")
        rows = sum(len(_entry_segments(e)) for e in entries)
        if entries:
            emb_path = folder / str(emb_name)
            if not emb_path.is_file():
                raise SearchIndexError(f"'{emb_path}': embeddings file named by the manifest is missing")
            try:
                emb = np.load(emb_path, allow_pickle=False, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise SearchIndexError(f"'{emb_path}': unreadable embeddings ({exc})") from exc
            if emb.shape != (rows, dim) or emb.dtype != np.float32:
                raise SearchIndexError(f"'{emb_path}': shape {emb.shape} does not match the manifest "
                                       f"({rows} segments of {len(entries)} files × {dim})")
        else:
            emb = np.zeros((0, dim), dtype=np.float32)
        seg = data.get("segments") or {}
        return cls(str(data.get("root", "")), str(data.get("model", "")), dim, entries, emb,
                   dict(data.get("errors", {})), emb_name,
                   seg.get("window_s") if data["format"] == FORMAT else None,
                   seg.get("hop_s") if data["format"] == FORMAT else None,
                   data.get("vectors"), (data.get("vectors") or {}).get("file"), str(folder), data["format"])

    @property
    def segmenting(self) -> tuple[float | None, float | None]:
        """``(window_s, hop_s)`` the index was built with (``(None, None)`` for format /1)."""
        return self.window_s, self.hop_s

    @property
    def n_rows(self) -> int:
        """Number of embedding rows (segments)."""
        return int(self.embeddings.shape[0])

    def row_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: entry number ``[R]`` int64, start ``[R]`` and end ``[R]`` seconds (NaN: unknown end)."""
        if self._rows is None:
            owner, start, end = [], [], []
            for i, e in enumerate(self.entries):
                for s0, s1 in _entry_segments(e):
                    owner.append(i)
                    start.append(float(s0 or 0.0))
                    end.append(np.nan if s1 is None else float(s1))
            self._rows = (np.asarray(owner, np.int64), np.asarray(start, np.float64), np.asarray(end, np.float64))
        return self._rows

    def rows_of(self, key: str) -> np.ndarray:
        """Row numbers of the segments of file ``key`` (empty when not indexed)."""
        owner = self.row_table()[0]
        for i, e in enumerate(self.entries):
            if e["key"] == key:
                return np.flatnonzero(owner == i)
        return np.zeros(0, np.int64)

    def entry(self, key: str) -> dict[str, Any] | None:
        """The manifest entry of file ``key``, or None."""
        return next((e for e in self.entries if e["key"] == key), None)

    @property
    def vector_index(self) -> VectorIndex:
        """The vector index over the rows: read from ``vectors_file`` when the manifest names a saved one,
        rebuilt from the embeddings when it recorded an exact one, built with ``kind="auto"`` otherwise."""
        if self._vectors is None:
            info = self.vectors_info
            try:
                if info and info.get("rows") == self.n_rows and (info.get("exact", True) or self.vectors_file):
                    path = Path(self.folder or ".") / str(self.vectors_file) if self.vectors_file else None
                    self._vectors = VectorIndex.from_saved(info, path=path, vectors=np.asarray(self.embeddings))
                else:
                    self._vectors = VectorIndex.build(np.asarray(self.embeddings).reshape(self.n_rows, self.dim))
            except VectorIndexError as exc:
                raise SearchIndexError(f"'{self.folder}': {exc}") from exc
        return self._vectors

    def save(self, index_dir: str | os.PathLike, *, vectors: bool = True) -> None:
        """Write the embeddings (and, with ``vectors``, the vector index when it is approximate), then the
        manifest naming them, then remove the previous files. Without ``vectors`` the manifest records none,
        and a reader builds it (progress saves while embedding skip it)."""
        folder = Path(index_dir)
        folder.mkdir(parents=True, exist_ok=True)
        old_files = {self.embeddings_file, self.vectors_file} - {None}
        token = secrets.token_hex(6)
        name = f"embeddings-{token}.npy"
        atomic_save_npy(folder / name, np.ascontiguousarray(self.embeddings, dtype=np.float32))
        info, vec_name = None, None
        if vectors:
            vi = self.vector_index
            info = vi.describe()
            if not vi.exact:
                vec_name = f"vectors-{token}.npz"
                vi.save(folder / vec_name)
                info["file"] = vec_name
        atomic_write_json(folder / MANIFEST, {
            "format": FORMAT, "root": self.root, "model": self.model, "dim": self.dim, "embeddings": name,
            "rows": self.n_rows, "segments": {"window_s": self.window_s, "hop_s": self.hop_s}, "vectors": info,
            "entries": self.entries, "errors": self.errors})
        self.embeddings_file, self.vectors_file, self.vectors_info = name, vec_name, info
        self.folder, self.format = str(folder), FORMAT
        for old in old_files - {name, vec_name}:
            (folder / old).unlink(missing_ok=True)

    def search(self, query: np.ndarray, top: int = 10) -> list[SearchHit]:
        """The ``top`` segments most similar (cosine) to one query embedding ``[dim]``, best first."""
        if not self.entries or top <= 0:
            return []
        scores, rows = self.vector_index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), int(top))
        owner, start, end = self.row_table()
        hits = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0:
                continue
            e = self.entries[int(owner[row])]
            hits.append(SearchHit(e["key"], e["path"], float(score), float(start[row]),
                                  None if np.isnan(end[row]) else float(end[row]), int(row)))
        return hits


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def segment_bounds(n_samples: int, sample_rate: int, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    """Segment sample ranges ``[(start, end), ...]`` of a clip of ``n_samples``: one ``(0, n)`` when it is no
    longer than ``window_s`` (or ``window_s <= 0``), else windows every ``hop_s`` seconds and a last one that
    ends at the end of the clip."""
    win, hop = int(round(window_s * sample_rate)), max(1, int(round(hop_s * sample_rate)))
    if window_s <= 0 or n_samples <= win:
        return [(0, n_samples)]
    bounds = [(s, s + win) for s in range(0, n_samples - win + 1, hop)]
    if bounds[-1][1] < n_samples:
        bounds.append((n_samples - win, n_samples))
    return bounds


def _iter_windows(path: Path, sample_rate: int, window_s: float, hop_s: float):
    """``(wave [win], start_sample)`` windows of a long file, streamed (memory ~ one window + one hop)."""
    win, hop = int(round(window_s * sample_rate)), max(1, int(round(hop_s * sample_rate)))
    buf = np.zeros(0, np.float32)
    offset, dropped, total, emitted_end = 0, np.zeros(0, np.float32), 0, 0
    for block in stream_audio(path, hop, sample_rate=sample_rate):
        buf = np.concatenate([buf, block])
        total += block.size
        while buf.size >= win:
            yield buf[:win].copy(), offset
            emitted_end = offset + win
            dropped, buf = buf[:hop], buf[hop:]
            offset += hop
    if emitted_end == 0:  # shorter than a window after all (header estimate): the whole clip
        if total:
            yield buf.copy(), 0
        return
    if total > emitted_end:
        tail = np.concatenate([dropped, buf])[-win:]
        yield tail.copy(), total - tail.size


def embed_segments(model: Any, path: str | os.PathLike, *, window_s: float = DEFAULT_WINDOW_S,
                   hop_s: float = DEFAULT_HOP_S, batch_size: int = 8) -> tuple[np.ndarray, list[list[float]], float]:
    """Embed one file per segment (see the module docstring).

    Returns ``(embeddings [S, D] float32, segments [[start_s, end_s], ...], duration_s)``. A file no longer
    than ``window_s`` (per its header) is decoded whole; a longer one is streamed window by window, so memory
    does not grow with the duration.

    Raises:
        kikimimi.audio.decode.AudioDecodeError: an unreadable file.
    """
    sr = int(model.sample_rate)
    path = Path(path)
    if window_s <= 0 or audio_info(path).duration_s <= window_s:
        wave = load_audio(path, sr)[0]
        emb = np.asarray(model.encode_audio([wave], sample_rate=sr, batch_size=batch_size), dtype=np.float32)
        return emb, [[0.0, round(wave.size / sr, 6)]], wave.size / sr
    parts, segs, waves, starts, end = [], [], [], [], 0
    for wave, start in _iter_windows(path, sr, window_s, hop_s):
        waves.append(wave)
        starts.append(start)
        end = max(end, start + wave.size)
        if len(waves) == batch_size:
            parts.append(np.asarray(model.encode_audio(waves, sample_rate=sr, batch_size=batch_size), np.float32))
            segs.extend([[round(s / sr, 6), round((s + w.size) / sr, 6)] for s, w in zip(starts, waves, strict=True)])
            waves, starts = [], []
    if waves:
        parts.append(np.asarray(model.encode_audio(waves, sample_rate=sr, batch_size=batch_size), np.float32))
        segs.extend([[round(s / sr, 6), round((s + w.size) / sr, 6)] for s, w in zip(starts, waves, strict=True)])
    return np.concatenate(parts), segs, end / sr


def update_index(model: Any, root: str | os.PathLike, index_dir: str | os.PathLike, *, model_id: str,
                 batch_size: int = 8, rebuild: bool = False, save_every_s: float = 60.0,
                 window_s: float = DEFAULT_WINDOW_S, hop_s: float = DEFAULT_HOP_S, vector_kind: str = "auto",
                 exact_below: int = EXACT_BELOW, log: Callable[[str], None] | None = None) -> IndexUpdate:
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
        window_s, hop_s: segment window and hop in seconds (``window_s <= 0``: whole files). An index built
            with other values (or a format-/1 index) has every file re-embedded (reported as changed).
        vector_kind, exact_below: the vector index (:meth:`VectorIndex.build`), built when the update ends.

    Returns:
        :class:`IndexUpdate`; only ``added`` and ``changed`` files were embedded.

    Raises:
        SearchIndexError: the folder to index is missing, or the index belongs to another model or root.
        kikimimi.fileio.OutputInUseError: another process is writing into ``index_dir``.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise SearchIndexError(f"'{root_path}': folder to index not found")
    if window_s > 0 and not 0 < hop_s <= window_s:
        raise SearchIndexError(f"segment hop must be in (0, window_s={window_s}] seconds, got {hop_s}")
    folder = Path(index_dir)
    with output_lock(folder, "index"):
        return _update_locked(model, root_path, folder, model_id, batch_size, rebuild, save_every_s,
                              (float(window_s), float(hop_s) if window_s > 0 else 0.0), vector_kind,
                              int(exact_below), log)


def _update_locked(model: Any, root_path: Path, folder: Path, model_id: str, batch_size: int, rebuild: bool,
                   save_every_s: float, segmenting: tuple[float, float], vector_kind: str, exact_below: int,
                   log: Callable[[str], None] | None) -> IndexUpdate:
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
    reusable = old is not None and old.segmenting == segmenting
    old_rows: dict[str, np.ndarray] = {}
    if old is not None and reusable:
        owner = old.row_table()[0]
        emb = np.asarray(old.embeddings)
        for i, e in enumerate(old.entries):
            old_rows[e["key"]] = np.array(emb[owner == i], dtype=np.float32)
    previous = {e["key"]: e for e in old.entries} if old else {}
    trained = None  # a saved IVF index: its trained quantiser is reused (read now: progress saves drop the file)
    if old is not None and old.vectors_file and old.vectors_info and not old.vectors_info.get("exact", True):
        try:
            trained = old.vector_index
        except SearchIndexError:
            trained = None
    old_errors = old.errors if old else {}
    update = IndexUpdate()
    files = collect_audio_files([root_path])
    keep_rows: list[tuple[dict[str, Any], np.ndarray | None]] = []  # entry, segment embeddings or None (to embed)
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
        if prior is not None and reusable and (prior["size"], prior["mtime_ns"]) == st:
            keep_rows.append((prior, old_rows[key]))
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

    window_s, hop_s = segmenting
    failed: set[int] = set()
    pending = {slot for slot, _ in todo}
    saved_as = old.embeddings_file if old else None
    last_save = time.monotonic()
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        for slot, path in batch:
            entry = keep_rows[slot][0]
            try:
                emb, segs, duration = embed_segments(model, path, window_s=window_s, hop_s=hop_s,
                                                     batch_size=batch_size)
            except AudioDecodeError as exc:
                errors[entry["key"]] = {"size": entry["size"], "mtime_ns": entry["mtime_ns"], "reason": exc.reason}
                update.errors.append((entry["key"], exc.reason))
                failed.add(slot)
                continue
            keep_rows[slot] = ({**entry, "duration_s": round(duration, 6), "segments": segs}, emb)
        pending.difference_update(slot for slot, _ in batch)
        if log:
            log(f"embedded {min(start + batch_size, len(todo))}/{len(todo)}")
        if pending and time.monotonic() - last_save >= save_every_s:
            # a consistent index of what is finished: files still to embed keep their previous rows (if any), so
            # a rerun after a kill sees them as new/changed again and embeds only those
            partial = []
            for i, (entry, vec) in enumerate(keep_rows):
                if i in pending:
                    if entry["key"] in old_rows:
                        partial.append((previous[entry["key"]], old_rows[entry["key"]]))
                elif i not in failed and vec is not None:
                    partial.append((entry, vec))
            saved_as = _save_rows(folder, root_path, model_id, partial, errors, old, saved_as, segmenting,
                                  None).embeddings_file
            last_save = time.monotonic()
    for key in (k for k, _ in update.errors):
        for lst in (update.added, update.changed):
            if key in lst:
                lst.remove(key)
    rows = [(e, v) for i, (e, v) in enumerate(keep_rows) if i not in failed and v is not None]
    current = _save_rows(folder, root_path, model_id, rows, errors, old, saved_as, segmenting,
                         (vector_kind, exact_below), trained)
    _remove_leftovers(folder, current)
    return update


def _remove_leftovers(folder: Path, current: SearchIndex) -> None:
    """Delete what a killed run can leave behind (under the lock, so no writer is using them): embeddings and
    vector files the manifest does not name and half-written temporary files."""
    stale = [*folder.glob("embeddings-*.npy"), *folder.glob("vectors-*.npz"), *folder.glob(".embeddings-*.tmp"),
             *folder.glob(".vectors-*.tmp"), *folder.glob(f".{MANIFEST}.*.tmp")]
    for path in stale:
        if path.name not in (current.embeddings_file, current.vectors_file):
            path.unlink(missing_ok=True)


def _save_rows(folder: Path, root_path: Path, model_id: str, rows: list[tuple[dict[str, Any], np.ndarray]],
               errors: dict[str, dict[str, Any]], old: SearchIndex | None, previous_file: str | None,
               segmenting: tuple[float, float], vectors: tuple[str, int] | None,
               trained: VectorIndex | None = None) -> SearchIndex:
    """Write ``rows`` (entry, segment embeddings ``[S, dim]``) as the index in ``folder``; with ``vectors``
    (kind, exact_below) also build and save the vector index (an IVF one reuses ``trained``'s coarse
    quantiser when it fits). Returns the index written."""
    dims = {int(v.shape[-1]) for _, v in rows}
    if len(dims) > 1:
        raise SearchIndexError(f"'{folder}': embeddings of different sizes {sorted(dims)}; rebuild the index")
    dim = dims.pop() if dims else (old.dim if old else 0)
    index = SearchIndex(str(root_path.resolve()), model_id, dim, [e for e, _ in rows],
                        np.concatenate([v.reshape(-1, dim) for _, v in rows]).astype(np.float32) if rows
                        else np.zeros((0, dim), dtype=np.float32),
                        errors, previous_file, segmenting[0], segmenting[1], folder=str(folder))
    if old is not None:
        index.vectors_file = old.vectors_file if previous_file == old.embeddings_file else None
    if vectors is not None:
        try:
            index._vectors = VectorIndex.build(index.embeddings, kind=vectors[0], exact_below=vectors[1],
                                               trained_from=trained)
        except VectorIndexError as exc:
            raise SearchIndexError(f"'{folder}': {exc}") from exc
    index.save(folder, vectors=vectors is not None)
    return index


def search(index: SearchIndex | str | os.PathLike, query: str | Sequence[str] | np.ndarray, model: Any = None,
           top: int = 10) -> list[SearchHit]:
    """Rank indexed segments for a text query (needs ``model.encode_text``) or a query embedding ``[dim]``."""
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
