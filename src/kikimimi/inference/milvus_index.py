"""A search index held in a Milvus collection: the same segments, hits and model checks as a folder index.

:mod:`kikimimi.inference.search` keeps an index in a folder (manifest + embeddings + a faiss index) for one
process on one machine. :class:`MilvusIndex` keeps the same rows in a Milvus collection instead, for collections
that outgrow that: several writers, metadata filters evaluated by the database, replicas and sharding on a
Milvus cluster. The URI picks the deployment and nothing else changes:

- a local path ending in ``.db`` — *Milvus Lite* (it keeps its files there), embedded in this process (``pip install
  "kikimimi[milvus]"`` brings ``milvus-lite``; no server to run);
- ``http://host:19530`` (or ``https://``, ``tcp://``) — a Milvus standalone server or cluster.

One collection (default :data:`DEFAULT_COLLECTION`) holds one indexed root. Each row is one segment of one
file (the segmenting of :func:`kikimimi.inference.search.embed_segments`): ``vector`` (the unit-normalised
embedding, ``[dim]`` float32, searched by inner product = cosine), ``key`` (path relative to the root), ``path``,
``seg`` (the segment's number in its file), ``start_s``/``end_s``/``duration_s`` (seconds), ``size``/``mtime_ns``
(the file's stat, to re-embed only changed files) and ``tags`` (an array of strings). Row ids are assigned by
the database (``auto_id``), so concurrent writers never collide.

The collection's property :data:`PROPERTY` records, as JSON, the format, the model, the model's identity
(:func:`kikimimi.inference.search.model_identity`: weights SHA-256, front end, normalisation statistics,
precision, dimension), the kikimimi version, the root and the segmenting: adding or searching with a model of
another embedding space is refused with the same one-line message as a folder index
(:func:`kikimimi.inference.search.check_space`).

Updates are ordered for readers: a changed file's new rows are inserted before its old ones are deleted, so a
search running meanwhile sees the file (briefly twice), never not at all. Deletes are immediate for searches;
the database compacts its segments itself. An update ends with a flush, which seals the new rows into indexed
segments (Milvus Lite searches unsealed rows by brute force). The vector index is Milvus's own (:class:`MilvusSettings`:
``HNSW`` by default, ``FLAT`` for exact search).

:func:`check_milvus_index` verifies the rows against the files they name (missing, changed since they were
embedded, unreadable, or naming a file outside the indexed root) and :func:`repair_milvus_index` repairs what it
found — the rows of missing, unreadable and outside files deleted, changed files embedded again (new rows before
the old ones go) — as ``kikimimi index --check URI`` does; :func:`compact_milvus_index` asks the database to compact
its segments now (deleted rows are dropped from storage; Milvus also does it by itself in the background).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from kikimimi.audio.decode import AudioDecodeError, audio_info
from kikimimi.fileio import collect_audio_files, relative_key
from kikimimi.inference.jobs import NON_FINITE
from kikimimi.inference.search import (
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    FileHit,
    IndexUpdate,
    SearchHit,
    SearchIndexError,
    _same_file,
    _stat,
    check_query,
    check_space,
    embed_segments,
    group_hits_by_file,
    model_identity,
)
from kikimimi.inference.vector_index import normalise
from kikimimi.models.encoder import TextAudioModel

__all__ = ["DEFAULT_COLLECTION", "FORMAT", "INDEX_TYPES", "MISSING_EXTRA", "PROPERTY", "DatabaseCheck", "MilvusIndex",
           "MilvusSettings", "MissingIndexError", "SearchFilter", "check_milvus_index", "compact_milvus_index",
           "is_database_uri", "repair_milvus_index", "search", "update_milvus_index"]

FORMAT = "kikimimi-milvus-index/1"
DEFAULT_COLLECTION = "kikimimi_segments"
#: the collection property holding the index's record (JSON)
PROPERTY = "kikimimi_index"
INDEX_TYPES = ("HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX")
MISSING_EXTRA = 'the Milvus backend needs pymilvus and milvus-lite: pip install "kikimimi[milvus]"'
#: longest key/path stored (Milvus VARCHAR limit in bytes)
_MAX_TEXT = 4096
_REMOTE = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_database_uri(where: str | os.PathLike) -> bool:
    """Whether ``where`` names a Milvus database (``http(s)://…`` or a ``*.db`` file), not an index folder."""
    text = os.fspath(where)
    return text.startswith(_REMOTE) or text.endswith(".db")


def _expand(uri: str | os.PathLike) -> str:
    """``uri`` as text, ``~`` expanded in a local path."""
    text = os.fspath(uri)
    return text if text.startswith(_REMOTE) else os.path.expanduser(text)


def _pymilvus() -> Any:
    """The ``pymilvus`` module, or :class:`SearchIndexError` naming the extra."""
    try:
        import pymilvus
    except ImportError as exc:
        raise SearchIndexError(MISSING_EXTRA) from exc
    return pymilvus


def _client(uri: str, token: str | None) -> Any:
    """A connected ``pymilvus.MilvusClient``; a missing extra or an unreachable server is one line."""
    local = not uri.startswith(_REMOTE)
    if local and not uri.endswith(".db"):
        raise SearchIndexError(f"'{uri}': a Milvus Lite database is a path whose name ends in .db (or give "
                               "http://host:19530 for a Milvus server)")
    pymilvus = _pymilvus()
    if local:
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it for a file URI)
        except ImportError as exc:
            raise SearchIndexError(MISSING_EXTRA) from exc
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        uri = str(Path(uri).resolve())
    try:
        return pymilvus.MilvusClient(uri=uri, token=token or "")
    except Exception as exc:  # pymilvus raises its own exception types, and OSError/RuntimeError from milvus-lite
        raise SearchIndexError(f"'{uri}': cannot open the Milvus database ({_short(exc)})") from exc


