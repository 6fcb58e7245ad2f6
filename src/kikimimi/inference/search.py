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
them, then the old files are removed — so a reader always sees a consistent set. One job at a time writes into
a folder: ``index`` holds the folder's lock (:func:`kikimimi.fileio.output_lock`, common to every kikimimi job);
a second one stops at once with :class:`kikimimi.fileio.OutputInUseError`. The folder is stamped as an index's
(:func:`kikimimi.fileio.claim_folder`), and ``index`` deletes only files it wrote itself (listed in
``.kikimimi-index-files.json`` before they are created), never other ``embeddings-*.npy`` / ``vectors-*.npz``.

The vector index is brought up to date in place: rows of unchanged files are kept, new rows added, removed
ones dropped (tombstones in an HNSW graph, compacted when they pass a quarter of it), and the search effort
re-calibrated (:meth:`kikimimi.inference.vector_index.VectorIndex.rearrange`); nothing is re-added.

The manifest records the identity of the model (:func:`kikimimi.inference.jobs.job_record`: a content
fingerprint of the weights, config, front end, normalisation statistics, precision, dimension): its embedding
space. Adding vectors of another space is refused, and so is searching with another model's text queries
(:func:`check_space`, :class:`EmbeddingSpaceError`: one line naming both models) — and the
SHA-256 of every vector file and of the entries; :meth:`SearchIndex.load` verifies them, so flipped bytes or
edited entries are refused with a message naming ``kikimimi index --check`` and ``--rebuild``
(:func:`check_index`). A file whose embedding has NaN or infinite values is listed under ``errors``, never
indexed.

