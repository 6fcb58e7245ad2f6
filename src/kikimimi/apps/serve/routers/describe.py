"""Descriptions of indexed files (``GET /api/describe``): a timeline and a short paragraph, from the evidence code
of ``kikimimi describe`` (:meth:`~kikimimi.apps.serve.state.ServeState.describe`)."""

from typing import Any

from fastapi import APIRouter, Query

from kikimimi.apps.serve.deps import AppState

router = APIRouter(prefix="/api", tags=["describe"])


@router.get("/describe", summary="A timeline and a short paragraph of an indexed file (what is heard when)")
async def describe_key(state: AppState, key: str = Query(..., description="an indexed file's key (from the results)")
                       ) -> dict[str, Any]:
    """Only indexed files (the checks of ``/api/audio``); a file longer than ``max_describe_s`` is refused (413)
    before it is decoded. ``parts``: ``start_s``, ``end_s``, ``span`` (m:ss–m:ss), ``sounds`` (top tags, longest
    first, or ``["silence"]``), ``rms_dbfs``; ``paragraph``: the description in words."""
    state.served_file(key).close()  # 404 / 409 now, not in the pool
    return await state.pool.run(state.describe, key)
