"""How `kikimimi serve` answers a refusal or a failure: always JSON ``{"error": one line}``, never a trace."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kikimimi.apps.serve.state import ServeError
from kikimimi.apps.serve.workers import PoolFull

__all__ = ["install_error_handlers"]

log = logging.getLogger("kikimimi.serve")


async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
    body = {"error": exc.message} | ({"kind": exc.kind} if exc.kind else {})
    return JSONResponse(body, status_code=exc.status)


async def _pool_full(_: Request, exc: PoolFull) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                for e in exc.errors()]
    first = problems[0] if problems else {"where": "request", "problem": "invalid"}
    line = f"invalid {first['where']}: {first['problem']}".replace("\n", " ")
    return JSONResponse({"error": line, "problems": problems}, status_code=422)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: :class:`ServeError` → its status, a full pool → 503 + ``Retry-After``,
    HTTP errors and invalid parameters → their 4xx, anything else → 500 ``internal error`` (logged)."""
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(PoolFull, _pool_full)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
