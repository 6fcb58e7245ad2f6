"""Zero-shot tags (``/api/tags``), the default labels and the page's one-upload answer (``/api/example``)."""

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from kikimimi.apps.serve.deps import AppState, check_top, parse_labels, read_upload, upload_work

router = APIRouter(prefix="/api", tags=["tags"])


@router.get("/labels", summary="The default zero-shot label list")
async def labels_list(state: AppState) -> dict[str, Any]:
    return {"labels": state.labels, "template": state.settings.template}


@router.post("/tags", summary="Zero-shot tags of an uploaded clip")
async def tags_upload(state: AppState, file: Annotated[UploadFile, File()],
                      labels: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    names = parse_labels(state, labels)
    data = await read_upload(state, file)
    return await state.pool.run(upload_work, state, data, file.filename or "", 0, names, False)


@router.get("/tags", summary="Zero-shot tags of an indexed file")
async def tags_key(state: AppState, key: str = Query(...), labels: str | None = Query(None)) -> dict[str, Any]:
    names = parse_labels(state, labels)
    vec = state.file_vector(key)
    return {"key": key, "tags": await state.pool.run(state.tags, vec, names)}


@router.post("/example", summary="One upload: similar segments, tags and (with a captioner) a caption")
async def example(state: AppState, file: Annotated[UploadFile, File()], labels: Annotated[str | None, Form()] = None,
                  top: Annotated[int, Form()] = 10) -> dict[str, Any]:
    k, names = check_top(state, top), parse_labels(state, labels)
    data = await read_upload(state, file)
    return await state.pool.run(upload_work, state, data, file.filename or "", k, names, True)
