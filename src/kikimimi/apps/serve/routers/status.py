"""Status (``GET /api/status``: no absolute path, no process id) and re-scan (``POST /api/rescan``)."""

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from kikimimi.apps.serve.deps import AppState
from kikimimi.apps.serve.state import ServeError

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/status", summary="Index size, model name, vector index, re-scan state, pool and limits")
async def status(state: AppState) -> dict[str, Any]:
    return state.status()


@router.post("/rescan", status_code=202, summary="Re-scan the indexed folder (new, changed, removed files)")
async def rescan(state: AppState) -> dict[str, Any]:
    if not Path(state.index.root).is_dir():
        raise ServeError(400, "the indexed folder is not there any more")
    if not state.start_rescan():
        raise ServeError(409, "a re-scan is already running")
    return {"started": True, "status": "/api/status"}
