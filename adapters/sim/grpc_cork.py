"""A grpclib server whose frames of one turn of the event loop leave in one write.

grpclib's server writes each frame to the transport as it makes it: an answer's HEADERS,
its DATA and its trailing HEADERS are three ``send`` system calls, and most often three
wake-ups of the client reading them. A Rust HTTP/2 server (tonic over the ``h2`` crate)
encodes frames into a write buffer and flushes it when the connection's task has nothing
more to send, so its answers leave in fewer, larger writes; that Braiins OS+'s BOSer runs
that stack is our assumption, from no source seen here.
:class:`CorkedServer` does the same for the simulator: the bytes and their order on the
connection are unchanged (the stream is what grpclib made), only where TCP segments end
differs, which HTTP/2 leaves to the transport. It halves the simulator's system calls per
call, and its process shares the host's cores with the controller it is measured against.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.protocol import H2Protocol
from grpclib.server import Server

from adapters.sim.grpc_hpack import cache_hpack


class CorkedTransport:
    """A transport whose writes within one turn of the loop go out as one, at its end.
    Everything else is the transport's own; closing sends what is buffered first."""

    __slots__ = ("_buf", "_due", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._buf: list[bytes] = []
        self._due = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._buf.append(data)
        if not self._due:
            self._due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._due = False
        if self._buf:
            data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
            self._buf.clear()
            # closed since (the client went away): nowhere to send it, and uvloop raises
            # on a write to a closed handle, in this callback where no one would catch it
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # abort, pause_reading, ...: the transport's
        return getattr(self._transport, name)


class CorkedProtocol(H2Protocol):
    """grpclib's connection protocol on a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport: no isinstance
        super().connection_made(CorkedTransport(transport))  # type: ignore[arg-type]
        cache_hpack(self.connection._connection)  # h2's, before any header block


class CorkedServer(Server):
    """grpclib's :class:`~grpclib.server.Server`, each connection's writes corked and its
    header blocks coded once (:mod:`adapters.sim.grpc_hpack`)."""

    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        return CorkedProtocol(made.handler, made.config, made.h2_config)
