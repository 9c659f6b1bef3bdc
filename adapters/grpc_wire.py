"""Unary gRPC calls over one kept HTTP/2 connection, without grpclib's client stack.

Braiins OS+ is reached over gRPC (pyasic's ``BOSerWebAPI``: grpclib over the pure-Python
``h2``, ``hpack`` and ``hyperframe``). With the connection kept per miner
(:mod:`adapters.braiins`), a profile of the fleet benchmark's Braiins commands
(docs/performance.md, "Fleet control") still had most of a command's CPU in that stack:
``h2``'s state machines, its header validation and HPACK encoder, grpclib's stream
wrappers and events. A unary call needs little of it, so this module makes one itself:

- **Request**: one HEADERS frame (END_HEADERS) and one DATA frame (END_STREAM) carrying the
  gRPC message (a zero compression flag, its length, its bytes), written together. The
  header list is grpclib's, in its order (``Stream.send_request``: ``:method``,
  ``:scheme``, ``:path``, ``:authority``, ``te``, ``content-type``, ``user-agent``, then
  the metadata), so a miner sees what pyasic sends. HPACK (:class:`Encoder`): each field
  is indexed the first time and named by its index after that, as grpclib's encoder does
  (a first version sent every field as a literal and kept no table: the same headers,
  not the same bytes as pyasic's; the simulator decoded either in the same time). A block
  that adds nothing to the table is kept and sent again while the table stays as it was.
- **Answers**: the server's header blocks are decoded by ``hpack``'s ``Decoder``, one per
  connection and every block in order, since a server may index its headers (grpclib's
  does; what Braiins OS+'s server does is not documented); a block of one-byte indexes
  only (an answer's usual headers once indexed) changes no table, so its decoding is kept
  until one that may.
  The gRPC status is read as grpclib reads it: ``:status`` other than 200 mapped as
  grpclib maps it, ``content-type`` checked, ``grpc-status`` and
  ``grpc-message`` (percent-decoded) from the trailers or a trailers-only answer; a
  non-OK status raises grpclib's ``GRPCError``, so callers tell statuses apart as before.
- **The connection** (RFC 9113): the client preface and our SETTINGS (no push, a larger
  receive window); SETTINGS and PING acknowledged; WINDOW_UPDATE honoured for what we send
  and sent for what we receive; the server's MAX_CONCURRENT_STREAMS and MAX_FRAME_SIZE
  respected; RST_STREAM ends its call (grpclib's ``StreamTerminatedError``); GOAWAY ends
  the calls it did not take and sends new ones over a new connection; a lost connection
  ends every call in flight, and the next call connects again (as grpclib's ``Channel``).
  A cancelled call (a timeout) resets its stream (RST_STREAM, CANCEL).
"""

from __future__ import annotations

import asyncio
import re
import struct
from typing import cast

from grpclib import GRPCError
from grpclib.exceptions import StreamTerminatedError
from hpack import Decoder
from hpack.exceptions import HPACKError

from adapters.grpc_codec import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_NAMES,
    GOAWAY,
    HEAD,
    HEADERS,
    MESSAGE,
    ONE_BYTE_INDEXED,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    WINDOW,
    WINDOW_UPDATE,
    Encoder,
    answer,
    data_frames,
    frame,
    header_frames,
)
from adapters.neterrors import describe


class _Call:
    __slots__ = ("data", "done", "headers", "received", "send_window", "trailers")

    def __init__(self, done: asyncio.Future[bytes | None], send_window: int) -> None:
        self.done = done
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.data = bytearray()
        self.received = 0  # bytes of DATA not yet given back by a WINDOW_UPDATE
        self.send_window = send_window


