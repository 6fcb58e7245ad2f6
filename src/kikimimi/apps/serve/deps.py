"""Dependencies shared by the routers of `kikimimi serve`: the state, parameter checks (one-line 400s), bounded
upload reading and the upload work done in the embedding pool.

The token, ``Host``, ``Origin``, rate and body-size checks are not here but in
:class:`~kikimimi.apps.serve.security.GuardMiddleware`, because they must run before FastAPI reads a body.
"""

# no `from __future__ import annotations`: FastAPI reads these annotations at run time
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, UploadFile

from kikimimi.apps.serve.state import ServeError, ServeState
from kikimimi.inference.search import SearchQueryError, check_query

__all__ = ["AppState", "check_seconds", "check_top", "get_state", "parse_labels", "query_text", "read_upload",
           "upload_work"]


def get_state(request: Request) -> ServeState:
    """The app's :class:`ServeState`."""
    return request.app.state.kikimimi


AppState = Annotated[ServeState, Depends(get_state)]


def query_text(state: ServeState, q: str) -> str:
    """A text query stripped; 400 when empty, blank or too long."""
    try:
        q = check_query(q)
    except SearchQueryError as exc:
        raise ServeError(400, str(exc)) from None
    if len(q) > state.settings.max_query_chars:
        raise ServeError(400, f"the query has {len(q)} characters; at most {state.settings.max_query_chars}")
    return q


def check_top(state: ServeState, top: int) -> int:
    """``top`` within 1..``max_top`` (else 400)."""
    if not 1 <= top <= state.settings.max_top:
        raise ServeError(400, f"top must be 1..{state.settings.max_top}, got {top}")
    return top


def check_seconds(name: str, value: float | None) -> float | None:
    """A finite, non-negative time in seconds rounded to ms (else 400); None stays None."""
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise ServeError(400, f"{name} must be a finite number of seconds >= 0, got {value}")
    return round(value, 3)


def parse_labels(state: ServeState, raw: str | None) -> list[str]:
    """Labels from one string (one a line, or comma-separated on one line); the default list when absent or blank.

    400 (one line) when the string holds no label (``",,,"``), more than ``max_labels`` labels, or a label
    longer than ``max_label_chars``.
    """
    s = state.settings
    if raw is None or not raw.strip():
        return list(state.labels)
    if len(raw) > s.max_labels * (s.max_label_chars + 2):
        raise ServeError(400, f"the labels hold {len(raw)} characters; at most {s.max_labels} labels of "
                              f"{s.max_label_chars} characters are accepted")
    parts = raw.splitlines() if "\n" in raw.strip() else raw.split(",")
    labels = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not labels:
        raise ServeError(400, "labels holds no label: give names one a line or separated by commas")
    if len(labels) > s.max_labels:
        raise ServeError(400, f"{len(labels)} labels; at most {s.max_labels} per request")
    if any(len(lab) > s.max_label_chars for lab in labels):
        raise ServeError(400, f"a label is longer than {s.max_label_chars} characters")
    return labels


async def read_upload(state: ServeState, file: UploadFile) -> bytes:
    """The uploaded file's bytes (413 over the limit; the body itself was bounded by the guard)."""
    limit = state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ServeError(413, f"the upload is over the limit of {limit} bytes")
    return data


def upload_work(state: ServeState, data: bytes, filename: str, top: int, labels: list[str] | None,
                want_caption: bool) -> dict[str, Any]:
    """Decode and embed one upload once, then its similar segments (``top`` > 0), tags (``labels``) and caption
    (``want_caption`` and a captioner). Runs in the embedding pool."""
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
