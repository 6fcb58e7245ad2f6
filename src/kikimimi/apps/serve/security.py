"""Safety rules of `kikimimi serve`: where it may listen, who may ask, how much a request may carry.

- :func:`check_bind`: loopback addresses are the default; any other host needs a token (refused otherwise)
  and gets a printed warning. :func:`check_token`: a token has at least :data:`MIN_TOKEN_CHARS` characters.
- :class:`GuardMiddleware` (pure ASGI), in this order, before the app does any work:

  0. request headers over ``max_header_bytes`` → 431;
  1. the ``Host`` header against the allowed names (a page on another site cannot reach a loopback server
     through DNS rebinding) → 421;
  2. a client that sent too many wrong tokens waits (:class:`FailureLimiter`) → 429 + ``Retry-After``;
  3. the token when one is set (``Authorization: Bearer``, the ``kikimimi_token`` cookie, or ``?token=`` —
     which also sets the cookie, so the page and its players work after one visit), compared as UTF-8 bytes
     so a non-ASCII token works in all three → 401;
  4. state-changing methods (POST, PUT, PATCH, DELETE) from another origin: an ``Origin`` that is not this
     server's own address, ``Origin: null`` or ``Sec-Fetch-Site: cross-site``/``same-site`` → 403 (a page the
     user visits cannot post uploads or start re-scans);
  5. the body: a declared ``Content-Length`` over the limit → 413 before anything is read; both
     ``Content-Length`` and ``Transfer-Encoding`` → 400; every body, sized or chunked, is counted while it
     streams to the app, which never receives a byte past the limit (→ 413, connection closed), and must
     arrive whole within ``body_timeout_s`` of the headers (→ 408).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

__all__ = ["BindRefused", "FailureLimiter", "GuardMiddleware", "LOOPBACK_NAMES", "MIN_TOKEN_CHARS", "TOKEN_COOKIE",
           "check_bind", "check_token", "is_loopback"]

TOKEN_COOKIE = "kikimimi_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
#: the shortest token accepted (a 16-character random token cannot be guessed at the rate limit's pace)
MIN_TOKEN_CHARS = 16
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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


def check_token(token: str | None) -> None:
    """Refuse a token that is too short or holds control characters (one-line :class:`ValueError`)."""
    if token is None:
        return
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"--token has {len(token)} characters; at least {MIN_TOKEN_CHARS} are needed (e.g. "
                         "python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if any(ord(c) < 32 or ord(c) == 127 for c in token) or token != token.strip():
        raise ValueError("--token must not hold control characters or surrounding spaces")


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


class FailureLimiter:
    """Wrong tokens per client (by address): a bucket of ``burst`` attempts refilled at ``per_s`` a second.

    :meth:`wait_s` says how long a client must wait (0: it may try); :meth:`failed` spends one attempt. At
    most ``max_clients`` addresses are remembered (the least recently seen are forgotten first).
    """

    def __init__(self, burst: int = 10, per_s: float = 1.0, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self.max_clients, self.clock = float(burst), float(per_s), max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (attempts left, when)

    def _left(self, client: str, now: float) -> float:
        left, when = self._buckets.get(client, (self.burst, now))
        return min(self.burst, left + (now - when) * self.per_s)

    def wait_s(self, client: str) -> float:
        if client not in self._buckets:
            return 0.0
        left = self._left(client, self.clock())
        return 0.0 if left >= 1.0 else (1.0 - left) / max(self.per_s, 1e-9)

    def failed(self, client: str) -> None:
        now = self.clock()
        self._buckets[client] = (self._left(client, now) - 1.0, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *SECURITY_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyRefused(Exception):
    """Raised to the app by a guarded ``receive`` once the body passed its limit or its deadline."""


class _BodyGuard:
    """A ``receive`` that counts body bytes (refusing past ``limit``) and holds the body to a deadline."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self.receive, self.limit = receive, limit
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.seen, self.done = 0, False
        self.problem: tuple[int, str] | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.problem:
            raise BodyRefused(self.problem[1])
        if self.done:  # after the body: only a disconnect can come, with no deadline
            return await self.receive()
        left = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self.receive(), timeout=max(left, 0.0))
        except TimeoutError:
            self.problem = (408, "the request body did not arrive in time")
            raise BodyRefused(self.problem[1]) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.problem = (413, f"request body is over the limit of {self.limit} bytes")
                raise BodyRefused(self.problem[1])
            self.done = not message.get("more_body", False)
        return message