class Connection(asyncio.Protocol):
    """One HTTP/2 connection to a gRPC server, carrying unary calls."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False  # the connection is gone
        self.going_away = False  # GOAWAY: no new streams on it
        self.calls: dict[int, _Call] = {}
        self.next_stream = 1
        self._buf = bytearray()
        self._decoder = Decoder()
        self._decoded: dict[bytes, list[tuple[str, str]]] = {}  # indexed-only blocks
        self.encoder = Encoder()
        self._blocks: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[int, bytes]] = {}
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION
        self._block_stream = self._block_flags = 0
        self.max_streams = 1 << 31
        self.max_frame = 16_384
        self.stream_window = DEFAULT_WINDOW  # the server's INITIAL_WINDOW_SIZE
        self.send_window = DEFAULT_WINDOW  # the connection's, for our DATA
        self._received = 0  # the connection's DATA not yet given back
        self._changed = asyncio.Event()  # a window opened, a stream ended, the connection went

    @property
    def usable(self) -> bool:
        return not (self.lost or self.going_away) and self.next_stream < (1 << 31) - 2

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        settings = SETTING.pack(2, 0) + SETTING.pack(4, WINDOW)  # no push; our window
        self.transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        # grpclib's words first ("Connection lost"), then what the OS said, in words
        why = "Connection lost" + (f": {describe(exc)}" if exc else "")
        for call in self.calls.values():
            if not call.done.done():
                call.done.set_exception(StreamTerminatedError(why))
        self._changed.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        i, end = 0, len(buf)
        while end - i >= 9:
            hi, lo, kind, flags, stream = HEAD.unpack_from(buf, i)
            n = hi << 16 | lo
            if end - i - 9 < n:
                break
            payload = bytes(buf[i + 9 : i + 9 + n])
            i += 9 + n
            try:
                self._frame(kind, flags, stream & 0x7FFFFFFF, payload)
            except (HPACKError, ValueError, IndexError, struct.error) as exc:
                name = FRAME_NAMES[kind] if kind < len(FRAME_NAMES) else f"type {kind}"
                where = f"a {name} frame of {n} bytes on stream {stream & 0x7FFFFFFF}"
                # hpack names the buffer it read ("from <memory at 0x7f...>"): no use to anyone
                why = re.sub(r" from <memory at 0x[0-9a-f]+>", "", str(exc))
                self._fail(f"{where} that cannot be read: {why}")
                return
        del buf[:i]

    # -- frames in -------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ValueError("a header block cut off by another frame")
        if kind == DATA:
            self._data(flags, stream, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block, self._block_stream, self._block_flags = bytearray(), stream, flags
            self._continuation(flags, payload)
        elif kind == CONTINUATION:
            if self._block is None or stream != self._block_stream:
                raise ValueError("a CONTINUATION without its HEADERS")
            self._continuation(flags, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            step = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += step
            elif (call := self.calls.get(stream)) is not None:
                call.send_window += step
            self._changed.set()
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._end(stream, StreamTerminatedError(f"Stream reset by remote party: {code}"))
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.going_away = True
            for s in [s for s in self.calls if s > last]:  # never taken: not processed
                self._end(s, StreamTerminatedError(f"Connection closed by the server: {code}"))
            self._changed.set()
        elif kind == PUSH_PROMISE:  # our SETTINGS refused push
            raise ValueError("PUSH_PROMISE after SETTINGS_ENABLE_PUSH 0")
        # PRIORITY and unknown types are ignored (RFC 9113 4.1, 5.5)

    def _settings(self, payload: bytes) -> None:
        for j in range(0, len(payload) - len(payload) % 6, 6):
            key, value = SETTING.unpack_from(payload, j)
            if key == 1:
                self.encoder.limit(value)
            elif key == 3:
                self.max_streams = value
            elif key == 4:
                for call in self.calls.values():
                    call.send_window += value - self.stream_window
                self.stream_window = value
            elif key == 5:
                self.max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._changed.set()

    def _continuation(self, flags: int, payload: bytes) -> None:
        assert self._block is not None
        self._block += payload
        if not flags & END_HEADERS:
            return
        block, stream, first = bytes(self._block), self._block_stream, self._block_flags
        self._block = None
        # every block is decoded, a stream's we no longer wait for too: the table is shared
        headers = self._decoded.get(block)
        if headers is None:
            headers = cast(list[tuple[str, str]], self._decoder.decode(block))
            if block.translate(None, ONE_BYTE_INDEXED):  # it may have changed the table
                self._decoded.clear()
            elif len(self._decoded) < 64:
                self._decoded[block] = headers
        call = self.calls.get(stream)
        if call is not None:
            if call.headers is None:
                call.headers = headers
            else:
                call.trailers = headers
            if first & END_STREAM:
                self._end(stream, None)

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        n = len(payload)
        if flags & PADDED:
            payload = payload[1 : n - payload[0]]
        self._received += n
        out = b""
        if self._received >= WINDOW // 2:
            out = frame(WINDOW_UPDATE, 0, 0, self._received.to_bytes(4, "big"))
            self._received = 0
        call = self.calls.get(stream)
        if call is not None:
            call.data += payload
            call.received += n
            if flags & END_STREAM:
                self._end(stream, None)
            elif call.received >= WINDOW // 2:
                out += frame(WINDOW_UPDATE, 0, stream, call.received.to_bytes(4, "big"))
                call.received = 0
        if out:
            self._write(out)

    def _end(self, stream: int, exc: Exception | None) -> None:
        call = self.calls.get(stream)
        if call is None or call.done.done():
            return
        if exc is not None:
            call.done.set_exception(exc)
            return
        try:
            call.done.set_result(answer(call.headers, call.trailers, bytes(call.data)))
        except GRPCError as e:
            call.done.set_exception(e)

    def _fail(self, why: str) -> None:
        """A connection error: GOAWAY, and every call ends (RFC 9113 5.4.1)."""
        self._write(frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + PROTOCOL_ERROR.to_bytes(4)))
        for s in list(self.calls):
            self._end(s, StreamTerminatedError(f"Connection closed: {why}"))
        self.going_away = True
        if self.transport is not None:
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    # -- a call ----------------------------------------------------------------------------

    def _request_block(
        self, path: str, authority: str, metadata: tuple[tuple[str, str], ...]
    ) -> bytes:
        """The request's header block; one that added nothing to the table is kept and sent
        again while the table is as it was."""
        key = (path, authority, metadata)
        got = self._blocks.get(key)
        if got is not None and got[0] == self.encoder.generation:
            return got[1]
        before = self.encoder.generation
        block = self.encoder.block(path, authority, metadata)
        if self.encoder.generation == before and len(self._blocks) < 64:
            self._blocks[key] = (before, block)
        return block

    async def call(
        self, path: str, authority: str, metadata: tuple[tuple[str, str], ...], message: bytes
    ) -> bytes | None:
        """One unary call to ``path`` with ``metadata``; ``message`` its request's bytes.
        The answer's message (None when it sent none), or grpclib's GRPCError for a
        non-OK status, StreamTerminatedError for a reset or lost stream."""
        while len(self.calls) >= self.max_streams and self.usable:
            self._changed.clear()
            await self._changed.wait()
        if not self.usable:
            raise StreamTerminatedError("Connection closed")
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        call = self.calls[stream] = _Call(done, self.stream_window)
        try:
            body = MESSAGE.pack(0, len(message)) + message
            data, sent = self._body(stream, call, body)
            block = self._request_block(path, authority, metadata)  # now: in the order sent
            self._write(header_frames(stream, block, self.max_frame) + data)
            while (body := body[sent:]) and not done.done() and not self.lost:
                self._changed.clear()  # what the windows held back, sent as they open
                opened: asyncio.Future[object] = asyncio.ensure_future(self._changed.wait())
                either: set[asyncio.Future[object]] = {cast("asyncio.Future[object]", done), opened}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                opened.cancel()
                data, sent = self._body(stream, call, body)
                self._write(data)
            return await done
        except asyncio.CancelledError:  # awaiting it cancelled ``done`` too
            if done.cancelled() or not done.done():
                self._write(frame(RST_STREAM, 0, stream, CANCEL.to_bytes(4, "big")))
            raise
        finally:
            del self.calls[stream]
            self._changed.set()  # a stream slot is free

    def _body(self, stream: int, call: _Call, body: bytes) -> tuple[bytes, int]:
        """DATA frames for as much of ``body`` as the windows allow (END_STREAM on its
        last byte), and how much that was."""
        room = min(self.send_window, call.send_window, len(body))
        self.send_window -= room
        call.send_window -= room
        return data_frames(stream, body, room, self.max_frame), room


class Wire:
    """Unary calls to one gRPC server (``host``:``port``) over one kept connection, made
    again when it is lost or the server sent GOAWAY."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.authority = f"{host}:{port}"  # as grpclib's Channel names it
        self.connection: Connection | None = None
        self._connecting: asyncio.Future[Connection] | None = None

    async def _connect(self) -> Connection:
        conn = self.connection
        if conn is not None and conn.usable:
            return conn
        if self._connecting is None:  # one connection for the calls that found none
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> Connection:
        old = self.connection
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Connection, self.host, self.port)
        self.connection = conn
        if old is not None and not old.calls and old.transport is not None:
            old.transport.close()  # gone away with nothing in flight
        return conn

    async def call(
        self, path: str, message: bytes, metadata: tuple[tuple[str, str], ...] = ()
    ) -> bytes | None:
        conn = await self._connect()
        return await conn.call(path, self.authority, metadata, message)

    def close(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
