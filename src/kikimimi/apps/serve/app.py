"""The FastAPI application of `kikimimi serve`: JSON endpoints, audio streaming and the page.

:func:`create_app` takes a CLAP model (``sample_rate``, ``encode_audio``, ``encode_text``; e.g.
:class:`kikimimi.inference.clap.CLAPModel`) and a search-index folder (:mod:`kikimimi.inference.search`) and
returns the app; ``uvicorn.run(app, host="127.0.0.1")`` serves it. Endpoints (all JSON unless said; the
OpenAPI description is at ``/docs`` and ``/openapi.json``):

====================================  ==========================================================================
``GET /``                             the page (``static/``; no CDN, no external font)
``GET /api/status``                   index size, model, vector index kind, re-scan state, pool, limits
``GET /api/search?q=&top=``           text search: top segments with cosine score, file, start/end seconds
``POST /api/similar`` (file)          nearest segments to an uploaded clip
``GET /api/similar?key=``             nearest segments to an indexed file (its other segments left out)
``POST /api/tags`` (file, labels)     zero-shot tags of an upload (labels: one a line; default list if none)
``GET /api/tags?key=&labels=``        zero-shot tags of an indexed file
``POST /api/example`` (file, labels)  all of the above for one upload, embedded once (what the page uses)
``POST /api/caption`` (file)          a caption, when the server was given a captioner (else 501)
``GET /api/caption?key=``             the same for an indexed file
``GET /api/labels``                   the default label list
``POST /api/rescan``                  re-scan the indexed folder in the background (202; 409 while one runs)
``GET /api/audio?key=``               the audio file of an indexed key, with HTTP range requests (206)
``GET /api/spectrogram?key=&start_s=&end_s=``  a small PNG of the segment
====================================  ==========================================================================

Bad input gets a 4xx answer ``{"error": reason}`` (uploads: ``"kind"`` from
:data:`kikimimi.audio.decode.ERROR_KINDS` too); a full embedding pool gets 503 with ``Retry-After``; an
unexpected failure gets ``{"error": "internal error"}`` (500) and is logged, never shown.
"""

# no `from __future__ import annotations` here: FastAPI reads the handlers' annotations, which name classes
# imported inside create_app (fastapi is an optional extra)
import logging
import mimetypes
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np

from kikimimi.apps.serve import STATIC_DIR, default_labels
from kikimimi.apps.serve.security import LOOPBACK_NAMES, GuardMiddleware
from kikimimi.apps.serve.spectrogram import SpectrogramError, segment_png
from kikimimi.apps.serve.workers import BoundedPool, PoolFull
from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio
from kikimimi.evaluation.zeroshot import DEFAULT_TEMPLATE, class_captions, softmax
from kikimimi.fileio import OutputInUseError
from kikimimi.inference.search import (
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    SearchHit,
    SearchIndex,
    SearchIndexError,
    update_index,
)
from kikimimi.inference.vector_index import EXACT_BELOW, normalise

__all__ = ["ServeError", "ServeSettings", "ServeState", "create_app"]

log = logging.getLogger("kikimimi.serve")
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}


