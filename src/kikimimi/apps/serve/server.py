"""The HTTP server of `kikimimi serve`: uvicorn's h11 protocol with limits that idle clients cannot exhaust.

uvicorn alone keeps a connection that never sends its request headers open for ever, and counts it against
``limit_concurrency``: 130 idle sockets made every other request — authorised ones included — a 503. Here
(:class:`ConnectionLimits`, applied by :func:`server_config`):

- the request line and headers must arrive within ``header_timeout_s`` of the connection (or of the end of
  the previous answer on a kept-alive one), else the connection is closed; their size is bounded by h11
  (``max_header_bytes``); idle kept-alive connections close after ``keep_alive_s``;
- at most ``per_client`` connections per client address and ``total`` overall: a new connection over either
  cap first closes the oldest connection (of that client, then of anyone) that has no request in progress,
  and is itself closed only when every connection is busy — so idle sockets make room instead of taking it;
- request bodies are bounded and timed by :class:`~kikimimi.apps.serve.security.GuardMiddleware`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "guarded_protocol", "server_config"]


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection-level limits (seconds, counts, bytes)."""

    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    per_client: int = 32
    total: int = 256
    max_header_bytes: int = 16 * 1024


class _GuardedH11(H11Protocol):
    """h11 with a header deadline and idle-first eviction (see the module docstring)."""

    limits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_request = self.cycle
        self._opened = self.loop.time()
        super().connection_made(transport)
        if not self._make_room():
            self.transport.close()
            return
        self._arm_header_timer()

    # -------------------------------------------------------------- header deadline
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._busy() and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._seen_request:  # a request's headers arrived: the deadline is met
            self._seen_request = self.cycle
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._busy():
            self._arm_header_timer()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # -------------------------------------------------------------- caps
    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> bool:
        """Close idle connections to keep within the caps; False when this one must be closed instead."""
        others = [c for c in list(self.connections) if c is not self and isinstance(c, _GuardedH11)]
        me = self.client[0] if self.client else None
        mine = [c for c in others if c.client and c.client[0] == me]
        for group, cap in ((mine, self.limits.per_client), (others, self.limits.total)):
            while len([c for c in group if not c.transport.is_closing()]) + 1 > cap:
                idle = [c for c in group if not c._busy() and not c.transport.is_closing()]
                if not idle:
                    return False
                min(idle, key=lambda c: c._opened).transport.close()  # the oldest idle one makes room
        return True


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """An h11 protocol class for uvicorn (``http=``) enforcing ``limits``."""
    return type("GuardedH11Protocol", (_GuardedH11,), {"limits": limits})


def server_config(app: Any, host: str, port: int, limits: ConnectionLimits | None = None,
                  **kwargs: Any) -> Config:
    """A :class:`uvicorn.Config` serving ``app`` with :class:`ConnectionLimits` (``kwargs``: other uvicorn
    settings, e.g. ``log_level``)."""
    limits = limits or ConnectionLimits()
    return Config(app, host=host, port=port, http=guarded_protocol(limits), limit_concurrency=None,
                  timeout_keep_alive=limits.keep_alive_s, h11_max_incomplete_event_size=limits.max_header_bytes,
                  server_header=False, **{"log_level": "warning", **kwargs})
