"""Captions (``/api/caption``): only when the server was given a captioner (else 501)."""

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile

from kikimimi.apps.serve.deps import AppState, read_upload, upload_work
from kikimimi.apps.serve.state import ServeError

router = APIRouter(prefix="/api", tags=["captions"])
_NONE = "no captioner: start the server with --captioner PATH"


@router.post("/caption", summary="A caption of an uploaded clip (needs --captioner)")
async def caption_upload(state: AppState, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    if state.captioner is None:
        raise ServeError(501, _NONE)
    data = await read_upload(state, file)
    out = await state.pool.run(upload_work, state, data, file.filename or "", 0, None, True)
    return {"caption": out["caption"], "duration_s": out["duration_s"]}


@router.get("/caption", summary="A caption of an indexed file (needs --captioner)")
async def caption_key(state: AppState, key: str = Query(...)) -> dict[str, Any]:
    path = state.checked_path(key)
    if state.captioner is None:
        raise ServeError(501, _NONE)
    return {"key": key, "caption": await state.pool.run(state.caption, path)}
