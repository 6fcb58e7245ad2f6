"""What the handlers of `kikimimi serve` share: settings (:class:`ServeSettings`), the refusal type
(:class:`ServeError`) and :class:`ServeState` — the model, the index (swapped whole after a re-scan), labels,
captioner, the embedding pool, the served files' checks (:mod:`~kikimimi.apps.serve.files`) and the descriptions
of indexed files (:meth:`ServeState.describe`: the evidence and timeline of :mod:`kikimimi.inference.evidence` /
:mod:`kikimimi.inference.grounded`, the same code as ``kikimimi describe``).

The index is a folder (:class:`~kikimimi.inference.search.SearchIndex`) or a Milvus database
(:class:`~kikimimi.inference.milvus_index.MilvusIndex`, when ``index_dir`` is a URI:
:func:`~kikimimi.inference.milvus_index.is_database_uri`); the handlers use only what both offer — ``root``,
``model``, ``search``, ``search_files``, ``entry``, ``rows_of``, ``file_vector``, ``describe``, ``n_rows``,
``n_files`` — and serve a database's files under the same rules as a folder's (inside its recorded root, the file
it recorded: :mod:`~kikimimi.apps.serve.files`). A database's entries are checked when they first appear in an
answer, not all at load (it may hold millions)."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from kikimimi.apps.serve.files import ServedFile, check_entries, entry_problem, open_indexed
from kikimimi.apps.serve.security import LOOPBACK_NAMES, check_token
from kikimimi.apps.serve.spectrogram import segment_png
from kikimimi.apps.serve.workers import BoundedPool
from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio
from kikimimi.evaluation.zeroshot import class_captions
from kikimimi.fileio import OutputInUseError
from kikimimi.inference.evidence import EvidenceSettings, build_evidence
from kikimimi.inference.grounded import describe as describe_evidence
from kikimimi.inference.grounded import format_span
from kikimimi.inference.milvus_index import MilvusIndex, MilvusSettings, is_database_uri, update_milvus_index
from kikimimi.inference.search import (
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    FileHit,
    SearchHit,
    SearchIndex,
    SearchIndexError,
    update_index,
)
from kikimimi.inference.vector_index import EXACT_BELOW, normalise
from kikimimi.inference.zeroshot import DEFAULT_TEMPLATE, top_labels, zero_shot_scores

__all__ = ["ServeError", "ServeSettings", "ServeState"]

log = logging.getLogger("kikimimi.serve")
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}


@dataclass
class ServeSettings:
    """Limits and options of the server (every one has a command-line flag or a stated default).

    Raises:
        ValueError: a token shorter than :data:`~kikimimi.apps.serve.security.MIN_TOKEN_CHARS` (one line).
    """

    max_upload_bytes: int = 20 * 1024 * 1024  # request bodies above this are refused, counted while they stream
    max_upload_s: float = 120.0  # uploaded clips longer than this (per their header) are refused before decoding
    #: channels × frames an upload may decode to (per its header, before decoding): 2 min of 48 kHz stereo
    max_decoded_samples: int = 120 * 48_000 * 2
    max_query_chars: int = 300
    max_top: int = 100
    max_labels: int = 64  # each label is one text embedding: 300 labels cost ≈ 11 s of model time
    max_label_chars: int = 120
    workers: int = 1  # embedding threads
    queue_limit: int = 8  # jobs waiting for them; one more → 503
    retry_after_s: int = 2
    token: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    template: str = DEFAULT_TEMPLATE  # zero-shot caption template
    window_s: float = DEFAULT_WINDOW_S  # segmenting used by re-scans of a format-/1 index
    hop_s: float = DEFAULT_HOP_S
    vector_kind: str = "auto"
    exact_below: int = EXACT_BELOW
    batch_size: int = 8
    text_cache: int = 4096  # text embeddings kept (labels, repeated queries)
    body_timeout_s: float = 60.0  # a request body must have arrived whole this long after its headers
    failed_token_burst: int = 10  # wrong tokens a client may send at once …
    failed_token_per_s: float = 1.0  # … then this many a second (more: 429 + Retry-After)
    root: str | None = None  # the folder the user asked to serve: the index must index it (None: its own root)
    max_describe_s: float = 600.0  # /api/describe refuses longer files (per their header) before decoding
    describe_segment_s: float = EvidenceSettings.segment_s  # evidence segments of a description
    describe_cache: int = 64  # descriptions kept (keyed on the file's identity)

    def __post_init__(self) -> None:
        check_token(self.token)

    def public(self) -> dict[str, Any]:
        """The limits a client may know (no token, no host names)."""
        return {k: v for k, v in asdict(self).items() if k not in ("token", "allowed_hosts", "root")}


class ServeError(Exception):
    """A request the server refuses: HTTP ``status``, a ``message`` for the client, an optional ``kind``."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        self.status, self.message, self.kind = int(status), message, kind
        super().__init__(message)