class GuardMiddleware:
    """Host, rate, token, origin and body checks in front of the app (see the module docstring).

    Args:
        app: the ASGI app.
        allowed_hosts: ``Host`` names (without port) accepted; ``"*"`` accepts any.
        token: the shared secret, or None (no token check).
        max_body_bytes: the largest request body accepted.
        body_timeout_s: how long a body may take to arrive.
        limiter: the wrong-token limiter (default: 10 at once, then 1 a second per client).
        max_header_bytes: the largest request line + headers accepted (h11 bounds only headers still arriving).
    """

    def __init__(self, app: Any, *, allowed_hosts: Iterable[str], token: str | None, max_body_bytes: int,
                 body_timeout_s: float = 60.0, limiter: FailureLimiter | None = None,
                 max_header_bytes: int = 16 * 1024) -> None:
        check_token(token)
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}
        self.token = token
        self._expected = token.encode("utf-8") if token else b""
        self.max_body = int(max_body_bytes)
        self.body_timeout_s = float(body_timeout_s)
        self.limiter = limiter or FailureLimiter()
        self.max_header_bytes = int(max_header_bytes)

    def _host_ok(self, headers: dict[bytes, bytes]) -> bool:
        if "*" in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("["):
            name = host.split("]")[0] + "]"
        return name in self.allowed

    @staticmethod
    def _tokens_of(scope: Scope, headers: dict[bytes, bytes]) -> tuple[list[bytes], bool]:
        """(tokens presented, as UTF-8 bytes; whether one came in the query string)."""
        found: list[bytes] = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            found.append(auth[7:].strip())
        from_query = False
        for part in scope.get("query_string", b"").split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"token":
                found.append(unquote_to_bytes(value.replace(b"+", b" ")))
                from_query = True
                break
        for item in headers.get(b"cookie", b"").split(b";"):
            name, _, value = item.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode():
                found.append(unquote_to_bytes(value.strip(b'"')))
        return found, from_query

    def _cross_origin(self, headers: dict[bytes, bytes]) -> bool:
        site = headers.get(b"sec-fetch-site", b"").lower()
        if site in (b"cross-site", b"same-site"):
            return True
        origin = headers.get(b"origin")
        if origin is None:
            return False  # not a browser (curl, scripts): they hold the token or run on this machine
        text = origin.decode("latin-1").strip().lower()
        if text == "null":
            return True
        netloc = urlsplit(text).netloc
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        return not netloc or netloc != host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        refused = self._refusal(scope, headers)
        if refused is not None:
            status, message, extra = refused
            await _send_json(send, status, {"error": message}, [(b"connection", b"close"), *extra]
                             if status in (400, 413, 431) else extra)
            return
        from_query = self.token is not None and self._tokens_of(scope, headers)[1]
        guard = _BodyGuard(receive, self.max_body, self.body_timeout_s)
        state = {"started": False}

        async def sending(message: dict[str, Any]) -> None:
            if guard.problem:  # the app's answer to a refused body is replaced by the refusal
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                extra = list(SECURITY_HEADERS)
                if from_query:
                    extra.append((b"set-cookie", f"{TOKEN_COOKIE}={quote(self.token, safe='')}; Path=/; HttpOnly; "
                                                 "SameSite=Strict".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, guard, sending)
        except Exception:
            if not guard.problem:
                raise
        if guard.problem and not state["started"]:
            await _send_json(send, guard.problem[0], {"error": guard.problem[1]}, [(b"connection", b"close")])

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
        """(status, one-line reason, extra headers) when the request is refused before the app sees it."""
        size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", [])) + len(scope.get("query_string", b""))
        if size > self.max_header_bytes:
            return 431, f"request headers of {size} bytes are over the limit of {self.max_header_bytes}", []
        if not self._host_ok(headers):
            return 421, "unexpected Host header; open the page through the address the server printed", []
        if self.token:
            client = (scope.get("client") or ("?", 0))[0]
            wait = self.limiter.wait_s(client)
            if wait > 0:
                return 429, "too many wrong tokens; wait before trying again", [
                    (b"retry-after", str(int(wait) + 1).encode())]
            given, _ = self._tokens_of(scope, headers)
            if not any(hmac.compare_digest(g, self._expected) for g in given):
                self.limiter.failed(client)
                return 401, ("missing or wrong token (use the Authorization: Bearer header, or open /?token=SECRET "
                             "once)"), [(b"www-authenticate", b"Bearer")]
        if scope.get("method") in _UNSAFE_METHODS and self._cross_origin(headers):
            return 403, ("cross-origin request refused: uploads and changes are accepted from this server's page "
                         "only"), []
        declared = headers.get(b"content-length")
        if declared is not None and b"transfer-encoding" in headers:
            return 400, "both Content-Length and Transfer-Encoding are set", []
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return 400, "bad Content-Length header", []
            if size > self.max_body:
                return 413, f"request body of {size} bytes is over the limit of {self.max_body} bytes", []
        return None
