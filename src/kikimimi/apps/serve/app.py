"""The FastAPI application of `kikimimi serve`: JSON endpoints, audio streaming and the page.

:func:`create_app` takes a CLAP model (``sample_rate``, ``encode_audio``, ``encode_text``; e.g.
:class:`kikimimi.inference.clap.CLAPModel`) and a search-index folder (:mod:`kikimimi.inference.search`) or a
Milvus database URI (:mod:`kikimimi.inference.milvus_index`: a ``.db`` path or ``http://host:19530``) and
returns the app; :func:`kikimimi.apps.serve.server.server_config` serves it with the connection limits.
The app is assembled from :mod:`~kikimimi.apps.serve.state` (:class:`ServeState`, :class:`ServeSettings`),
:mod:`~kikimimi.apps.serve.deps` (shared dependencies), :mod:`~kikimimi.apps.serve.security` (host, token,
origin, rate and body guard) and one router per concern (:mod:`~kikimimi.apps.serve.routers`). Endpoints
(all JSON unless said; described offline at ``/docs`` and in ``/openapi.json``):

====================================  ==========================================================================
``GET /``                             the page (``static/``; no CDN, no external font)
``GET /api/status``                   index size, model name, vector index kind, re-scan state, pool, limits
``GET /api/search?q=&top=&segments=``  text search: the best files (best segment each, ``matched`` segments)
                                      or, with ``segments=true``, the best segments
``POST /api/similar`` (file)          nearest segments to an uploaded clip
``GET /api/similar?key=``             nearest segments to an indexed file (its other segments left out)
``POST /api/tags`` (file, labels)     zero-shot tags of an upload (labels: one a line; default list if none)
``GET /api/tags?key=&labels=``        zero-shot tags of an indexed file
``POST /api/example`` (file, labels)  all of the above for one upload, embedded once (what the page uses)
``POST /api/caption`` (file)          a caption, when the server was given a captioner (else 501)
``GET /api/caption?key=``             the same for an indexed file
``GET /api/describe?key=``            a timeline and a short paragraph of an indexed file (``kikimimi describe``'s
                                      evidence; files up to ``max_describe_s``)
``GET /api/labels``                   the default label list
``POST /api/rescan``                  re-scan the indexed folder in the background (202; 409 while one runs)
``GET /api/audio?key=``               the audio file of an indexed key, with HTTP range requests (206)
``GET /api/spectrogram?key=&start_s=&end_s=``  a small PNG of the segment
====================================  ==========================================================================

Bad input gets a 4xx answer ``{"error": reason}`` (uploads: ``"kind"`` from
:data:`kikimimi.audio.decode.ERROR_KINDS` too); a full embedding pool gets 503 with ``Retry-After``; an
unexpected failure gets ``{"error": "internal error"}`` (500) and is logged, never shown.
"""

import os
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kikimimi.apps.serve import STATIC_DIR, default_labels
from kikimimi.apps.serve.errors import install_error_handlers
from kikimimi.apps.serve.routers import ROUTERS
from kikimimi.apps.serve.security import FailureLimiter, GuardMiddleware
from kikimimi.apps.serve.state import ServeError, ServeSettings, ServeState
from kikimimi.inference.milvus_index import MilvusIndex, MilvusSettings
from kikimimi.inference.search import SearchIndex

__all__ = ["ServeError", "ServeSettings", "ServeState", "create_app"]


def create_app(model: Any, index_dir: str | os.PathLike, *, labels: Sequence[str] | None = None,
               captioner: Any = None, settings: ServeSettings | None = None,
               index: SearchIndex | MilvusIndex | None = None, milvus: MilvusSettings | None = None) -> Any:
    """The FastAPI app serving the index in ``index_dir`` with ``model`` (see the module docstring).

    Args:
        model: a CLAP model (``sample_rate``, ``encode_audio``, ``encode_text``, optional ``temperature_scale``).
        index_dir: a search-index folder (``kikimimi index -o``) or a Milvus database URI (``kikimimi index
            --db``; needs ``pip install "kikimimi[milvus]"``).
        labels: default zero-shot labels (default: the package's ``labels.txt``).
        captioner: an object with ``caption(path) -> str``, or None (caption endpoints answer 501).
        settings: limits and options (:class:`ServeSettings`).
        index: an index already in memory (benchmarks); default: read ``index_dir``.
        milvus: a database's collection and credentials (default :class:`MilvusSettings`).

    Raises:
        kikimimi.inference.search.SearchIndexError: the index cannot be read (a database: also a missing extra).
    """
    s = settings or ServeSettings()
    state = ServeState(model, index_dir, list(labels) if labels else default_labels(), captioner, s, index, milvus)
    app = FastAPI(title="kikimimi serve", version="1", docs_url=None, redoc_url=None,
                  description="Search a folder of sounds by text or by example, tag them zero-shot, listen.")
    app.state.kikimimi = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(GuardMiddleware, allowed_hosts=s.allowed_hosts, token=s.token,
                       max_body_bytes=s.max_upload_bytes + 256 * 1024,  # + multipart framing
                       body_timeout_s=s.body_timeout_s,
                       limiter=FailureLimiter(s.failed_token_burst, s.failed_token_per_s))
    return app
