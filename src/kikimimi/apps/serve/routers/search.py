"""Search: by text (``GET /api/search``, per file by default) and by example (``/api/similar``)."""

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from kikimimi.apps.serve.deps import AppState, check_top, query_text, read_upload, upload_work

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/search", summary="Text search: the files (best segment each) or segments nearest to a text query")
async def search(state: AppState, q: str = Query(..., description="what the sound is, e.g. 'a dog barking'"),
                 top: int = Query(10, description="number of results"),
                 segments: bool = Query(False, description="true: the flat list of best segments, not per file"),
                 ) -> dict[str, Any]:
    """Per file by default: each result is a file's best segment (its time) with ``matched``, how many of its
    segments scored among the results, and ``segments``, how many it has."""
    text, k = query_text(state, q), check_top(state, top)
    hits = await state.pool.run(state.search_text, text, k, segments)
    return {"query": text, "grouped": not segments, "results": state.hits_json(hits)}


@router.post("/similar", summary="Search by example: the segments nearest to an uploaded clip")
async def similar_upload(state: AppState, file: Annotated[UploadFile, File()],
                         top: Annotated[int, Form()] = 10) -> dict[str, Any]:
    k = check_top(state, top)
    data = await read_upload(state, file)
    return await state.pool.run(upload_work, state, data, file.filename or "", k, None, False)


@router.get("/similar", summary="Search by example: the segments nearest to an indexed file")
async def similar_key(state: AppState, key: str = Query(...), top: int = Query(10)) -> dict[str, Any]:
    k = check_top(state, top)
    own = set(state.index.rows_of(key).tolist())
    vec = state.file_vector(key)
    hits = [h for h in state.index.search(vec, k + len(own)) if h.row not in own][:k]
    return {"key": key, "results": state.hits_json(hits)}
