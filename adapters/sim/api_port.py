"""A simulated miner's API port (4028) as an asyncio Protocol: one JSON request in, the
answer out from the protocol's own callback, with no task, stream or timer per request (what
the simulator's CPU per request was mostly made of; it shares the host with the controller
under test). What is answered is :class:`adapters.sim.server.MinerServer`'s."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from adapters.sim.server import MinerServer

#: How long a client may take to send its request (cgminer-style APIs give up too).
REQUEST_TIMEOUT_S = 10.0


class _Waiting:
    """One event loop's API connections still waiting for their request, oldest first, and
    the one timer that closes those past REQUEST_TIMEOUT_S: a timer per connection was
    some 10 % of the simulator's CPU per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conns: dict[ApiConnection, float] = {}  # -> deadline, in the order they came
        self.timer: asyncio.TimerHandle | None = None

    def add(self, conn: ApiConnection) -> None:
        self.conns[conn] = self.loop.time() + REQUEST_TIMEOUT_S
        if self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_later(min(1.0, REQUEST_TIMEOUT_S / 4), self._sweep)

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for conn, deadline in list(self.conns.items()):
            if deadline > now:
                break
            del self.conns[conn]
            conn.close()
        if self.conns:
            self._arm()


_WAITING: dict[int, _Waiting] = {}


def _waiting_of(loop: asyncio.AbstractEventLoop) -> _Waiting:
    """The loop's own :class:`_Waiting` (a test runs several loops, a thread may run one)."""
    w = _WAITING.get(id(loop))
    if w is None or w.loop is not loop:
        for key in [k for k, v in _WAITING.items() if v.loop.is_closed()]:
            del _WAITING[key]
        w = _WAITING[id(loop)] = _Waiting(loop)
    return w


class ApiConnection(asyncio.Protocol):
    """One client of a simulated miner's API port: it writes one JSON request and keeps the
    socket open for the answer; the request ends when what came so far (less a trailing NUL,
    newline or blank) is a JSON object, or when the client closes its side."""

    __slots__ = ("_buf", "_miner", "_served", "_transport", "_waiting")

    def __init__(self, miner: MinerServer) -> None:
        self._miner = miner
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._waiting: _Waiting | None = None
        self._served = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport: no isinstance
        self._transport = cast(asyncio.Transport, transport)
        self._miner._conns.add(self)
        self._waiting = _waiting_of(asyncio.get_running_loop())
        self._waiting.add(self)

    def data_received(self, data: bytes) -> None:
        if self._served:
            return
        self._buf += data
        text = self._buf.rstrip(b"\x00\n ")
        if not text.endswith(b"}"):
            return
        try:
            json.loads(text)
        except ValueError:
            return  # more to come (or the client's close ends it)
        self._serve(text)

    def eof_received(self) -> bool:
        if not self._served:
            self._serve(self._buf)
        return True  # keep our side open for the answer; reply() closes it

    def _serve(self, raw: bytes) -> None:
        self._served = True
        if self._waiting is not None:
            self._waiting.conns.pop(self, None)
        self._miner._serve_api(self, raw)

    def reply(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiting is not None:
            self._waiting.conns.pop(self, None)
        self._miner._conns.discard(self)
        self._transport = None
