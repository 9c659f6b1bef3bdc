"""A stock Antminer's web server (lighttpd) on the wire: one connection, one request, one
answer, and the fields of a digest header as lighttpd reads them.

The web port is served by one ``asyncio.Protocol`` per connection (:class:`WebConnection`),
not a stream reader and a task: with no fault set, the request is answered in the callback
that completes it, which halved the simulator's CPU per command (its process shares the
host with the controller it is measured against).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, cast

from adapters.sim.web_port import parse_http_head

if TYPE_CHECKING:
    from adapters.sim.antminer_web import AntminerWeb

#: One ``name=value`` of a digest header: the value quoted (commas and spaces inside it are
#: its own) or a token up to the next comma, as lighttpd's ``mod_auth_digest_get`` reads it.
_AUTH_FIELD = re.compile(r'\s*([^\s=,]+)\s*=\s*(?:"([^"]*)"|([^,]*?))\s*(?:,|$)')


def parse_auth(value: str) -> dict[str, str]:
    """A digest header's fields after ``Digest ``, names lower case, quotes removed."""
    return {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _AUTH_FIELD.finditer(value)}


#: How long a connection may take to send its request (as the stream reader it replaces).
WEB_READ_S = 10.0
#: A request head longer than this is no HTTP request (asyncio's stream reader limit).
WEB_HEAD_MAX = 1 << 16


class WebConnection(asyncio.Protocol):
    """One connection to the web port: the request read as it comes (head, then
    ``Content-Length`` bytes of body), one answer, then closed, as lighttpd without
    keep-alive. With no fault set the answer is made in the same callback; under a fault
    (or ``conf_answer_s``) a task makes it. Not an HTTP request, or none within
    ``WEB_READ_S``: closed without an answer, as before."""

    def __init__(self, sim: AntminerWeb) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport: no isinstance
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(WEB_READ_S, self.close)
        self.sim._web_open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.timer is None:  # the request is in; anything more is not read
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > WEB_HEAD_MAX:
                self.close()
            return
        try:
            method, target, headers, length = parse_http_head(bytes(self.buf[:end]))
        except ValueError:  # no HTTP request: closed quietly
            self.close()
            return
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        self._request_in()
        sim = self.sim
        if not sim.faults and sim.conf_answer_s <= 0:
            self._send(sim._answer_now(method, target, headers, body))
            return
        task = asyncio.get_running_loop().create_task(
            self._answer_later(method, target, headers, body)
        )
        sim._active.add(task)  # stop() ends it
        task.add_done_callback(sim._active.discard)

    def _request_in(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sim._web_open.discard(self)

    async def _answer_later(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> None:
        reply = None
        try:
            reply = await self.sim._answer_later(method, target, headers, body)
        finally:
            self._send(reply)

    def _send(self, reply: bytes | None) -> None:
        if self.transport is not None and reply is not None:
            self.transport.write(reply)
        self.close()

    def close(self) -> None:
        self._request_in()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_in()