@dataclass
class ServeSettings:
    """Limits and options of the server (every one has a command-line flag)."""

    max_upload_bytes: int = 20 * 1024 * 1024  # request bodies above this are refused before reading
    max_upload_s: float = 120.0  # uploaded clips longer than this (per their header) are refused before decoding
    max_query_chars: int = 300
    max_top: int = 100
    max_labels: int = 300
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

    def public(self) -> dict[str, Any]:
        """The limits a client may know (no token)."""
        return {k: v for k, v in asdict(self).items() if k not in ("token", "allowed_hosts")}


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
    """What the handlers share: the model, the index (swapped whole after a re-scan), labels, captioner, pool."""

    model: Any
    index_dir: Path
    labels: list[str]
    captioner: Any = None
    settings: ServeSettings = field(default_factory=ServeSettings)
    index: SearchIndex | None = None  # None: read from index_dir
    pool: BoundedPool = field(init=False)
    scan: _Scan = field(default_factory=_Scan)

    def __post_init__(self) -> None:
        self.index_dir = Path(self.index_dir)
        self.index = self._load_index() if self.index is None else self.index
        s = self.settings
        self.pool = BoundedPool(s.workers, s.queue_limit, s.retry_after_s)
        self._lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load_index(self) -> SearchIndex:
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

    def search_text(self, query: str, top: int) -> list[SearchHit]:
        return self.index.search(self.text_embeddings([query])[0], top)

    def decode_upload(self, data: bytes, filename: str) -> tuple[np.ndarray, float, str]:
        """Check and decode an upload: returns ``(wave [samples] at the model rate, duration_s, temp path)``;
        the caller removes the temp file. The header is checked (format, duration) before decoding."""
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
        rows = self.index.rows_of(key)
        if rows.size == 0:
            raise ServeError(404, "no such indexed file (keys come from the search results)")
        return normalise(normalise(np.asarray(self.index.embeddings[rows])).mean(axis=0))[0]

    def tags(self, vector: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
        """Zero-shot tags: cosine of ``vector`` with each label's caption, softmax probabilities, best first."""
        captions = class_captions(list(labels), self.settings.template)
        cos = self.text_embeddings(captions) @ vector
        scale = float(getattr(self.model, "temperature_scale", 1.0))
        probs = softmax(cos[None] * scale, axis=1)[0]
        order = np.argsort(-cos, kind="stable")
        return [{"label": labels[i], "score": round(float(cos[i]), 6), "probability": round(float(probs[i]), 6)}
                for i in order]

    def caption(self, source: str) -> str:
        if self.captioner is None:
            raise ServeError(501, "no captioner: start the server with --captioner PATH")
        return str(self.captioner.caption(source))

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
            update = update_index(self.model, idx.root, self.index_dir, model_id=idx.model,
                                  batch_size=s.batch_size, window_s=float(window), hop_s=float(hop or s.hop_s),
                                  vector_kind=s.vector_kind, exact_below=s.exact_below)
            fresh = self._load_index()
            with self._lock:
                self.index = fresh
                self.scan.result = {"added": len(update.added), "changed": len(update.changed),
                                    "removed": len(update.removed), "unchanged": len(update.unchanged),
                                    "unreadable": len(update.errors)}
        except (SearchIndexError, OutputInUseError, OSError, ValueError) as exc:
            with self._lock:
                self.scan.error = str(exc)
        except Exception:  # a bug: logged here, reported as a failed scan
            log.exception("re-scan failed")
            with self._lock:
                self.scan.error = "internal error (see the server log)"
        finally:
            with self._lock:
                self.scan.running, self.scan.finished = False, time.time()

    # ------------------------------------------------------------------ answers
    def hit_json(self, rank: int, hit: SearchHit) -> dict[str, Any]:
        key = quote(hit.key, safe="")
        end = "" if hit.end_s is None else f"&end_s={hit.end_s:g}"
        return {"rank": rank, "key": hit.key, "name": Path(hit.key).name, "score": round(hit.score, 6),
                "start_s": hit.start_s, "end_s": hit.end_s, "audio_url": f"/api/audio?key={key}",
                "spectrogram_url": f"/api/spectrogram?key={key}&start_s={hit.start_s:g}{end}"}

    def hits_json(self, hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
        return [self.hit_json(i, h) for i, h in enumerate(hits, start=1)]

    def status(self) -> dict[str, Any]:
        idx = self.index
        return {"files": len(idx.entries), "segments": idx.n_rows, "unreadable": len(idx.errors),
                "model": idx.model, "root": idx.root, "index": str(self.index_dir), "format": idx.format,
                "segmenting": {"window_s": idx.window_s, "hop_s": idx.hop_s},
                "vectors": idx.vector_index.describe(), "scan": asdict(self.scan), "pool": self.pool.stats(),
                "captions": self.captioner is not None, "default_labels": len(self.labels),
                "limits": self.settings.public()}

    def parse_labels(self, raw: str | None) -> list[str]:
        """Labels from one string (one a line, or comma-separated on one line); the default list when empty."""
        if raw is None or not raw.strip():
            return list(self.labels)
        parts = raw.splitlines() if "\n" in raw.strip() else raw.split(",")
        labels = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
        s = self.settings
        if len(labels) > s.max_labels:
            raise ServeError(400, f"{len(labels)} labels; at most {s.max_labels}")
        long = [lab for lab in labels if len(lab) > s.max_label_chars]
        if long:
            raise ServeError(400, f"a label is longer than {s.max_label_chars} characters")
        return labels

    def check_top(self, top: int) -> int:
        if not 1 <= top <= self.settings.max_top:
            raise ServeError(400, f"top must be 1..{self.settings.max_top}, got {top}")
        return top

    def path_of(self, key: str) -> str:
        """The absolute path of an indexed key (only those are served: no path from the client is opened)."""
        entry = self.index.entry(key)
        if entry is None:
            raise ServeError(404, "no such indexed file")
        return str(entry["path"])


def create_app(model: Any, index_dir: str | os.PathLike, *, labels: Sequence[str] | None = None,
               captioner: Any = None, settings: ServeSettings | None = None, index: SearchIndex | None = None) -> Any:
    """The FastAPI app serving the index in ``index_dir`` with ``model`` (see the module docstring).

    Args:
        model: a CLAP model (``sample_rate``, ``encode_audio``, ``encode_text``, optional ``temperature_scale``).
        index_dir: a search-index folder (``kikimimi index``).
        labels: default zero-shot labels (default: the package's ``labels.txt``).
        captioner: an object with ``caption(path) -> str``, or None (caption endpoints answer 501).
        settings: limits and options (:class:`ServeSettings`).
        index: an index already in memory (benchmarks); default: read ``index_dir``.

    Raises:
        kikimimi.inference.search.SearchIndexError: the index cannot be read.
        ModuleNotFoundError: fastapi is not installed (``pip install "kikimimi[serve]"``).
    """
    from fastapi import FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    state = ServeState(model, Path(index_dir), list(labels) if labels else default_labels(), captioner, settings,
                       index)
    app = FastAPI(title="kikimimi serve", version="1",
                  description="Search a folder of sounds by text or by example, tag them zero-shot, listen.")
    app.state.kikimimi = state

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        body = {"error": exc.message} | ({"kind": exc.kind} if exc.kind else {})
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(PoolFull)
    async def _pool_full(_: Request, exc: PoolFull) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ServeError(413, f"the upload is over the limit of {settings.max_upload_bytes} bytes")
        return data

    def query_text(q: str) -> str:
        q = q.strip()
        if not q:
            raise ServeError(400, "the query is empty")
        if len(q) > settings.max_query_chars:
            raise ServeError(400, f"the query has {len(q)} characters; at most {settings.max_query_chars}")
        return q

    def upload_work(data: bytes, filename: str, top: int, labels: list[str] | None, want_caption: bool
                    ) -> dict[str, Any]:
        wave, duration, tmp = state.decode_upload(data, filename)
        try:
            vec = state.embed_wave(wave)
            out: dict[str, Any] = {"duration_s": round(duration, 3)}
            if top:
                out["results"] = state.hits_json(state.index.search(vec, top))
            if labels is not None:
                out["tags"] = state.tags(vec, labels)
            if want_caption and state.captioner is not None:
                out["caption"] = state.caption(tmp)
            return out
        finally:
            Path(tmp).unlink(missing_ok=True)

    def similar_to_key(key: str, top: int) -> list[dict[str, Any]]:
        own = set(state.index.rows_of(key).tolist())
        vec = state.file_vector(key)
        hits = [h for h in state.index.search(vec, top + len(own)) if h.row not in own][:top]
        return state.hits_json(hits)

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ JSON
    @app.get("/api/status", summary="Index size, model, vector index, re-scan state, pool and limits")
    async def status() -> dict[str, Any]:
        return state.status()

    @app.get("/api/labels", summary="The default zero-shot label list")
    async def labels_list() -> dict[str, Any]:
        return {"labels": state.labels, "template": settings.template}

    @app.get("/api/search", summary="Text search: the segments nearest to a text query")
    async def search(q: str = Query(..., description="what the sound is, e.g. 'a dog barking'"),
                     top: int = Query(10, description="number of results")) -> dict[str, Any]:
        text, k = query_text(q), state.check_top(top)
        hits = await state.pool.run(state.search_text, text, k)
        return {"query": text, "results": state.hits_json(hits)}

    @app.post("/api/similar", summary="Search by example: the segments nearest to an uploaded clip")
    async def similar_upload(file: Annotated[UploadFile, File()], top: Annotated[int, Form()] = 10) -> dict[str, Any]:
        k = state.check_top(top)
        data = await read_upload(file)
        return await state.pool.run(upload_work, data, file.filename or "", k, None, False)

    @app.get("/api/similar", summary="Search by example: the segments nearest to an indexed file")
    async def similar_key(key: str = Query(...), top: int = Query(10)) -> dict[str, Any]:
        k = state.check_top(top)
        return {"key": key, "results": similar_to_key(key, k)}

    @app.post("/api/tags", summary="Zero-shot tags of an uploaded clip")
    async def tags_upload(file: Annotated[UploadFile, File()],
                          labels: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        names = state.parse_labels(labels)
        data = await read_upload(file)
        return await state.pool.run(upload_work, data, file.filename or "", 0, names, False)

    @app.get("/api/tags", summary="Zero-shot tags of an indexed file")
    async def tags_key(key: str = Query(...), labels: str | None = Query(None)) -> dict[str, Any]:
        names = state.parse_labels(labels)
        vec = state.file_vector(key)
        return {"key": key, "tags": await state.pool.run(state.tags, vec, names)}

    @app.post("/api/example", summary="One upload: similar segments, tags and (with a captioner) a caption")
    async def example(file: Annotated[UploadFile, File()], labels: Annotated[str | None, Form()] = None,
                      top: Annotated[int, Form()] = 10) -> dict[str, Any]:
        k, names = state.check_top(top), state.parse_labels(labels)
        data = await read_upload(file)
        return await state.pool.run(upload_work, data, file.filename or "", k, names, True)

    @app.post("/api/caption", summary="A caption of an uploaded clip (needs --captioner)")
    async def caption_upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        if state.captioner is None:
            raise ServeError(501, "no captioner: start the server with --captioner PATH")
        data = await read_upload(file)
        out = await state.pool.run(upload_work, data, file.filename or "", 0, None, True)
        return {"caption": out["caption"], "duration_s": out["duration_s"]}

    @app.get("/api/caption", summary="A caption of an indexed file (needs --captioner)")
    async def caption_key(key: str = Query(...)) -> dict[str, Any]:
        path = state.path_of(key)
        if state.captioner is None:
            raise ServeError(501, "no captioner: start the server with --captioner PATH")
        return {"key": key, "caption": await state.pool.run(state.caption, path)}

    @app.post("/api/rescan", status_code=202, summary="Re-scan the indexed folder (new, changed, removed files)")
    async def rescan() -> dict[str, Any]:
        if not Path(state.index.root).is_dir():
            raise ServeError(400, "the indexed folder is not there any more")
        if not state.start_rescan():
            raise ServeError(409, "a re-scan is already running")
        return {"started": True, "status": "/api/status"}

    @app.get("/api/audio", summary="The audio of an indexed file (HTTP range requests supported)")
    async def audio(key: str = Query(...)) -> FileResponse:
        path = state.path_of(key)
        if not Path(path).is_file():
            raise ServeError(404, "the indexed file is not there any more; re-scan")
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/api/spectrogram", summary="A small spectrogram PNG of a segment of an indexed file")
    async def spectrogram(key: str = Query(...), start_s: float = Query(0.0, ge=0.0),
                          end_s: float | None = Query(None, ge=0.0)) -> Response:
        path = state.path_of(key)
        try:
            png = await state.pool.run(_cached_png, path, round(start_s, 3), None if end_s is None else
                                       round(end_s, 3))
        except SpectrogramError as exc:
            raise ServeError(422, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    app.add_middleware(GuardMiddleware, allowed_hosts=settings.allowed_hosts, token=settings.token,
                       max_body_bytes=settings.max_upload_bytes + 256 * 1024)  # + multipart framing
    return app


_PNG_CACHE: OrderedDict[tuple[str, float, float | None], bytes] = OrderedDict()
_PNG_LOCK = threading.Lock()


def _cached_png(path: str, start_s: float, end_s: float | None, limit: int = 1024) -> bytes:
    key = (path, start_s, end_s)
    with _PNG_LOCK:
        if key in _PNG_CACHE:
            _PNG_CACHE.move_to_end(key)
            return _PNG_CACHE[key]
    png = segment_png(path, start_s, end_s)
    with _PNG_LOCK:
        _PNG_CACHE[key] = png
        while len(_PNG_CACHE) > limit:
            _PNG_CACHE.popitem(last=False)
    return png