#: loggers that report, as errors or warnings, what kikimimi handles: a call Milvus Lite does not implement
#: (pymilvus asks for a server timestamp while waiting for an index or starting an iterator, then goes on
#: without it), a load retried while Milvus Lite's background builder writes an index file
_NOISY = ("grpc._server", "pymilvus.client.iterator.query_iterator", "pymilvus.decorators",
          "milvus_lite.adapter.grpc.servicer")


@contextlib.contextmanager
def _quiet_lite_server() -> Iterator[None]:
    """Keep the :data:`_NOISY` loggers' tracebacks (of calls that are handled) off the user's terminal."""
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _short(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:300]


def _literal(text: str) -> str:
    """A string literal for a Milvus filter expression (double-quoted, escaped)."""
    return json.dumps(str(text), ensure_ascii=False)


def _version() -> str:
    try:
        return metadata.version("kikimimi")
    except metadata.PackageNotFoundError:  # pragma: no cover - source tree without installation
        return "unknown"


class MissingIndexError(SearchIndexError):
    """No Milvus Lite database at that path, or no such collection in the database."""


@dataclass(frozen=True)
class MilvusSettings:
    """Where and how the collection lives.

    ``index_type``: Milvus's vector index (``HNSW``: approximate, ``hnsw_m`` links per node, built with
    ``ef_construction`` and searched with ``ef_search`` candidates, at least ``top``; ``FLAT``: exact;
    ``IVF_FLAT``: ``nlist`` lists, ``nprobe`` searched; ``AUTOINDEX``: the server's choice). ``token``: a
    Milvus server's credentials (``user:password`` or an API key), never stored.
    """

    collection: str = DEFAULT_COLLECTION
    index_type: str = "HNSW"
    hnsw_m: int = 32
    ef_construction: int = 128
    ef_search: int = 256
    nlist: int = 256
    nprobe: int = 32
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise SearchIndexError(f"unknown Milvus index type {self.index_type!r}; expected one of {INDEX_TYPES}")

    def index_params(self) -> dict[str, Any]:
        """The build parameters of :attr:`index_type`."""
        if self.index_type == "HNSW":
            return {"M": int(self.hnsw_m), "efConstruction": int(self.ef_construction)}
        if self.index_type == "IVF_FLAT":
            return {"nlist": int(self.nlist)}
        return {}

    def search_params(self, top: int) -> dict[str, Any]:
        """The search parameters for ``top`` results."""
        if self.index_type == "HNSW":
            return {"ef": max(int(self.ef_search), int(top))}
        if self.index_type == "IVF_FLAT":
            return {"nprobe": int(self.nprobe)}
        return {}


@dataclass(frozen=True)
class SearchFilter:
    """Metadata conditions a hit must meet, evaluated by the database before ranking.

    ``path_prefix``: the file's key (path relative to the indexed root) starts with it — or, when absolute, its
    path does; ``min_duration_s``/``max_duration_s``: the file's duration in seconds; ``tags``: the file carries
    every one of them.
    """

    path_prefix: str | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    tags: tuple[str, ...] = ()

    def expression(self) -> str:
        """The Milvus boolean expression (``""``: no condition). A prefix is matched with ``like``, its ``%``
        and ``_`` escaped; up to a backslash only (``like`` cannot escape one), and :meth:`accepts` checks the
        rest."""
        parts = []
        if self.path_prefix:
            name = "path" if os.path.isabs(self.path_prefix) else "key"
            stem = self.path_prefix.split("\\")[0].replace("%", "\\%").replace("_", "\\_")
            parts.append(f"{name} like {_literal(stem + '%')}")
        if self.min_duration_s is not None:
            parts.append(f"duration_s >= {float(self.min_duration_s)!r}")
        if self.max_duration_s is not None:
            parts.append(f"duration_s <= {float(self.max_duration_s)!r}")
        if self.tags:
            parts.append(f"array_contains_all(tags, [{', '.join(_literal(t) for t in self.tags)}])")
        return " and ".join(parts)

    def accepts(self, key: str, path: str) -> bool:
        """Whether a hit's file passes the path prefix exactly (a prefix with a backslash: the database matched
        a superset)."""
        if not self.path_prefix:
            return True
        return (path if os.path.isabs(self.path_prefix) else key).startswith(self.path_prefix)


