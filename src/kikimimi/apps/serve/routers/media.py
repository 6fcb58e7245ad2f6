"""Media of indexed files: the audio (``GET /api/audio``, with HTTP range requests) and segment spectrograms.

Every file is opened through :meth:`ServeState.served_file` (inside the indexed folder, the same file as
when indexed) and the audio is streamed from that open descriptor, so a name swapped after the check still
streams the checked file.
"""

import asyncio
import mimetypes
import os
import re
from typing import Any

import anyio
from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from kikimimi.apps.serve.deps import AppState, check_seconds
from kikimimi.apps.serve.files import ServedFile
from kikimimi.apps.serve.spectrogram import SpectrogramError
from kikimimi.apps.serve.state import ServeError

router = APIRouter(prefix="/api", tags=["media"])
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


class OpenFileResponse(Response):
    """Streams an opened :class:`ServedFile` (one byte range when asked, 416 when out of range); the file is
    closed when the answer ends, however it ends."""

    def __init__(self, served: ServedFile, media_type: str, range_header: str | None) -> None:
        self.served = served
        self.background = None
        size = served.size
        self.start, self.end, status = 0, size, 200
        headers = {"accept-ranges": "bytes", "cache-control": "no-cache"}
        match = _RANGE.match(range_header.strip()) if range_header else None
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                self.start, self.end = int(first), min(size, int(last) + 1) if last else size
            else:
                self.start, self.end = max(0, size - int(last)), size
            if self.start >= size or self.start >= self.end:
                status, self.start, self.end = 416, 0, 0
                headers["content-range"] = f"bytes */{size}"
            else:
                status = 206
                headers["content-range"] = f"bytes {self.start}-{self.end - 1}/{size}"
        self.status_code = status
        headers["content-length"] = str(self.end - self.start)
        self.media_type = None if status == 416 else media_type
        self.init_headers(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:  # a client that leaves stops the reading at once
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pos = self.start
            if scope.get("method") == "HEAD" or pos >= self.end:
                await send({"type": "http.response.body", "body": b""})
                return
            while pos < self.end and not gone.is_set():
                data = await anyio.to_thread.run_sync(os.pread, self.served.fd, min(_CHUNK, self.end - pos), pos)
                if not data:  # the file shrank under us: end the answer short (the client sees it)
                    break
                pos += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": pos < self.end})
            if pos < self.end and not gone.is_set():
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            self.served.close()


@router.get("/audio", summary="The audio of an indexed file (HTTP range requests supported)")
async def audio(state: AppState, key: str = Query(...),
                range_header: str | None = Header(None, alias="range")) -> Response:
    served = state.served_file(key)
    media = mimetypes.guess_type(served.path)[0] or "application/octet-stream"
    return OpenFileResponse(served, media, range_header)


@router.get("/spectrogram", summary="A small spectrogram PNG of a segment of an indexed file")
async def spectrogram(state: AppState, key: str = Query(...), start_s: float = Query(0.0, ge=0.0),
                      end_s: float | None = Query(None, ge=0.0)) -> Response:
    start, end = check_seconds("start_s", start_s), check_seconds("end_s", end_s)
    try:
        png = await state.pool.run(state.spectrogram, key, start, end)
    except SpectrogramError as exc:
        raise ServeError(422, str(exc)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
