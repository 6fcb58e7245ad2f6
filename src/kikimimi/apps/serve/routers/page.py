"""The page (``GET /``) and the API documentation (``GET /docs``), both working offline.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, which the server's content-security policy blocks (a
blank page) and which an offline machine cannot reach; here ``/docs`` is a plain HTML page rendered on the
server from the OpenAPI description (``/openapi.json``, unchanged), with no script and nothing from elsewhere.
"""

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kikimimi.apps.serve import STATIC_DIR

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(render_docs(request.app.openapi()))


def _param_row(p: dict[str, Any]) -> str:
    schema = p.get("schema", {})
    kind = schema.get("type") or " or ".join(s.get("type", "?") for s in schema.get("anyOf", [])) or "?"
    default = f" (default {schema['default']!r})" if "default" in schema else ""
    required = " required" if p.get("required") else ""
    text = p.get("description", "")
    return (f"<li><code>{html.escape(p['name'])}</code> <em>{html.escape(p.get('in', ''))}, {html.escape(kind)}"
            f"{html.escape(required)}{html.escape(default)}</em> {html.escape(text)}</li>")


def render_docs(spec: dict[str, Any]) -> str:
    """An HTML page listing every operation of an OpenAPI ``spec``: method, path, summary, parameters, body."""
    info = spec.get("info", {})
    parts = [f"<h1>{html.escape(info.get('title', 'API'))} <small>{html.escape(str(info.get('version', '')))}"
             f"</small></h1><p>{html.escape(info.get('description', ''))}</p>",
             '<p>Machine-readable description: <a href="/openapi.json">/openapi.json</a>. Answers are JSON; '
             "refusals are <code>{\"error\": reason}</code> with a 4xx status.</p>"]
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            parts.append(f'<section><h2><code>{html.escape(method.upper())} {html.escape(path)}</code></h2>'
                         f"<p>{html.escape(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<ul>" + "".join(_param_row(p) for p in params) + "</ul>")
            body = op.get("requestBody", {}).get("content", {})
            for kind, content in body.items():
                ref = content.get("schema", {}).get("$ref", "")
                schema = spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
                fields = ", ".join(schema.get("properties", {}))
                parts.append(f"<p>Body: {html.escape(kind)}" + (f" with fields {html.escape(fields)}" if fields
                                                                 else "") + "</p>")
            parts.append("</section>")
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kikimimi serve — API</title>'
            '<link rel="stylesheet" href="/static/style.css"></head><body><main>' + "".join(parts)
            + "</main></body></html>")