_OUTPUT = ["key", "path", "seg", "start_s", "end_s"]


class MilvusIndex:
    """One indexed root in a Milvus collection (see the module docstring).

    Open an existing one with :meth:`open`, create one with :meth:`create`. ``model``, ``model_identity``,
    ``dim``, ``root``, ``window_s``/``hop_s`` come from the collection's record; ``folder`` names the database
    in messages (the attribute :func:`kikimimi.inference.search.check_space` reads).
    """

    def __init__(self, client: Any, uri: str, settings: MilvusSettings, record: dict[str, Any]) -> None:
        self._client = client
        self.uri = uri
        self.settings = settings
        self.record = record
        self.model: str = str(record.get("model", ""))
        self.model_identity: dict[str, Any] | None = record.get("model_identity")
        self.dim = int(record["dim"])
        self.root: str = str(record.get("root", ""))
        self.window_s: float | None = record.get("window_s")
        self.hop_s: float | None = record.get("hop_s")
        suffix = "" if settings.collection == DEFAULT_COLLECTION else f"#{settings.collection}"
        self.folder = f"{uri}{suffix}"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, uri: str | os.PathLike, settings: MilvusSettings | None = None) -> MilvusIndex:
        """Open the index in collection ``settings.collection`` of the database at ``uri`` (searched with the
        parameters of ``settings`` for the index type the collection recorded).

        Raises:
            SearchIndexError: pymilvus missing (names the extra), the database cannot be opened, no such
                collection, or a collection that kikimimi did not write.
        """
        settings = settings or MilvusSettings()
        uri = _expand(uri)
        if not uri.startswith(_REMOTE) and not Path(uri).exists():
            raise MissingIndexError(f"'{uri}': no Milvus Lite database (build one with `kikimimi index DIR -m MODEL "
                                   f"--db {uri}`)")
        client = _client(uri, settings.token)
        name = settings.collection
        try:
            if not client.has_collection(name):
                raise MissingIndexError(f"'{uri}': no collection '{name}' (build it with `kikimimi index DIR -m MODEL "
                                       f"--db {uri}`)")
            props = client.describe_collection(name).get("properties") or {}
            client.load_collection(name)
        except SearchIndexError:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise SearchIndexError(f"'{uri}': cannot read collection '{name}' ({_short(exc)})") from exc
        try:
            record = json.loads(props[PROPERTY])
            if record.get("format") != FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
            int(record["dim"])
        except (KeyError, ValueError, TypeError) as exc:
            client.close()
            raise SearchIndexError(f"'{uri}': collection '{name}' is not a kikimimi search index ({exc}); name "
                                   "another with --collection, or rebuild it (--rebuild)") from None
        if record.get("index_type") in INDEX_TYPES:  # search with the parameters of the index it has
            settings = dataclasses.replace(settings, index_type=record["index_type"])
        return cls(client, uri, settings, record)

    @classmethod
    def create(cls, uri: str | os.PathLike, *, dim: int, model: str, identity: dict[str, Any] | None, root: str,
               window_s: float | None = DEFAULT_WINDOW_S, hop_s: float | None = DEFAULT_HOP_S,
               settings: MilvusSettings | None = None, replace: bool = False) -> MilvusIndex:
        """Create the collection for ``dim``-dimensional vectors of ``model`` (``identity``: its
        :func:`~kikimimi.inference.search.model_identity`) over ``root``. An existing collection of that name
        is an error unless ``replace`` (then it is dropped first)."""
        settings = settings or MilvusSettings()
        uri = _expand(uri)
        client = _client(uri, settings.token)
        DataType, MilvusClient = _pymilvus().DataType, _pymilvus().MilvusClient  # noqa: N806 - pymilvus' names
        name = settings.collection
        record = {"format": FORMAT, "model": model, "model_identity": identity, "dim": int(dim), "root": root,
                  "window_s": window_s, "hop_s": hop_s, "kikimimi": _version(), "index_type": settings.index_type,
                  "index_params": settings.index_params()}
        try:
            if client.has_collection(name):
                if not replace:
                    raise SearchIndexError(f"'{uri}': collection '{name}' exists; open it, or rebuild it (--rebuild)")
                client.drop_collection(name)
            schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
            schema.add_field("key", DataType.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field("path", DataType.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field("seg", DataType.INT32)
            for name_s in ("start_s", "end_s", "duration_s"):
                schema.add_field(name_s, DataType.DOUBLE)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime_ns", DataType.INT64)
            schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=256)
            index_params = client.prepare_index_params()
            index_params.add_index("vector", index_type=settings.index_type, metric_type="IP",
                                   params=settings.index_params())
            index_params.add_index("key", index_type="INVERTED")
            with _quiet_lite_server():
                client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")
            client.alter_collection_properties(name, properties={PROPERTY: json.dumps(record, default=str)})
        except SearchIndexError:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise SearchIndexError(f"'{uri}': cannot create collection '{name}' ({_short(exc)})") from exc
        return cls(client, uri, settings, json.loads(json.dumps(record, default=str)))

    def close(self) -> None:
        """Release the connection (Milvus Lite: the embedded database)."""
        self._client.close()

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self.settings.collection, *args, **kwargs)
        except SearchIndexError:
            raise
        except Exception as exc:
            raise SearchIndexError(f"'{self.folder}': {what} failed ({_short(exc)})") from exc

    # ------------------------------------------------------------------ contents
    @property
    def n_rows(self) -> int:
        """Number of segments stored."""
        rows = self._call("counting", self._client.query, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def files(self) -> dict[str, dict[str, Any]]:
        """Per indexed file key: ``size``, ``mtime_ns``, ``duration_s``, ``path`` and ``segments`` (count)."""
        out: dict[str, dict[str, Any]] = {}
        fields = ["key", "path", "size", "mtime_ns", "duration_s"]
        with _quiet_lite_server():
            it = self._call("listing", self._client.query_iterator, batch_size=4096, filter="id >= 0",
                            output_fields=fields)
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                for row in batch:
                    entry = out.get(row["key"])
                    if entry is None:
                        out[row["key"]] = {**{k: row[k] for k in fields[1:]}, "segments": 1}
                    else:
                        entry["segments"] += 1
        except Exception as exc:
            raise SearchIndexError(f"'{self.folder}': listing failed ({_short(exc)})") from exc
        finally:
            it.close()
        return out

    @property
    def n_files(self) -> int:
        """Number of indexed files (their first segments)."""
        rows = self._call("counting", self._client.query, filter="seg == 0", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def segmenting(self) -> tuple[float | None, float | None]:
        """``(window_s, hop_s)`` the index was built with."""
        return self.window_s, self.hop_s

    def describe(self) -> dict[str, Any]:
        """The vector index as a client may see it: ``kind`` ``"milvus"``, Milvus's index type and parameters, the
        search parameters, ``exact`` and the row count (no URI: it may hold a host or a path)."""
        return {"kind": "milvus", "index_type": self.settings.index_type,
                "params": self.record.get("index_params") or {}, "search_params": self.settings.search_params(10),
                "exact": self.settings.index_type == "FLAT", "rows": self.n_rows,
                "collection": self.settings.collection}

    def entry(self, key: str) -> dict[str, Any] | None:
        """File ``key``'s record (``key``, ``path``, ``size``, ``mtime_ns``, ``duration_s``), as a folder index's
        manifest entry, or None when it is not indexed."""
        rows = self._call("querying", self._client.query, filter=f"key == {_literal(key)}", limit=1,
                          output_fields=["key", "path", "size", "mtime_ns", "duration_s"])
        return {k: rows[0][k] for k in ("key", "path", "size", "mtime_ns", "duration_s")} if rows else None

    def rows_of(self, key: str) -> np.ndarray:
        """Row ids of file ``key``'s segments ``[S]`` int64 (empty when not indexed; :attr:`SearchHit.row`)."""
        return np.asarray(sorted(self.row_ids([key])), np.int64)

    def file_vector(self, key: str) -> np.ndarray | None:
        """The unit mean of file ``key``'s segment embeddings ``[dim]`` (a query "like this file"), or None when
        the key is not indexed."""
        rows = self._call("querying", self._client.query, filter=f"key == {_literal(key)}", output_fields=["vector"])
        if not rows:
            return None
        return normalise(normalise(np.asarray([r["vector"] for r in rows], np.float32)).mean(axis=0))[0]

    def add_file(self, entry: dict[str, Any], embeddings: np.ndarray, segments: Sequence[Sequence[float]],
                 tags: Sequence[str] = ()) -> list[int]:
        """Insert one file's segments: ``entry`` (``key``, ``path``, ``size``, ``mtime_ns``, ``duration_s``),
        ``embeddings`` ``[S, dim]`` (normalised here), ``segments`` ``[[start_s, end_s], ...]``. Returns the
        new row ids, in segment order."""
        return self.add_files([(entry, embeddings, segments, tags)])

    def add_files(self, files: Sequence[tuple[dict[str, Any], np.ndarray, Sequence[Sequence[float]], Sequence[str]]]
                  ) -> list[int]:
        """:meth:`add_file` for several ``(entry, embeddings, segments, tags)`` in one insert; the ids of all
        their rows in order."""
        rows: list[dict[str, Any]] = []
        for entry, embeddings, segments, tags in files:
            emb = normalise(embeddings)
            if emb.shape[1] != self.dim or emb.shape[0] != len(segments):
                raise SearchIndexError(f"'{self.folder}': {emb.shape[0]} embeddings of {emb.shape[1]} dims for "
                                       f"{len(segments)} segments of a {self.dim}-d index ('{entry.get('key')}')")
            for name in ("key", "path"):
                if len(str(entry[name]).encode()) > _MAX_TEXT:
                    raise SearchIndexError(f"'{entry[name][:80]}…': a {name} longer than {_MAX_TEXT} bytes")
            rows += [{"vector": emb[i].tolist(), "key": str(entry["key"]), "path": str(entry["path"]), "seg": i,
                      "start_s": float(s0 or 0.0), "end_s": float(s1) if s1 is not None else float("nan"),
                      "duration_s": float(entry.get("duration_s") or 0.0), "size": int(entry.get("size", 0)),
                      "mtime_ns": int(entry.get("mtime_ns", 0)), "tags": [str(t) for t in tags]}
                     for i, (s0, s1) in enumerate(segments)]
        ids: list[int] = []
        for start in range(0, len(rows), 2048):
            done = self._call("inserting", self._client.insert, rows[start:start + 2048])
            ids += [int(i) for i in done.get("ids", [])]
        return ids

    def flush(self) -> None:
        """Seal the rows written so far into indexed segments (Milvus Lite searches unsealed rows by brute force
        and converts them on every search: after a bulk write, flushing makes searches fast)."""
        with _quiet_lite_server():
            self._call("flushing", self._client.flush)

    def wait_for_index(self, timeout_s: float = 600.0, poll_s: float = 0.2) -> float:
        """Wait until the vector index covers every flushed row; returns the seconds waited.

        Milvus builds it in the background after a flush, and until then searches are exact and slow. Milvus
        Lite's builder does not report its progress: its collection is released and loaded again, which builds
        the missing indexes at once (searches in between fail, so call this while no one searches, e.g. in a
        benchmark). A server is polled until it reports no pending rows. Raises :class:`SearchIndexError` after
        ``timeout_s``."""
        start = time.monotonic()
        if not self.uri.startswith(_REMOTE):
            with _quiet_lite_server():
                self._call("releasing", self._client.release_collection)
                while True:  # the background builder may be writing an index file that loading reads: retry
                    try:
                        self._call("loading", self._client.load_collection)
                        return time.monotonic() - start
                    except SearchIndexError:
                        if time.monotonic() - start > timeout_s:
                            raise
                    time.sleep(max(poll_s, 0.5))
        while True:
            info = self._call("describing the index", self._client.describe_index, index_name="vector")
            if int(info.get("pending_index_rows", 0)) == 0 and \
                    int(info.get("indexed_rows", 0)) >= int(info.get("total_rows", 0)):
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise SearchIndexError(f"'{self.folder}': the vector index is still building after {timeout_s:.0f} s "
                                       f"({info.get('indexed_rows')} of {info.get('total_rows')} rows)")
            time.sleep(poll_s)

    def row_ids(self, keys: Sequence[str]) -> list[int]:
        """Row ids of the segments of these file keys."""
        ids: list[int] = []
        keys = list(keys)
        for start in range(0, len(keys), 512):
            expr = f"key in [{', '.join(_literal(k) for k in keys[start:start + 512])}]"
            ids += [int(r["id"]) for r in self._call("querying", self._client.query, filter=expr,
                                                       output_fields=["id"])]
        return ids

    def delete_rows(self, ids: Sequence[int]) -> None:
        """Delete rows by id (immediately invisible to searches)."""
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 4096):
            self._call("deleting", self._client.delete, ids=ids[start:start + 4096])

    def delete_files(self, keys: Sequence[str]) -> None:
        """Delete every segment of these file keys."""
        self.delete_rows(self.row_ids(keys))

    # ------------------------------------------------------------------ search
    def search_vectors(self, queries: np.ndarray, top: int = 10,
                       where: SearchFilter | None = None) -> list[list[SearchHit]]:
        """The ``top`` segments most similar (cosine) to each query ``[Q, dim]`` (or ``[dim]``), best first;
        ``SearchHit.row`` is the database's row id."""
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise SearchIndexError(f"query embedding has {q.shape[1]} dims but the index holds {self.dim}-d "
                                   "embeddings; search with the model that built the index")
        if top <= 0 or q.shape[0] == 0:
            return [[] for _ in range(q.shape[0])]
        where = where or SearchFilter()
        found = self._call("searching", self._client.search, data=[v.tolist() for v in q], limit=int(top),
                           filter=where.expression(), output_fields=_OUTPUT,
                           search_params={"metric_type": "IP", "params": self.settings.search_params(top)})
        out = []
        for hits in found:
            row = []
            for h in hits:
                e = h["entity"]
                if not where.accepts(e["key"], e["path"]):
                    continue
                end = e.get("end_s")
                row.append(SearchHit(e["key"], e["path"], float(h["distance"]), float(e["start_s"]),
                                     None if end is None or math.isnan(end) else float(end), int(h["id"])))
            out.append(row)
        return out

    def search(self, query: np.ndarray, top: int = 10, where: SearchFilter | None = None) -> list[SearchHit]:
        """:meth:`search_vectors` for one query ``[dim]`` (the folder index's ``SearchIndex.search``)."""
        return self.search_vectors(np.asarray(query, np.float32).reshape(1, -1), top, where)[0]

    def search_files(self, query: np.ndarray, top: int = 10, where: SearchFilter | None = None) -> list[FileHit]:
        """The ``top`` files most similar to one query ``[dim]`` (as
        :func:`kikimimi.inference.search.search_files`: more segments are searched until they hold more than
        ``top`` files or every segment, so that one long file cannot crowd the others out)."""
        if top <= 0:
            return []
        n_rows = self.n_rows
        if n_rows == 0:
            return []
        k = min(n_rows, max(4 * top, top + 32), 16384)  # 16384: the most a Milvus search returns
        while True:
            hits = self.search(query, k, where)
            if k >= min(n_rows, 16384) or len({h.key for h in hits}) > top:
                break
            k = min(n_rows, 4 * k, 16384)
        counts: dict[str, int] = {}
        keys = sorted({h.key for h in hits})
        for start in range(0, len(keys), 512):
            expr = f"key in [{', '.join(_literal(x) for x in keys[start:start + 512])}]"
            for r in self._call("querying", self._client.query, filter=expr, output_fields=["key"]):
                counts[r["key"]] = counts.get(r["key"], 0) + 1
        return group_hits_by_file(hits, top, counts)


def search(index: MilvusIndex, query: str | Sequence[str] | np.ndarray, model: TextAudioModel | None = None,
           top: int = 10, *, segments: bool = False, model_id: str | None = None,
           where: SearchFilter | None = None) -> list[FileHit] | list[SearchHit]:
    """:func:`kikimimi.inference.search.search` on a database index: a text query (embedded by
    ``model.encode_text``; refused with :class:`~kikimimi.inference.search.EmbeddingSpaceError` when
    ``model_id`` is given and the model's space is not the index's) or a query embedding ``[dim]``; per file
    by default, per segment with ``segments=True``; ``where`` filters by path prefix, duration and tags."""
    if isinstance(query, np.ndarray):
        emb = query.reshape(-1)
    else:
        texts = [query] if isinstance(query, str) else list(query)[:1]
        text = check_query(texts[0] if texts else "")
        if model is None:
            raise ValueError("a text query needs a model with encode_text")
        if model_id is not None:
            check_space(index, model_identity(model, model_id), model_id)
        emb = np.asarray(model.encode_text([text]), np.float32).reshape(-1)
    if segments:
        return index.search(emb, top, where)
    return index.search_files(emb, top, where)


def update_milvus_index(model: TextAudioModel, root: str | os.PathLike, uri: str | os.PathLike, *, model_id: str,
                        settings: MilvusSettings | None = None, batch_size: int = 8, rebuild: bool = False,
                        window_s: float = DEFAULT_WINDOW_S, hop_s: float = DEFAULT_HOP_S,
                        tags_of: Callable[[str], Sequence[str]] | None = None,
                        log: Callable[[str], None] | None = None) -> IndexUpdate:
    """:func:`kikimimi.inference.search.update_index` into a Milvus collection: embed the files under
    ``root`` that are new or whose size/mtime changed, drop removed ones.

    Each file is written as soon as it is embedded (a killed run keeps what it finished). ``tags_of``: the
    tags to store for a file key (default none). Unreadable files are reported in ``errors`` and tried again
    next time. The collection is created on first use; an existing one built with another model (embedding
    space), root or segmenting is refused unless ``rebuild`` (dropped and built again).

    Raises:
        SearchIndexError: the folder is missing, the database cannot be opened, or it belongs to another
            model or root.
        EmbeddingSpaceError: the model's embedding space is not the collection's.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise SearchIndexError(f"'{root_path}': folder to index not found")
    if window_s > 0 and not 0 < hop_s <= window_s:
        raise SearchIndexError(f"segment hop must be in (0, window_s={window_s}] seconds, got {hop_s}")
    hop_s = float(hop_s) if window_s > 0 else 0.0
    settings = settings or MilvusSettings()
    identity = model_identity(model, model_id)
    root_s = str(root_path.resolve())
    index: MilvusIndex | None = None
    if not rebuild:
        try:
            index = MilvusIndex.open(uri, settings)
        except MissingIndexError:
            index = None
    if index is not None:
        try:
            if identity is not None and index.model_identity is not None:
                check_space(index, identity, model_id, doing="add")
            elif index.model != model_id:
                raise SearchIndexError(f"'{index.folder}': built with model '{index.model}', not '{model_id}'; use "
                                       "another --collection or rebuild it (--rebuild)")
            if Path(index.root) != Path(root_s):
                raise SearchIndexError(f"'{index.folder}': indexes '{index.root}', not '{root_s}'; use another "
                                       "--collection or rebuild it (--rebuild)")
            if (index.window_s, index.hop_s) != (float(window_s), hop_s):
                raise SearchIndexError(f"'{index.folder}': segmented with window {index.window_s} s, hop "
                                       f"{index.hop_s} s; pass those or rebuild it (--rebuild)")
        except SearchIndexError:
            index.close()
            raise
    update = IndexUpdate()
    try:
        previous = index.files() if index is not None else {}
        files = collect_audio_files([root_path])
        seen: set[str] = set()
        todo: list[tuple[str, Path, dict[str, Any]]] = []
        for path in files:
            key = relative_key(path, root_path)
            seen.add(key)
            st = _stat(path)
            if st is None:
                update.errors.append((key, "cannot stat the file"))
                continue
            prior = previous.get(key)
            if prior is not None and _same_file(prior, st):
                update.unchanged.append(key)
                continue
            (update.changed if prior is not None else update.added).append(key)
            todo.append((key, path, {"key": key, "path": str(path.resolve()), "size": st[0], "mtime_ns": st[1]}))
        update.removed = sorted(k for k in previous if k not in seen)
        for n, (key, path, entry) in enumerate(todo, 1):
            try:
                emb, segs, duration = embed_segments(model, path, window_s=window_s, hop_s=hop_s,
                                                     batch_size=batch_size)
            except AudioDecodeError as exc:
                update.errors.append((key, exc.reason))
                continue
            if not np.isfinite(emb).all():
                update.errors.append((key, NON_FINITE))
                continue
            if index is None:
                index = MilvusIndex.create(uri, dim=int(emb.shape[-1]), model=model_id, identity=identity,
                                           root=root_s, window_s=float(window_s), hop_s=hop_s, settings=settings,
                                           replace=rebuild)
            old_ids = index.row_ids([key]) if key in previous else []
            index.add_file({**entry, "duration_s": round(duration, 6)}, emb, segs,
                           tags_of(key) if tags_of else ())
            index.delete_rows(old_ids)  # after the new rows: a reader never misses the file
            if log:
                log(f"embedded {n}/{len(todo)}")
        failed = {k for k, _ in update.errors}
        update.added = [k for k in update.added if k not in failed]
        update.changed = [k for k in update.changed if k not in failed]
        if index is not None:
            # a changed file that became unreadable is dropped, like a removed one
            index.delete_files(update.removed + [k for k in failed if k in previous])
            if update.embedded or update.removed:
                index.flush()
    finally:
        if index is not None:
            index.close()
    return update


@dataclass
class DatabaseCheck:
    """What :func:`check_milvus_index` found (file keys) and :func:`repair_milvus_index` did.

    ``missing``: no file at the key any more; ``changed``: its size or mtime is not the recorded one;
    ``unreadable``: ``(key, reason)``, its header does not decode; ``outside``: ``(key, reason)``, the key or the
    recorded path leaves the indexed root (never served, never embedded). ``removed`` / ``re_embedded``: keys
    repaired; ``not_repaired``: ``(key, reason)``.
    """

    files: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    outside: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    re_embedded: list[str] = field(default_factory=list)
    not_repaired: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """Whether every row names an unchanged, readable file inside the root."""
        return not (self.missing or self.changed or self.unreadable or self.outside)

    def problems(self) -> list[str]:
        """One line per problem found, ``'KEY': what``."""
        return ([f"'{k}': missing" for k in self.missing] + [f"'{k}': changed since it was indexed" for k in
                                                              self.changed]
                + [f"'{k}': unreadable ({r})" for k, r in self.unreadable]
                + [f"'{k}': {r}" for k, r in self.outside])


def _outside(key: str, path: str, root: str) -> str | None:
    """Why a row's ``key`` / recorded ``path`` leaves the indexed ``root`` (None: it does not)."""
    parts = PurePosixPath(key).parts
    if not key or "\x00" in key or PurePosixPath(key).is_absolute() or ".." in parts:
        return "its key leaves the indexed folder"
    real_root = os.path.realpath(root)
    try:
        inside = os.path.commonpath([os.path.normpath(path), real_root]) == real_root
    except ValueError:
        inside = False
    return None if inside else "its recorded path is outside the indexed folder"


def check_milvus_index(uri: str | os.PathLike, settings: MilvusSettings | None = None) -> DatabaseCheck:
    """Check every file a database index lists against the file itself (reads each file's header only; the
    database is not changed). Raises :class:`SearchIndexError` when the database cannot be opened."""
    out = DatabaseCheck()
    with MilvusIndex.open(uri, settings) as index:
        files = index.files()
        out.files, out.rows = len(files), sum(int(f["segments"]) for f in files.values())
        for key, record in sorted(files.items()):
            reason = _outside(key, str(record.get("path", "")), index.root)
            if reason:
                out.outside.append((key, reason))
                continue
            path = Path(index.root, *PurePosixPath(key).parts)
            st = _stat(path)
            if st is None:
                out.missing.append(key)
            elif not _same_file(record, st):
                out.changed.append(key)
            else:
                try:
                    audio_info(path)
                except AudioDecodeError as exc:
                    out.unreadable.append((key, exc.reason))
    return out


def repair_milvus_index(uri: str | os.PathLike, found: DatabaseCheck, settings: MilvusSettings | None = None, *,
                        model: TextAudioModel | None = None, model_id: str | None = None,
                        batch_size: int = 8) -> DatabaseCheck:
    """Repair what :func:`check_milvus_index` ``found``: delete the rows of missing, unreadable and outside files;
    embed changed files again with ``model`` (refused when ``model_id``'s embedding space is not the index's;
    without a model they are listed in ``not_repaired``), inserting the new rows before deleting the old ones.
    Returns ``found`` with ``removed``, ``re_embedded`` and ``not_repaired`` filled in."""
    with MilvusIndex.open(uri, settings) as index:
        if model is not None and model_id is not None:
            identity = model_identity(model, model_id)
            if identity is not None and index.model_identity is not None:
                check_space(index, identity, model_id, doing="add")
        drop = found.missing + [k for k, _ in found.unreadable] + [k for k, _ in found.outside]
        for key in found.changed:
            if model is None:
                found.not_repaired.append((key, "changed: give the model to embed it again (-m MODEL)"))
                continue
            path = Path(index.root, *PurePosixPath(key).parts)
            st = _stat(path)
            try:
                if st is None:
                    raise AudioDecodeError(str(path), "the file disappeared during the check")
                emb, segs, duration = embed_segments(model, path, window_s=float(index.window_s or 0.0),
                                                     hop_s=float(index.hop_s or 0.0), batch_size=batch_size)
                if not np.isfinite(emb).all():
                    raise AudioDecodeError(str(path), NON_FINITE)
            except AudioDecodeError as exc:
                found.unreadable.append((key, exc.reason))
                drop.append(key)
                continue
            old = index.row_ids([key])
            index.add_file({"key": key, "path": str(path.resolve()), "size": st[0], "mtime_ns": st[1],
                            "duration_s": round(duration, 6)}, emb, segs)
            index.delete_rows(old)  # after the new rows: a reader never misses the file
            found.re_embedded.append(key)
        index.delete_files(drop)
        found.removed = sorted(drop)
        if drop or found.re_embedded:
            index.flush()
    return found


def compact_milvus_index(uri: str | os.PathLike, settings: MilvusSettings | None = None,
                         timeout_s: float = 600.0) -> dict[str, Any]:
    """Ask the database to compact the collection's segments now (dropping deleted rows from storage) and wait
    for the job. Returns ``{"job", "state", "seconds", "rows"}``; a state other than ``"Completed"`` after
    ``timeout_s`` is returned as it is (the database goes on by itself)."""
    with MilvusIndex.open(uri, settings) as index:
        start = time.monotonic()
        with _quiet_lite_server():
            job = index._call("compacting", index._client.compact)
            while True:
                try:
                    state = str(index._client.get_compaction_state(job))
                except Exception as exc:  # pymilvus' own exception types
                    raise SearchIndexError(f"'{index.folder}': compaction job {job} failed ({_short(exc)})") from exc
                if state.lower().endswith("completed") or time.monotonic() - start > timeout_s:
                    break
                time.sleep(0.2)
        return {"job": job, "state": state, "seconds": round(time.monotonic() - start, 2), "rows": index.n_rows}
