"""Safety rules of `kikimimi serve`: where it may listen, who may ask, how much a request may carry.

- :func:`check_bind`: loopback addresses are the default; any other host needs a token (refused otherwise)
  and gets a printed warning.
- :class:`GuardMiddleware` (pure ASGI): checks the ``Host`` header against the allowed names (a page on
  another site cannot reach a loopback server through DNS rebinding), the token when one is set
  (``Authorization: Bearer``, the ``kikimimi_token`` cookie, or ``?token=`` — which also sets the cookie, so
  the page and its players work after one visit), and bounds request bodies: a declared
  ``Content-Length`` over the limit is refused before anything is read (the HTTP server holds the client to
  its declared length), and a body without one is read here, counted, and refused once it passes the limit.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["BindRefused", "GuardMiddleware", "TOKEN_COOKIE", "check_bind", "is_loopback"]

TOKEN_COOKIE = "kikimimi_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

#: sent with every answer: the page loads nothing from elsewhere, is not framed, does not sniff types
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                                 b"style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BindRefused(ValueError):
    """A non-loopback address was asked for without ``--token``."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """Validate a listening address. Returns a warning to print (non-loopback with a token) or None.

    Raises:
        BindRefused: a non-loopback ``host`` without a token.
    """
    if is_loopback(host):
        return None
    if not token:
        raise BindRefused(f"refusing to listen on {host!r}: that makes the index and its audio reachable from "
                          "other machines. Keep the default 127.0.0.1, or pass --token SECRET (every request then "
                          "needs it)")
    return (f"warning: listening on {host!r}: other machines can reach this server; every request needs the "
            "token (open the page once as /?token=SECRET)")


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Host check, token check and body bound in front of the app (see the module docstring).

    Args:
        app: the ASGI app.
        allowed_hosts: ``Host`` names (without port) accepted; ``"*"`` accepts any.
        token: the shared secret, or None (no token check).
        max_body_bytes: the largest request body accepted.
    """

    def __init__(self, app: Any, *, allowed_hosts: Iterable[str], token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}
        self.token = token
        self.max_body = int(max_body_bytes)

    def _host_ok(self, headers: dict[bytes, bytes]) -> bool:
        if "*" in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("["):
            name = host.split("]")[0] + "]"
        return name in self.allowed

    def _token_of(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[str | None, bool]:
        """(token presented, whether it came in the query string)."""
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header: no token from it
            return None, False
        morsel = cookie.get(TOKEN_COOKIE)
        return (morsel.value if morsel else None), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if not self._host_ok(headers):
            await _send_json(send, 421, {"error": "unexpected Host header; open the page through the address the "
                                                  "server printed"})
            return
        from_query = False
        if self.token:
            given, from_query = self._token_of(scope, headers)
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _send_json(send, 401, {"error": "missing or wrong token (use the Authorization: Bearer header, "
                                                      "or open /?token=SECRET once)"},
                                 [(b"www-authenticate", b"Bearer")])
                return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, {"error": "bad Content-Length header"})
                return
            if size > self.max_body:
                await _send_json(send, 413, {"error": f"request body of {size} bytes is over the limit of "
                                                      f"{self.max_body} bytes"})
                return
        elif scope.get("method") in ("POST", "PUT", "PATCH"):
            # no declared length (chunked): read it here, counting, so the app never sees more than the limit
            chunks, seen, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                more = message.get("more_body", False)
                if seen > self.max_body:
                    await _send_json(send, 413, {"error": f"request body is over the limit of {self.max_body} "
                                                          "bytes"})
                    return
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, self._with_headers(send, from_query))

    def _with_headers(self, send: Send, set_cookie: bool) -> Send:
        """Add the security headers (and the token cookie after a ``?token=`` visit) to every response."""
        extra = list(SECURITY_HEADERS)
        if set_cookie:
            extra.append((b"set-cookie", f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()))

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then defers to the real one (disconnect messages)."""
    sent = [False]

    async def replay() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