:func:`update_index` rescans the root and re-embeds only files that are new or whose size/mtime changed;
removed files are dropped. Unreadable files are listed under ``errors`` with their stat and retried only
when they change. Progress is saved while embedding (every ``save_every_s`` seconds): a run killed midway
leaves a consistent index of the files finished so far, and the next run embeds only the rest.
:func:`search` ranks the indexed files by cosine similarity to a text query or an embedding — per file by
default (each file's best segment and how many of its segments matched), per segment with ``segments=True``;
:func:`search_many` runs several queries with one model call.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio, stream_audio
from kikimimi.fileio import (
    FolderOwnedError,
    atomic_save_npy,
    atomic_write_json,
    claim_folder,
    collect_audio_files,
    file_fingerprint,
    output_lock,
    relative_key,
    settings_fingerprint,
)
from kikimimi.inference.jobs import NON_FINITE, fingerprint_cache_file, job_record
from kikimimi.inference.vector_index import COMPACT_ABOVE, EXACT_BELOW, VectorIndex, VectorIndexError, normalise
from kikimimi.models.encoder import TextAudioModel

__all__ = ["DEFAULT_HOP_S", "DEFAULT_WINDOW_S", "FORMAT", "SPACE_FIELDS", "EmbeddingSpaceError", "FileHit",
           "IndexUpdate", "SearchHit", "SearchIndex", "SearchIndexError", "SearchQueryError", "check_model_space",
           "check_query", "check_space", "compact_index", "embed_segments", "embedding_space", "group_hits_by_file",
           "model_identity", "search", "search_files", "search_many", "update_index"]

FORMAT = "kikimimi-search-index/2"
#: formats :meth:`SearchIndex.load` reads (``/1``: one whole-file row per entry, no segments)
READABLE_FORMATS = (FORMAT, "kikimimi-search-index/1")
MANIFEST = "manifest.json"
#: the files an index wrote into its folder (the only ones it ever deletes)
WRITTEN = ".kikimimi-index-files.json"
#: default segment window and hop, seconds
DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0


class SearchIndexError(ValueError):
    """The index folder is unusable or belongs to another model; the message names the folder and the fix."""


class EmbeddingSpaceError(SearchIndexError):
    """Vectors of one embedding space added to, or searched in, an index of another; the message names both."""


#: the fields of a model identity (:func:`kikimimi.inference.jobs.job_record`) that decide what a vector means:
#: the weights' content, the model's family and config, its front end and normalisation statistics, precision,
#: level, sample rate and dimension
SPACE_FIELDS = ("weights_sha256", "family", "config_sha256", "frontend", "norm_stats", "precision", "level",
                "sample_rate", "dim")


def embedding_space(identity: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SPACE_FIELDS` of a model identity, as JSON values (tuples become lists, as in a manifest)."""
    return json.loads(json.dumps({k: identity[k] for k in SPACE_FIELDS if k in identity}, sort_keys=True,
                                 default=str))


def _space_name(model_id: str, identity: dict[str, Any]) -> str:
    name = Path(str(model_id)).name or str(model_id)
    return (f"'{name}' (weights {str(identity.get('weights_sha256'))[:12]}, {identity.get('precision')}, "
            f"{identity.get('dim')}-d)")


def check_space(index: SearchIndex, identity: dict[str, Any] | None, model_id: str, *, doing: str = "search") -> None:
    """Refuse to ``doing`` (``"search"`` or ``"add"``) with vectors of the model ``identity`` in ``index`` when
    the index's vectors come from another embedding space (:data:`SPACE_FIELDS`; fields one of the two
    identities lacks are not compared). Nothing is checked when either identity is unknown (``None``).

    Raises:
        EmbeddingSpaceError: one line naming the index, both models and the fields that differ.
    """
    recorded = index.model_identity
    if identity is None or not isinstance(recorded, dict):
        return
    ours, theirs = embedding_space(identity), embedding_space(recorded)
    differ = [k for k in SPACE_FIELDS if k in ours and k in theirs and ours[k] != theirs[k]]
    if not differ:
        return
    fix = ("use a new index folder or rebuild it (--rebuild)" if doing == "add" else
           "search with the model that built it, or rebuild the index with this one (--rebuild)")
    verb = "adding vectors of" if doing == "add" else "searching with"
    raise EmbeddingSpaceError(f"'{index.folder}': its vectors are in the embedding space of model "
                              f"{_space_name(index.model, recorded)}; {verb} model {_space_name(model_id, identity)} "
                              f"would mix spaces (different {', '.join(differ)}); {fix}")


def check_model_space(index: SearchIndex | str | os.PathLike, model: Any, model_id: str, *,
                      doing: str = "search") -> None:
    """:func:`check_space` for a loaded ``model`` named ``model_id`` (the path or name it was loaded from: its
    weights are fingerprinted by file, as when the index was built)."""
    idx = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    check_space(idx, model_identity(model, model_id), model_id, doing=doing)


def _corrupted(folder: Path | str, what: str) -> SearchIndexError:
    return SearchIndexError(f"'{folder}': the index is corrupted ({what}); `kikimimi index --check {folder}` "
                            f"checks it, `kikimimi index ROOT -m MODEL -o {folder} --rebuild` builds it again")


def _sha256_file(path: Path) -> str:
    """SHA-256 of a file, remembered by its path, size, mtime, ctime and inode (any write to it has it hashed
    again; :func:`kikimimi.fileio.file_fingerprint`), so loading an unchanged index does not read it twice."""
    return str(file_fingerprint(path, cache_file=fingerprint_cache_file())["sha256"])


#: the names of the vector files an index writes
_OWN_FILE = re.compile(r"(embeddings-[0-9a-f]+\.npy|vectors-[0-9a-f]+\.npz)")


def _written(folder: Path) -> set[str]:
    """The vector files this index wrote into ``folder`` (:data:`WRITTEN`; empty when unreadable)."""
    try:
        names = json.loads((folder / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str) and _OWN_FILE.fullmatch(n)} if isinstance(names, list) else set()


def _note_written(folder: Path, names: set[str], *, replace: bool = False) -> None:
    """Add ``names`` to :data:`WRITTEN` (``replace``: make it exactly ``names``)."""
    atomic_write_json(folder / WRITTEN, sorted(names if replace else _written(folder) | names), indent=None)


def _entries_digest(entries: list[dict[str, Any]]) -> str:
    """SHA-256 of the entries (keys, paths, stats, segments) in order: a reordered or edited manifest differs."""
    return settings_fingerprint(entries)


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
    checksums: dict[str, str] | None = None
    model_identity: dict[str, Any] | None = None
    _vectors: VectorIndex | None = field(default=None, repr=False)
    _rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _keys: tuple[dict[str, int], np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, *, verify: bool = True) -> SearchIndex:
        """Read an index folder; raises :class:`SearchIndexError` when it is missing or inconsistent, or (with
        ``verify``) when a file or the entries do not match the checksums the manifest recorded."""
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
        try:
            dim = int(data.get("dim", 0))
            emb_name = data.get("embeddings")
            rows = sum(len(_entry_segments(e)) for e in entries)
        except (TypeError, ValueError, AttributeError) as exc:
            raise _corrupted(folder, f"malformed {MANIFEST}: {exc}") from None
        checksums = data.get("checksums") if isinstance(data.get("checksums"), dict) else None
        if verify and checksums is not None and checksums.get("entries") != _entries_digest(entries):
            raise _corrupted(folder, f"the entries of {MANIFEST} were changed or reordered after it was written")
        if entries:
            emb_path = folder / str(emb_name)
            if not emb_path.is_file():
                raise SearchIndexError(f"'{emb_path}': embeddings file named by the manifest is missing")
            try:
                emb = np.load(emb_path, allow_pickle=False, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise SearchIndexError(f"'{emb_path}': unreadable embeddings ({exc})") from exc
            if emb.shape != (rows, dim) or emb.dtype != np.float32:
                raise _corrupted(folder, f"{emb_name} has shape {emb.shape}, the manifest says {rows} segments of "
                                 f"{len(entries)} files × {dim}")
            if verify and checksums is not None and checksums.get(str(emb_name)) != _sha256_file(emb_path):
                raise _corrupted(folder, f"{emb_name} does not match its checksum")
        else:
            emb = np.zeros((0, dim), dtype=np.float32)
        seg = data.get("segments") or {}
        return cls(str(data.get("root", "")), str(data.get("model", "")), dim, entries, emb,
                   dict(data.get("errors", {})), emb_name,
                   seg.get("window_s") if data["format"] == FORMAT else None,
                   seg.get("hop_s") if data["format"] == FORMAT else None,
                   data.get("vectors"), (data.get("vectors") or {}).get("file"), str(folder), data["format"],
                   checksums, data.get("model_identity"))

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

    def _key_table(self) -> tuple[dict[str, int], np.ndarray]:
        """``{key: entry number}`` (the first entry of a key) and the entries' row bounds ``[E + 1]`` (a file's
        rows are consecutive), computed once like :meth:`row_table`: a look-up by key costs O(1), not O(files)."""
        if self._keys is None:
            owner = self.row_table()[0]
            bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(self.entries)))])
            keys: dict[str, int] = {}
            for i, e in enumerate(self.entries):
                keys.setdefault(e["key"], i)
            self._keys = (keys, bounds.astype(np.int64))
        return self._keys

    def rows_of(self, key: str) -> np.ndarray:
        """Row numbers of the segments of file ``key`` (empty when not indexed)."""
        keys, bounds = self._key_table()
        i = keys.get(key)
        return np.zeros(0, np.int64) if i is None else np.arange(bounds[i], bounds[i + 1], dtype=np.int64)

    def entry(self, key: str) -> dict[str, Any] | None:
        """The manifest entry of file ``key``, or None."""
        i = self._key_table()[0].get(key)
        return None if i is None else self.entries[i]

    @property
    def vector_index(self) -> VectorIndex:
        """The vector index over the rows: read from ``vectors_file`` when the manifest names a saved one,
        rebuilt from the embeddings when it recorded an exact one, built with ``kind="auto"`` otherwise."""
        if self._vectors is None:
            info = self.vectors_info
            try:
                if info and info.get("rows") == self.n_rows and (info.get("exact", True) or self.vectors_file):
                    path = Path(self.folder or ".") / str(self.vectors_file) if self.vectors_file else None
                    if path is not None and self.checksums is not None and path.is_file() and \
                            self.checksums.get(str(self.vectors_file)) != _sha256_file(path):
                        raise _corrupted(self.folder or ".", f"{self.vectors_file} does not match its checksum")
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
        vi = self.vector_index if vectors else None
        vec_name = f"vectors-{token}.npz" if vi is not None and not vi.exact else None
        _note_written(folder, {name, vec_name} - {None})  # before they exist: a kill leaves nothing unknown
        atomic_save_npy(folder / name, np.ascontiguousarray(self.embeddings, dtype=np.float32))
        checksums = {name: _sha256_file(folder / name), "entries": _entries_digest(self.entries)}
        info = None
        if vi is not None:
            info = vi.describe()
            if vec_name is not None:
                vi.save(folder / vec_name)
                info["file"] = vec_name
                checksums[vec_name] = _sha256_file(folder / vec_name)
        atomic_write_json(folder / MANIFEST, {
            "format": FORMAT, "root": self.root, "model": self.model, "model_identity": self.model_identity,
            "dim": self.dim, "embeddings": name, "rows": self.n_rows,
            "segments": {"window_s": self.window_s, "hop_s": self.hop_s}, "vectors": info, "checksums": checksums,
            "entries": self.entries, "errors": self.errors})
        self.embeddings_file, self.vectors_file, self.vectors_info = name, vec_name, info
        self.folder, self.format, self.checksums = str(folder), FORMAT, checksums
        for old in old_files - {name, vec_name}:
            if _OWN_FILE.fullmatch(old):  # named by the manifest it replaced; never a path elsewhere
                (folder / old).unlink(missing_ok=True)

    @property
    def n_files(self) -> int:
        """Number of indexed files."""
        return len(self.entries)

    def describe(self) -> dict[str, Any]:
        """The vector index as a client may see it (:meth:`VectorIndex.describe` without its file name)."""
        return {k: v for k, v in self.vector_index.describe().items() if k != "file"}

    def file_vector(self, key: str) -> np.ndarray | None:
        """The unit mean of file ``key``'s unit segment embeddings ``[dim]`` (a query "like this file"), or None
        when the key is not indexed."""
        rows = self.rows_of(key)
        if rows.size == 0:
            return None
        return normalise(normalise(np.asarray(self.embeddings[rows])).mean(axis=0))[0]

    def search_files(self, query: np.ndarray, top: int = 10) -> list[FileHit]:
        """:func:`search_files` on this index (the method a database index offers too)."""
        return search_files(self, query, top)

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


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    """``(size, mtime_ns, dev, ino)`` of ``path`` (links followed), ``None`` when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns), int(st.st_dev), int(st.st_ino)


def _same_file(prior: dict[str, Any], st: tuple[int, int, int, int]) -> bool:
    """Whether a manifest entry (or error record) describes the file ``st`` (:func:`_stat`): size and mtime, and
    device and inode when the record has them (a file replaced by a copy with the same mtime, or by a hard link to
    another file, is a changed file; ``serve`` refuses to stream it until it is indexed again)."""
    if (prior.get("size"), prior.get("mtime_ns")) != st[:2]:
        return False
    return all(prior.get(name) in (None, value) for name, value in (("dev", st[2]), ("ino", st[3])))


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


def embed_segments(model: TextAudioModel, path: str | os.PathLike, *, window_s: float = DEFAULT_WINDOW_S,
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


def update_index(model: TextAudioModel, root: str | os.PathLike, index_dir: str | os.PathLike, *, model_id: str,
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
    identity = model_identity(model, model_id)  # before the lock: hashing new weights may take a while
    with output_lock(folder, "index"):
        return _update_locked(model, root_path, folder, model_id, batch_size, rebuild, save_every_s,
                              (float(window_s), float(hop_s) if window_s > 0 else 0.0), vector_kind,
                              int(exact_below), log, identity)


def model_identity(model: TextAudioModel, model_id: str) -> dict[str, Any] | None:
    """The identity of a CLAP model's audio side (:func:`kikimimi.inference.jobs.job_record`: weights
    fingerprint, config, front end, precision), ``None`` for a model without an audio encoder bundle."""
    audio = getattr(model, "audio", None)
    if audio is None or getattr(audio, "bundle", None) is None:
        return None
    return job_record(audio, "clip", model_id)


def _weights(identity: dict[str, Any] | None) -> str:
    return f" (weights {str(identity.get('weights_sha256'))[:12]})" if identity else ""


def _update_locked(model: TextAudioModel, root_path: Path, folder: Path, model_id: str, batch_size: int, rebuild: bool,
                   save_every_s: float, segmenting: tuple[float, float], vector_kind: str, exact_below: int,
                   log: Callable[[str], None] | None, identity: dict[str, Any] | None = None) -> IndexUpdate:
    """The body of :func:`update_index`, run while this process holds the index folder's lock."""
    old: SearchIndex | None = None
    if (folder / MANIFEST).is_file() and not rebuild:
        old = SearchIndex.load(folder)
        old_identity = old.model_identity
        if identity is not None and old_identity is not None:
            check_space(old, identity, model_id, doing="add")
        elif old.model != model_id:
            raise SearchIndexError(f"'{folder}': built with model '{old.model}', not '{model_id}'; use a new index "
                                   "folder or rebuild it (--rebuild)")
        if Path(old.root).resolve() != root_path.resolve():
            raise SearchIndexError(f"'{folder}': indexes '{old.root}', not '{root_path}'; use a new index folder "
                                   "or rebuild it (--rebuild)")
    stamp = {"model": settings_fingerprint(identity) if identity is not None else model_id,
             "root": str(root_path.resolve())}
    try:
        claim_folder(folder, "index", stamp, describe=f"model '{model_id}'{_weights(identity)}", overwrite=rebuild,
                     overwrite_flag="--rebuild", legacy_ok=True, what="a search index")
    except FolderOwnedError as exc:
        raise SearchIndexError(str(exc)) from None
    reusable = old is not None and old.segmenting == segmenting
    old_rows: dict[str, np.ndarray] = {}
    old_first: dict[str, int] = {}  # key → its first row in the old index (a file's rows are consecutive)
    if old is not None and reusable:
        owner = old.row_table()[0]
        emb = np.asarray(old.embeddings)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(old.entries)))]).astype(np.int64)
        for i, e in enumerate(old.entries):
            old_rows[e["key"]] = np.array(emb[bounds[i]:bounds[i + 1]], dtype=np.float32)
            old_first[e["key"]] = int(bounds[i])
    previous = {e["key"]: e for e in old.entries} if old else {}
    # a saved approximate index: updated in place (rows kept, added, removed) or, when it cannot be, an IVF one
    # lends its trained quantiser (read now: progress saves drop the file)
    trained = None
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
        entry = {"key": key, "path": str(path.resolve()), "size": st[0], "mtime_ns": st[1], "dev": st[2],
                 "ino": st[3]}
        prior = previous.get(key)
        if prior is not None and reusable and _same_file(prior, st):
            keep_rows.append(({**prior, "dev": st[2], "ino": st[3]}, old_rows[key]))
            update.unchanged.append(key)
            continue
        err = old_errors.get(key)
        if err is not None and _same_file(err, st):
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
            if not np.isfinite(emb).all():  # never indexed: it would never be found, or be found for everything
                errors[entry["key"]] = {"size": entry["size"], "mtime_ns": entry["mtime_ns"], "reason": NON_FINITE}
                update.errors.append((entry["key"], NON_FINITE))
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
                                  None, identity=identity).embeddings_file
            last_save = time.monotonic()
    for key in (k for k, _ in update.errors):
        for lst in (update.added, update.changed):
            if key in lst:
                lst.remove(key)
    rows = [(e, v) for i, (e, v) in enumerate(keep_rows) if i not in failed and v is not None]
    sources = None  # per new row: its row in the old index, -1 when embedded now
    if trained is not None and reusable:
        unchanged = set(update.unchanged)
        sources = np.concatenate([np.zeros(0, np.int64)] + [
            np.arange(old_first[e["key"]], old_first[e["key"]] + len(v), dtype=np.int64) if e["key"] in unchanged
            else np.full(len(v), -1, dtype=np.int64) for e, v in rows])
    current = _save_rows(folder, root_path, model_id, rows, errors, old, saved_as, segmenting,
                         (vector_kind, exact_below), trained, identity=identity, sources=sources)
    _remove_leftovers(folder, current)
    return update


def _remove_leftovers(folder: Path, current: SearchIndex) -> None:
    """Delete the vector files a killed run of this index left behind (under the lock, so no writer is using
    them): those it listed in :data:`WRITTEN` that the manifest does not name. Never any other file, whatever
    its name (half-written temporaries are removed by the lock's sweep when their writer is dead)."""
    keep = {current.embeddings_file, current.vectors_file} - {None}
    for name in _written(folder) - keep:
        (folder / name).unlink(missing_ok=True)
    _note_written(folder, keep, replace=True)


def _save_rows(folder: Path, root_path: Path, model_id: str, rows: list[tuple[dict[str, Any], np.ndarray]],
               errors: dict[str, dict[str, Any]], old: SearchIndex | None, previous_file: str | None,
               segmenting: tuple[float, float], vectors: tuple[str, int] | None,
               trained: VectorIndex | None = None, *, identity: dict[str, Any] | None = None,
               sources: np.ndarray | None = None) -> SearchIndex:
    """Write ``rows`` (entry, segment embeddings ``[S, dim]``) as the index in ``folder``; with ``vectors``
    (kind, exact_below) also the vector index: ``trained`` (the previous one) updated in place when
    ``sources`` (per row its previous row or -1, :meth:`VectorIndex.rearrange`) allows it
    (:func:`_incremental`), else built anew (an IVF one reuses ``trained``'s coarse quantiser when it fits).
    Returns the index written."""
    dims = {int(v.shape[-1]) for _, v in rows}
    if len(dims) > 1:
        raise SearchIndexError(f"'{folder}': embeddings of different sizes {sorted(dims)}; rebuild the index")
    dim = dims.pop() if dims else (old.dim if old else 0)
    index = SearchIndex(str(root_path.resolve()), model_id, dim, [e for e, _ in rows],
                        np.concatenate([v.reshape(-1, dim) for _, v in rows]).astype(np.float32) if rows
                        else np.zeros((0, dim), dtype=np.float32),
                        errors, previous_file, segmenting[0], segmenting[1], folder=str(folder),
                        model_identity=identity)
    if old is not None:
        index.vectors_file = old.vectors_file if previous_file == old.embeddings_file else None
    if vectors is not None:
        try:
            index._vectors = _incremental(trained, sources, index.embeddings, vectors[0], vectors[1]) or \
                VectorIndex.build(index.embeddings, kind=vectors[0], exact_below=vectors[1], trained_from=trained)
        except VectorIndexError as exc:
            raise SearchIndexError(f"'{folder}': {exc}") from exc
    index.save(folder, vectors=vectors is not None)
    return index


def _incremental(previous: VectorIndex | None, sources: np.ndarray | None, embeddings: np.ndarray, kind: str,
                 exact_below: int) -> VectorIndex | None:
    """``previous`` (an approximate index) brought to the rows ``embeddings`` ``[R, D]`` without a rebuild —
    rows kept, new ones added, removed ones dropped (tombstones in a graph, compacted above
    :data:`~kikimimi.inference.vector_index.COMPACT_ABOVE`), then re-calibrated — or ``None`` when a fresh build
    is due: no previous index or ``sources``, another kind asked for (``"auto"`` keeps a graph of either kind
    while the rows stay above ``exact_below``, and replaces an IVF index by a graph), or the target recall no
    longer reached."""
    if previous is None or sources is None or previous.exact or previous.dim != embeddings.shape[-1]:
        return None
    if kind == "auto":
        auto = VectorIndex.choose_kind(embeddings.shape[0], "auto", exact_below, dim=previous.dim)
        if auto in ("numpy", "flat") or previous.kind == "ivf":
            return None
    elif kind != previous.kind:
        return None
    target = float((previous.params.get("calibration") or {}).get("target_recall", 0.95))
    try:
        counts = previous.rearrange(sources, embeddings)
        if counts["added"] == 0 and counts["removed"] == 0:
            return previous
        graph = previous.size + previous.tombstones
        counts["compacted"] = previous.compact(embeddings) if previous.tombstones > COMPACT_ABOVE * graph else 0
        if previous.calibrate(target, reference=embeddings) < target:
            return None
    except VectorIndexError:
        return None
    previous.params["last_update"] = counts
    return previous


def compact_index(index_dir: str | os.PathLike) -> dict[str, int]:
    """Drop the tombstones of an index's HNSW graph now (updates do it when they pass a quarter of the graph):
    the graph is rebuilt from the live rows' embeddings, re-calibrated and saved, under the folder's lock.
    Returns ``{"rows", "dropped"}`` (``dropped`` 0: nothing to drop, or the vector index is not a graph)."""
    folder = Path(index_dir)
    if not (folder / MANIFEST).is_file():  # before the lock, which would create the folder
        raise SearchIndexError(f"'{folder}': no {MANIFEST}: not a search index")
    with output_lock(folder, "index"):
        index = SearchIndex.load(folder)
        vectors = index.vector_index
        dropped = vectors.compact(np.asarray(index.embeddings)) if vectors.tombstones else 0
        if dropped:
            target = float((vectors.params.get("calibration") or {}).get("target_recall", 0.95))
            vectors.calibrate(target, reference=index.embeddings)
            index.save(folder)
            _remove_leftovers(folder, index)
    return {"rows": vectors.size, "dropped": int(dropped)}


def check_index(index_dir: str | os.PathLike) -> str | None:
    """Check an index folder end to end: manifest, entries and vector files against their recorded checksums,
    row counts, the vector index, finite values. Returns ``None`` when it is sound, else one line saying what is
    wrong (``kikimimi index --check``)."""
    folder = Path(index_dir)
    try:
        index = SearchIndex.load(folder)
        if index.checksums is None:
            return f"'{folder}': written by an older kikimimi without checksums; rebuild it with --rebuild to check it"
        if index.n_rows and not np.isfinite(np.asarray(index.embeddings)).all():
            return str(_corrupted(folder, f"{index.embeddings_file} holds NaN or infinite values"))
        if index.n_rows:
            vi = index.vector_index
            if vi.size != index.n_rows:
                return str(_corrupted(folder, f"the vector index holds {vi.size} rows, the manifest {index.n_rows}"))
    except SearchIndexError as exc:
        return str(exc)
    return None


class SearchQueryError(ValueError):
    """A text query that cannot be searched (empty or blank); the message says so in one line."""


@dataclass(frozen=True)
class FileHit(SearchHit):
    """One file of a per-file search result (:func:`group_hits_by_file`).

    ``key``, ``path``, ``score``, ``start_s``, ``end_s`` and ``row`` are those of the file's best segment (the
    same fields as :class:`SearchHit`, so code that reads segment hits reads file hits too; times in seconds);
    ``matched`` is how many of the file's segments are among the ranked segments that were grouped (every
    segment scoring at least as high as the best segment of the last file returned); ``segments`` is how many
    segments the file has in the index (None when not known).
    """

    matched: int = 1
    segments: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dict(vars(self))


def check_query(text: str) -> str:
    """``text`` stripped of surrounding white space; raises :class:`SearchQueryError` when nothing is left."""
    if not isinstance(text, str) or not text.strip():
        raise SearchQueryError("empty search query: give some words, e.g. 'a dog barking'")
    return text.strip()


def group_hits_by_file(hits: Sequence[SearchHit], top: int = 10,
                       segments_of: dict[str, int] | None = None) -> list[FileHit]:
    """Group ranked segment ``hits`` per file: the ``top`` files with the best segments, best first.

    Each file is represented by its best segment; ``matched`` counts its segments among ``hits`` that score at
    least the best score of the ``top``-th file (so a long recording with many similar windows is one result
    saying how many of its windows match, not ``top`` results). Hits after that cut-off are not counted.

    Args:
        hits: segment hits (:class:`SearchHit`), in any order (sorted here by score, equal scores by row: the
            earlier segment of a file represents it).
        top: most files returned (``<= 0``: none).
        segments_of: ``{key: number of segments}`` to fill :attr:`FileHit.segments` (optional).
    """
    if top <= 0:
        return []
    ranked = sorted(hits, key=lambda h: (-h.score, h.row))
    best: dict[str, SearchHit] = {}
    counts: dict[str, int] = {}
    cutoff = None
    for h in ranked:
        if cutoff is not None and (h.score < cutoff or h.key not in best):
            break
        if h.key not in best:
            best[h.key] = h
            if len(best) == top:
                cutoff = h.score
        counts[h.key] = counts.get(h.key, 0) + 1
    return [FileHit(h.key, h.path, h.score, h.start_s, h.end_s, h.row, counts[k],
                    None if segments_of is None else segments_of.get(k)) for k, h in best.items()]


def search_files(index: SearchIndex, query: np.ndarray, top: int = 10) -> list[FileHit]:
    """The ``top`` files of ``index`` most similar to one query embedding ``[dim]`` (see
    :func:`group_hits_by_file`). Searches more segments than ``top`` — growing the search until it holds more
    than ``top`` distinct files or every segment — so that one long file cannot crowd the others out.

    The cost does not grow with the number of files beyond the search itself: the segment counts are read for
    the files hit only, from the key table built once per index (:meth:`SearchIndex._key_table`)."""
    n_rows, n_files = index.n_rows, len(index.entries)
    if top <= 0 or n_rows == 0:
        return []
    keys, bounds = index._key_table()
    k = min(n_rows, max(4 * top, top + 32))
    while True:
        hits = index.search(query, k)
        if k >= n_rows or len({h.key for h in hits}) > min(top, n_files):
            break
        k = min(n_rows, 4 * k)
    segments_of = {h.key: int(bounds[keys[h.key] + 1] - bounds[keys[h.key]]) for h in hits if h.key in keys}
    return group_hits_by_file(hits, top, segments_of)


def _query_embeddings(idx: SearchIndex, queries: Sequence[str] | np.ndarray, model: TextAudioModel) -> np.ndarray:
    """Query embeddings ``[Q, dim]`` of texts (one ``model.encode_text`` call) or of given vectors."""
    if isinstance(queries, np.ndarray):
        emb = queries.reshape(1, -1) if queries.ndim == 1 else queries
    else:
        texts = [check_query(q) for q in queries]
        if model is None:
            raise ValueError("a text query needs a model with encode_text")
        emb = np.asarray(model.encode_text(texts)).reshape(len(texts), -1) if texts else np.zeros((0, idx.dim))
    if idx.entries and emb.shape[-1] != idx.dim:
        raise SearchIndexError(f"query embedding has {emb.shape[-1]} dims but the index holds {idx.dim}-d "
                               "embeddings; search with the model that built the index")
    return emb


def search_many(index: SearchIndex | str | os.PathLike, queries: Sequence[str] | np.ndarray,
                model: TextAudioModel | None = None,
                top: int = 10, *, segments: bool = False,
                model_id: str | None = None) -> list[list[FileHit]] | list[list[SearchHit]]:
    """:func:`search` for several text queries (embedded in one call, so the model is loaded and run once) or
    query embeddings ``[Q, dim]``; one result list per query, in order. Raises :class:`SearchQueryError` when a
    text query is empty or blank, :class:`EmbeddingSpaceError` when ``model_id`` (the path or name ``model``
    was loaded from) is given and the model's embedding space is not the index's (:func:`check_space`)."""
    idx = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    if model is not None and model_id is not None and not isinstance(queries, np.ndarray):
        check_model_space(idx, model, model_id)
    emb = _query_embeddings(idx, queries, model)
    if segments:
        return [idx.search(e, top) for e in emb]
    return [search_files(idx, e, top) for e in emb]


def search(index: SearchIndex | str | os.PathLike, query: str | Sequence[str] | np.ndarray,
           model: TextAudioModel | None = None,
           top: int = 10, *, segments: bool = False) -> list[FileHit] | list[SearchHit]:
    """Rank the indexed files for a text query (needs ``model.encode_text``) or a query embedding ``[dim]``.

    By default the result is per file (:class:`FileHit`: the best segment of each of the ``top`` best files
    and how many of its segments matched, see :func:`group_hits_by_file`); ``segments=True`` gives the flat
    list of the ``top`` best segments (:class:`SearchHit`). A sequence of texts: the first one is searched
    (:func:`search_many` searches each). Raises :class:`SearchQueryError` for an empty or blank text.
    """
    if isinstance(query, np.ndarray):
        return search_many(index, query.reshape(1, -1), model, top, segments=segments)[0]
    texts = [query] if isinstance(query, str) else list(query)[:1]
    if not texts:
        raise SearchQueryError("empty search query: give some words, e.g. 'a dog barking'")
    return search_many(index, texts, model, top, segments=segments)[0]
