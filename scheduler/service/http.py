"""How the API is served: uvicorn's settings from ``[daemon]``, and a read deadline.

uvicorn (0.29-0.54) bounds an idle keep-alive connection (``timeout_keep_alive``), the
open connections (``limit_concurrency``: past it, requests are answered 503) and the size of
a request's headers (h11's incomplete-event limit, 16 KiB). It has no deadline for a client
to *send* a request: a connection that sends nothing, or trickles its headers or body a byte
at a time, is held for ever. :func:`deadline_protocol` adds one: from the connection (or
the last response) to the end of the request, ``request_timeout_s``; past it the connection
is closed. A request being answered is never cut.
"""

from __future__ import annotations

import asyncio
from typing import Any

from models.site import Daemon as DaemonConfig

HEADER_MAX_BYTES = 16 * 1024


def deadline_protocol(request_timeout_s: float) -> type[Any]:
    """uvicorn's h11 protocol with a deadline on reading each request."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None

        def _arm(self, finished: Any) -> None:
            self._disarm()
            self._armed_cycle = finished  # the request before the one being waited for
            self._deadline = self.loop.call_later(request_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(None)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and cycle is not self._armed_cycle and not cycle.more_body:
                self._disarm()  # the request is in: the app answers it in its own time

        def on_response_complete(self) -> None:
            finished = self.cycle
            super().on_response_complete()  # may start a pipelined request already read
            if self.transport.is_closing():
                return
            if self.cycle is not finished and not self.cycle.more_body:
                return
            self._arm(finished)  # the next request on this connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


def server_options(cfg: DaemonConfig) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the limits ``[daemon]`` sets."""
    return {
        "http": deadline_protocol(cfg.request_timeout_s),
        # X-Forwarded-For is believed only from the proxies named; uvicorn's default
        # trusts it from loopback, so a local client could claim any address per request
        "proxy_headers": bool(cfg.forwarded_allow_ips),
        "forwarded_allow_ips": list(cfg.forwarded_allow_ips) or None,
        "limit_concurrency": cfg.max_connections,
        "timeout_keep_alive": cfg.keep_alive_s,
        "h11_max_incomplete_event_size": HEADER_MAX_BYTES,
    }