@dataclass
class _Scan:
    running: bool = False
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class ServeState:
    """What the handlers share: the model, the index (swapped whole after a re-scan), labels, captioner, pool.

    ``refused`` maps manifest keys that are never served (an entry naming a file outside the indexed folder,
    an absolute or ``..`` key) to the reason; it is computed whenever an index is loaded (a database's: as its
    keys appear in answers). ``index_dir`` is a folder or a database URI (``milvus``: its collection and
    credentials).
    """

    model: Any
    index_dir: Path | str
    labels: list[str]
    captioner: Any = None
    settings: ServeSettings = field(default_factory=ServeSettings)
    index: SearchIndex | MilvusIndex | None = None  # None: read from index_dir
    milvus: MilvusSettings | None = None
    pool: BoundedPool = field(init=False)
    scan: _Scan = field(default_factory=_Scan)
    refused: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.database = isinstance(self.index, MilvusIndex) or (
            self.index is None and is_database_uri(self.index_dir))
        self.index_dir = str(self.index_dir) if self.database else Path(self.index_dir)
        self.index = self._load_index() if self.index is None else self.index
        root = self.settings.root
        if root is not None and os.path.realpath(self.index.root or "/nowhere") != os.path.realpath(root):
            raise SearchIndexError(f"'{self.index_dir}': indexes '{self.index.root}', not '{root}'; serve the "
                                   "folder it indexes or index this one into another folder")
        self.refused = {} if self.database else check_entries(self.index)
        for key, reason in list(self.refused.items())[:5]:
            log.warning("not serving manifest entry %r: %s", key, reason)
        s = self.settings
        self.pool = BoundedPool(s.workers, s.queue_limit, s.retry_after_s)
        self._lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._png_cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._describe_cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def _load_index(self) -> SearchIndex | MilvusIndex:
        if self.database:
            return MilvusIndex.open(self.index_dir, self.milvus)
        index = SearchIndex.load(self.index_dir)
        _ = index.vector_index  # build or read it now, not in the first request
        return index

    # ------------------------------------------------------------------ model work (pool threads)
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings ``[N, D]``, cached by text."""
        with self._lock:
            found = {t: self._text_cache[t] for t in texts if t in self._text_cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = normalise(np.asarray(self.model.encode_text(missing), dtype=np.float32))
            found.update(zip(missing, fresh, strict=True))
            with self._lock:
                for t, v in zip(missing, fresh, strict=True):
                    self._text_cache[t] = v
                while len(self._text_cache) > self.settings.text_cache:
                    self._text_cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def search_text(self, query: str, top: int, segments: bool = False) -> list[SearchHit] | list[FileHit]:
        """The ``top`` files (best segment each) or, with ``segments``, the ``top`` segments for a query."""
        vec = self.text_embeddings([query])[0]
        return self.index.search(vec, top) if segments else self.index.search_files(vec, top)

    def decode_upload(self, data: bytes, filename: str) -> tuple[np.ndarray, float, str]:
        """Check and decode an upload: returns ``(wave [samples] at the model rate, duration_s, temp path)``;
        the caller removes the temp file. The header is checked (format, duration, decoded size = channels ×
        frames) before decoding, so a small file that would decode to gigabytes costs nothing."""
        s = self.settings
        if not data:
            raise ServeError(400, "the upload is empty (0 bytes)", "empty")
        if len(data) > s.max_upload_bytes:
            raise ServeError(413, f"the upload of {len(data)} bytes is over the limit of {s.max_upload_bytes} bytes")
        suffix = Path(filename or "").suffix.lower()
        fd, tmp = tempfile.mkstemp(prefix="kikimimi-upload-", suffix=suffix if suffix in _AUDIO_SUFFIXES else "")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                info = audio_info(tmp)
            except AudioDecodeError as exc:
                raise ServeError(422, f"not a usable audio file: {exc.reason}", exc.kind) from None
            if info.duration_s > s.max_upload_s:
                raise ServeError(413, f"the clip lasts {info.duration_s:.1f} s per its header; the limit is "
                                      f"{s.max_upload_s:g} s", "too_long")
            decoded = int(info.channels) * int(info.frames)
            if decoded > s.max_decoded_samples:
                raise ServeError(413, f"the clip would decode to {decoded:,} samples ({info.channels} channels × "
                                      f"{info.frames:,} frames at {info.sample_rate} Hz); the limit is "
                                      f"{s.max_decoded_samples:,}", "too_large")
            try:
                wave = load_audio(tmp, int(self.model.sample_rate))[0]
            except AudioDecodeError as exc:
                raise ServeError(422, f"not a usable audio file: {exc.reason}", exc.kind) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return wave, wave.size / float(self.model.sample_rate), tmp

    def embed_wave(self, wave: np.ndarray) -> np.ndarray:
        sr = int(self.model.sample_rate)
        return normalise(np.asarray(self.model.encode_audio([wave], sample_rate=sr), dtype=np.float32))[0]

    def file_vector(self, key: str) -> np.ndarray:
        """The unit mean of an indexed file's segment embeddings ``[D]``."""
        if self.database:  # its recorded path is checked too, as for a file it would serve
            entry = self.index.entry(key)
            refused = entry is None or self._not_served(key, str(entry.get("path")))
        else:
            refused = self._not_served(key)
        vec = None if refused else self.index.file_vector(key)
        if vec is None:
            raise ServeError(404, "no such indexed file (keys come from the search results)")
        return vec

    def _not_served(self, key: str, path: str | None = None) -> bool:
        """Whether file ``key`` (of a hit whose recorded path is ``path``) is never served (:attr:`refused`); a
        database's key is checked (:func:`~kikimimi.apps.serve.files.entry_problem`) the first time it is seen."""
        if key in self.refused:
            return True
        if not self.database:
            return False
        problem = entry_problem({"key": key} if path is None else {"key": key, "path": path}, self.index.root)
        if problem:
            with self._lock:
                self.refused[key] = problem
                if len(self.refused) <= 5:
                    log.warning("not serving database entry %r: %s", key, problem)
        return problem is not None

    def tags(self, vector: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
        """Zero-shot tags (:func:`kikimimi.inference.zeroshot.zero_shot_scores`): cosine of ``vector`` with
        each label's caption, softmax probabilities over the labels, best first."""
        captions = class_captions(list(labels), self.settings.template)
        scale = float(getattr(self.model, "temperature_scale", 1.0))
        scores = zero_shot_scores(vector, self.text_embeddings(captions), scale)
        return top_labels(scores, list(labels))

    def caption(self, source: str) -> str:
        if self.captioner is None:
            raise ServeError(501, "no captioner: start the server with --captioner PATH")
        return str(self.captioner.caption(source))

    # ------------------------------------------------------------------ indexed files
    def served_file(self, key: str) -> ServedFile:
        """The indexed file ``key``, opened after every check (inside the indexed folder, no link leaving it,
        the same file as when indexed); the caller closes it. Raises :class:`ServeError` (404/409)."""
        if self._not_served(key):
            raise ServeError(404, "no such indexed file")
        entry = self.index.entry(key)
        if entry is None:
            raise ServeError(404, "no such indexed file")
        opened = open_indexed(self.index.root, entry)
        if isinstance(opened, tuple):
            raise ServeError(*opened)
        return opened

    def checked_path(self, key: str) -> str:
        """The path of an indexed file that passed :meth:`served_file`'s checks (for decoders and captioners)."""
        with self.served_file(key) as f:
            return f.path

    def spectrogram(self, key: str, start_s: float, end_s: float | None, limit: int = 1024) -> bytes:
        """A cached PNG of a segment of indexed file ``key`` (the cache is keyed on the file's identity)."""
        with self.served_file(key) as f:
            cache_key = (key, f.identity, start_s, end_s)
            with self._lock:
                if cache_key in self._png_cache:
                    self._png_cache.move_to_end(cache_key)
                    return self._png_cache[cache_key]
            png = segment_png(f.path, start_s, end_s)
        with self._lock:
            self._png_cache[cache_key] = png
            while len(self._png_cache) > limit:
                self._png_cache.popitem(last=False)
        return png

    def describe(self, key: str) -> dict[str, Any]:
        """A timeline and a short paragraph of indexed file ``key`` (``kikimimi describe``'s evidence and
        description, over the server's labels), cached on the file's identity. Bounded: a file longer than
        ``max_describe_s`` (per its header) is refused with 413 before it is decoded; the evidence is streamed
        (memory of about two segments). Runs in the embedding pool. Raises :class:`ServeError` (404/409/413/422)."""
        s = self.settings
        with self.served_file(key) as f:
            cache_key = (key, f.identity, s.describe_segment_s, tuple(self.labels))
            with self._lock:
                if cache_key in self._describe_cache:
                    self._describe_cache.move_to_end(cache_key)
                    return self._describe_cache[cache_key]
            try:
                duration = audio_info(f.path).duration_s
                if duration > s.max_describe_s:
                    raise ServeError(413, f"the file lasts {duration:.0f} s; descriptions are limited to files of "
                                          f"{s.max_describe_s:g} s", "too_long")
                evidence = build_evidence(f.path, _CachedText(self), self.labels,
                                          EvidenceSettings(segment_s=s.describe_segment_s, template=s.template,
                                                           batch_size=s.batch_size))
            except AudioDecodeError as exc:
                raise ServeError(422, f"not a usable audio file: {exc.reason}", exc.kind) from None
        d = describe_evidence(evidence)
        out = {"key": key, "name": Path(key).name, "duration_s": d.duration_s, "segments": len(evidence.segments),
               "segment_s": s.describe_segment_s, "paragraph": d.paragraph,
               "parts": [{"start_s": p.start_s, "end_s": p.end_s, "span": format_span(p.start_s, p.end_s),
                          "sounds": p.sounds, "rms_dbfs": p.rms_dbfs} for p in d.parts]}
        with self._lock:
            self._describe_cache[cache_key] = out
            while len(self._describe_cache) > max(1, s.describe_cache):
                self._describe_cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ re-scan (its own thread)
    def start_rescan(self) -> bool:
        """Start a background re-scan of the indexed folder; False when one is running."""
        with self._lock:
            if self.scan.running:
                return False
            self.scan = _Scan(running=True, started=time.time())
        threading.Thread(target=self._rescan, name="kikimimi-rescan", daemon=True).start()
        return True

    def _rescan(self) -> None:
        s, idx = self.settings, self.index
        window, hop = idx.segmenting if idx.window_s is not None else (s.window_s, s.hop_s)
        try:
            if self.database:  # rows are written (new before old) into the collection the server searches
                update = update_milvus_index(self.model, idx.root, self.index_dir, model_id=idx.model,
                                             settings=idx.settings, batch_size=s.batch_size, window_s=float(window),
                                             hop_s=float(hop or s.hop_s))
                fresh, refused = idx, {}
            else:
                update = update_index(self.model, idx.root, self.index_dir, model_id=idx.model,
                                      batch_size=s.batch_size, window_s=float(window), hop_s=float(hop or s.hop_s),
                                      vector_kind=s.vector_kind, exact_below=s.exact_below)
                fresh = self._load_index()
                refused = check_entries(fresh)
            with self._lock:
                self.index, self.refused = fresh, refused
                self.scan.result = {"added": len(update.added), "changed": len(update.changed),
                                    "removed": len(update.removed), "unchanged": len(update.unchanged),
                                    "unreadable": len(update.errors)}
        except (SearchIndexError, OutputInUseError, OSError, ValueError) as exc:
            with self._lock:
                self.scan.error = _no_paths(str(exc), idx.root, str(self.index_dir))
        except Exception:  # a bug: logged here, reported as a failed scan
            log.exception("re-scan failed")
            with self._lock:
                self.scan.error = "internal error (see the server log)"
        finally:
            with self._lock:
                self.scan.running, self.scan.finished = False, time.time()

    # ------------------------------------------------------------------ answers
    def hit_json(self, rank: int, hit: SearchHit | FileHit) -> dict[str, Any]:
        key = quote(hit.key, safe="")
        end = "" if hit.end_s is None else f"&end_s={hit.end_s:g}"
        out = {"rank": rank, "key": hit.key, "name": Path(hit.key).name, "score": round(hit.score, 6),
               "start_s": hit.start_s, "end_s": hit.end_s, "audio_url": f"/api/audio?key={key}",
               "spectrogram_url": f"/api/spectrogram?key={key}&start_s={hit.start_s:g}{end}"}
        if isinstance(hit, FileHit):
            out |= {"matched": hit.matched, "segments": hit.segments}
        return out

    def hits_json(self, hits: Sequence[SearchHit | FileHit]) -> list[dict[str, Any]]:
        """Ranked hits as JSON; files that are never served (:attr:`refused`) are left out."""
        kept = [h for h in hits if not self._not_served(h.key, h.path)]
        return [self.hit_json(i, h) for i, h in enumerate(kept, start=1)]

    def status(self) -> dict[str, Any]:
        """What a client may know: sizes, model name, vector index, re-scan state, pool, limits — no
        absolute path (the model and folders by their last name only) and no process id."""
        idx = self.index
        where = ("milvus" if str(self.index_dir).startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))
                 else Path(self.index_dir).name)  # a server's URI may hold a host name or credentials
        return {"files": idx.n_files, "segments": idx.n_rows,
                "unreadable": 0 if self.database else len(idx.errors),
                "not_served": len(self.refused), "model": Path(idx.model).name if idx.model else idx.model,
                "root": Path(idx.root).name, "index": where, "database": self.database,
                "format": self.index.record["format"] if self.database else idx.format,
                "segmenting": {"window_s": idx.window_s, "hop_s": idx.hop_s},
                "vectors": idx.describe(), "scan": asdict(self.scan), "pool": self.pool.stats(),
                "captions": self.captioner is not None, "default_labels": len(self.labels),
                "limits": self.settings.public()}


class _CachedText:
    """The served model with its text side going through the state's text-embedding cache: the labels of a
    description are embedded once, not once per file."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self.sample_rate = int(state.model.sample_rate)
        self.temperature_scale = float(getattr(state.model, "temperature_scale", 1.0))

    def encode_audio(self, audio: Any, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray:
        return self.state.model.encode_audio(audio, sample_rate=sample_rate, batch_size=batch_size)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.state.text_embeddings(list(texts))


def _no_paths(message: str, *paths: str) -> str:
    """``message`` with the server's folders replaced by their last names."""
    for p in sorted((p for p in paths if p and len(p) > 1), key=len, reverse=True):
        message = message.replace(p, Path(p).name)
    return message
