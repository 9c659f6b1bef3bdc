"""Unary gRPC over our own HTTP/2 client (adapters/grpc_codec.py): what it sends is what
grpclib (pyasic's client) sends, a real grpclib server answers it, and the connection's
frames (SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, GOAWAY, CONTINUATION) are handled."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from grpclib.server import Server, Stream
from hpack import Decoder, Encoder

from adapters import grpc_codec
from adapters.grpc_wire import Wire
from tests.support.grpcmsg import PATH, RawMessage


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each whole frame after the client preface."""
    assert data.startswith(grpc_codec.PREFACE)
    i, out = len(grpc_codec.PREFACE), []
    while len(data) - i >= 9:
        hi, lo, kind, flags, stream = struct.unpack_from(">BHBBI", data, i)
        n = hi << 16 | lo
        if len(data) - i - 9 < n:
            break
        out.append((kind, flags, stream, data[i + 9 : i + 9 + n]))
        i += 9 + n
    return out


async def _capture(send: Callable[[str, int], Awaitable[Any]], requests: int) -> bytes:
    """What a client sends for ``requests`` unary calls, on a server that answers nothing."""
    got = bytearray()
    seen = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not seen.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                break
            got.extend(chunk)
            if got.startswith(grpc_codec.PREFACE):
                ends = [f for f in _frames(bytes(got)) if f[0] == grpc_codec.DATA and f[1] & 1]
                if len(ends) >= requests:
                    seen.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    task = asyncio.ensure_future(send("127.0.0.1", port))
    async with asyncio.timeout(10.0):
        await seen.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()
    return bytes(got)


def _requests(data: bytes) -> list[tuple[list[tuple[str, str]], bytes]]:
    """Each request's decoded headers and DATA, in order, one decoder for the connection."""
    dec, out = Decoder(), []
    bodies: dict[int, bytes] = {}
    heads: dict[int, list[tuple[str, str]]] = {}
    for kind, flags, stream, payload in _frames(data):
        if kind == grpc_codec.HEADERS:
            assert flags & grpc_codec.END_HEADERS
            heads[stream] = [(str(k), str(v)) for k, v in dec.decode(payload)]
        elif kind == grpc_codec.DATA:
            bodies[stream] = bodies.get(stream, b"") + payload
            if flags & grpc_codec.END_STREAM:
                out.append((heads[stream], bodies[stream]))
    return out


def test_a_call_sends_the_headers_and_message_grpclib_sends_and_indexes_them_after() -> None:
    """Byte for byte where it matters: the same header list (grpclib's order, its
    user-agent, the token) and the same gRPC-framed message, the first call and the next
    on the same connection (the second names its fields by index: the table must agree)."""
    meta = (("authorization", "tok-123"),)

    async def ours(host: str, port: int) -> None:
        wire = Wire(host, port)
        await wire.call(PATH, b"\x08\x01", meta)

    async def ours_twice(host: str, port: int) -> None:
        wire = Wire(host, port)
        first = asyncio.ensure_future(wire.call(PATH, b"\x08\x01", meta))
        await asyncio.sleep(0)
        await wire.call(PATH, b"\x08\x01", meta)
        await first

    async def theirs(host: str, port: int) -> None:
        ch = Channel(host, port)
        first = asyncio.ensure_future(_grpclib_call(ch, dict(meta)))
        await asyncio.sleep(0.05)
        try:
            await _grpclib_call(ch, dict(meta))
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            ch.close()

    async def go() -> tuple[bytes, bytes]:
        return await _capture(ours_twice, 2), await _capture(theirs, 2)

    mine, grpclib_sent = asyncio.run(go())
    a, b = _requests(mine), _requests(grpclib_sent)
    assert len(a) == len(b) == 2

    def same(req: tuple[list[tuple[str, str]], bytes]) -> Any:  # each capture had its port
        headers, body = req
        return [(k, "127.0.0.1" if k == ":authority" else v) for k, v in headers], body

    assert same(a[0]) == same(a[1]) == same(b[0]) == same(b[1])
    headers, body = a[0]
    assert headers[:2] == [(":method", "POST"), (":scheme", "http")]
    assert headers[-1] == ("authorization", "tok-123")
    assert body == b"\x00\x00\x00\x00\x02\x08\x01"
    # the second block names every field by one index, as grpclib's does
    blocks = [p for k, _f, _s, p in _frames(mine) if k == grpc_codec.HEADERS]
    theirs_blocks = [p for k, _f, _s, p in _frames(grpclib_sent) if k == grpc_codec.HEADERS]
    assert len(blocks[1]) == len(theirs_blocks[1]) == 8


async def _grpclib_call(ch: Channel, meta: dict[str, str]) -> Any:
    async with ch.request(
        PATH, grpclib.const.Cardinality.UNARY_UNARY, RawMessage, RawMessage, metadata=meta
    ) as stream:
        await stream.send_message(RawMessage(b"\x08\x01"), end=True)
        return await stream.recv_message()


# -- against a real grpclib server -------------------------------------------------------


class _Service:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        async def echo(stream: Stream[Any, Any]) -> None:
            req = await stream.recv_message()
            assert req is not None
            self.seen.append(req.data)
            if req.data.startswith(b"fail"):
                raise GRPCError(Status.INVALID_ARGUMENT, "power target 0 W 100% out of range é")
            if req.data.startswith(b"big"):
                await stream.send_message(RawMessage(b"x" * 1_500_000))
                return
            await stream.send_message(RawMessage(b"re:" + req.data[:16]))

        cardinality = grpclib.const.Cardinality.UNARY_UNARY
        return {PATH: grpclib.const.Handler(echo, cardinality, RawMessage, RawMessage)}


def test_calls_to_a_grpclib_server_answer_and_fail_as_grpclib_would() -> None:
    svc = _Service()

    async def go() -> None:
        server = Server([svc])
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        wire = Wire("127.0.0.1", port)
        assert await wire.call(PATH, b"hello") == b"re:hello"
        with pytest.raises(GRPCError) as err:
            await wire.call(PATH, b"fail")
        assert err.value.status is Status.INVALID_ARGUMENT
        assert err.value.message == "power target 0 W 100% out of range é"
        # a reply beyond the default 64 KiB windows, a request beyond the server's
        assert await wire.call(PATH, b"big") == b"x" * 1_500_000
        big = b"y" * 300_000
        assert await wire.call(PATH, big) == b"re:" + big[:16]
        # many calls at once share one connection
        got = await asyncio.gather(*(wire.call(PATH, b"n%d" % i) for i in range(200)))
        assert got == [b"re:n%d" % i for i in range(200)]
        first = wire.connection
        assert first is not None and first.transport is not None
        first.transport.abort()  # lost: the next call connects again
        async with asyncio.timeout(10.0):
            while not first.lost:
                await asyncio.sleep(0.01)
        assert await wire.call(PATH, b"again") == b"re:again"
        assert wire.connection is not first
        wire.close()
        server.close()
        await server.wait_closed()

    asyncio.run(go())
    assert svc.seen[:2] == [b"hello", b"fail"]


def test_an_unreachable_server_is_an_os_error() -> None:
    async def go() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(OSError):
            await Wire("127.0.0.1", port).call(PATH, b"")

    asyncio.run(go())


# -- a scripted server: the frames a real one may send ------------------------------------


def _f(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return grpc_codec.frame(kind, flags, stream, payload)


class _Script:
    """A raw HTTP/2 server: ``answer(stream_id, enc)`` gives the bytes for each request."""

    def __init__(self, answer: Callable[[int, Encoder], bytes], first: bytes = b"") -> None:
        self.answer, self.first = answer, first
        self.got: list[tuple[int, int, int, bytes]] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        enc, buf, done = Encoder(), b"", 0
        writer.write(_f(grpc_codec.SETTINGS, 0, 0) + self.first)
        while chunk := await reader.read(65536):
            buf += chunk
            if not buf.startswith(grpc_codec.PREFACE):
                continue
            frames = _frames(buf)
            for kind, flags, stream, payload in frames[done:]:
                self.got.append((kind, flags, stream, payload))
                if kind == grpc_codec.DATA and flags & grpc_codec.END_STREAM:
                    writer.write(self.answer(stream, enc))
            done = len(frames)
        writer.close()


def _ok(stream: int, enc: Encoder, body: bytes = b"\x08\x01") -> bytes:
    head = enc.encode([(":status", "200"), ("content-type", "application/grpc")])
    tail = enc.encode([("grpc-status", "0")])
    msg = b"\x00" + len(body).to_bytes(4, "big") + body
    return (
        _f(grpc_codec.HEADERS, grpc_codec.END_HEADERS, stream, head)
        + _f(grpc_codec.DATA, 0, stream, msg)
        + _f(grpc_codec.HEADERS, grpc_codec.END_HEADERS | grpc_codec.END_STREAM, stream, tail)
    )


async def _scripted(script: _Script, calls: Callable[[Wire], Awaitable[Any]]) -> Any:
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = Wire("127.0.0.1", port)
    try:
        async with asyncio.timeout(10.0):
            return await calls(wire)
    finally:
        wire.close()
        server.close()


def test_settings_and_ping_are_acknowledged_and_a_split_header_block_is_read() -> None:
    """The server's SETTINGS and PING get their ACKs; headers over HEADERS + CONTINUATION,
    padded DATA and frames cut into single bytes on the wire read as one answer."""

    def answer(stream: int, enc: Encoder) -> bytes:
        head = enc.encode([(":status", "200"), ("content-type", "application/grpc+proto")])
        tail = enc.encode([("grpc-status", "0")])
        msg = b"\x00\x00\x00\x00\x02\x08\x01"
        padded = bytes([3]) + msg + b"\x00" * 3
        out = (
            _f(grpc_codec.PING, 0, 0, b"12345678")
            + _f(grpc_codec.HEADERS, 0, stream, head[:2])
            + _f(grpc_codec.CONTINUATION, grpc_codec.END_HEADERS, stream, head[2:])
            + _f(grpc_codec.DATA, grpc_codec.PADDED, stream, padded)
            + _f(grpc_codec.HEADERS, grpc_codec.END_HEADERS | grpc_codec.END_STREAM, stream, tail)
        )
        return out

    script = _Script(answer)

    async def calls(wire: Wire) -> list[bytes | None]:
        out = [await wire.call(PATH, b"")]
        conn = wire.connection
        assert conn is not None
        # the answer arrives one byte at a time
        conn_data = conn.data_received

        def trickle(data: bytes) -> None:
            for i in range(len(data)):
                conn_data(data[i : i + 1])

        conn.data_received = trickle  # type: ignore[method-assign]
        out.append(await wire.call(PATH, b""))
        return out

    got = asyncio.run(_scripted(script, calls))
    assert got == [b"\x08\x01", b"\x08\x01"]
    kinds = [(k, f) for k, f, _s, _p in script.got]
    assert (grpc_codec.SETTINGS, grpc_codec.ACK) in kinds
    pings = [p for k, f, _s, p in script.got if k == grpc_codec.PING]
    assert pings == [b"12345678", b"12345678"]
    assert all(f == grpc_codec.ACK for k, f, _s, _p in script.got if k == grpc_codec.PING)


def test_statuses_as_grpclib_reads_them() -> None:
    """A non-200 :status maps as grpclib maps it; a trailers-only answer carries its
    grpc-status; no grpc-status at all is UNKNOWN; a wrong content-type is UNKNOWN."""
    answers = iter(
        [
            [(":status", "503")],
            [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "16"),
             ("grpc-message", "token%20expired")],
            [(":status", "200"), ("content-type", "application/grpc")],
            [(":status", "200"), ("content-type", "text/html"), ("grpc-status", "0")],
        ]
    )  # fmt: skip

    def answer(stream: int, enc: Encoder) -> bytes:
        flags = grpc_codec.END_HEADERS | grpc_codec.END_STREAM
        return _f(grpc_codec.HEADERS, flags, stream, enc.encode(next(answers)))

    async def calls(wire: Wire) -> list[tuple[Status, str | None]]:
        out = []
        for _ in range(4):
            with pytest.raises(GRPCError) as err:
                await wire.call(PATH, b"")
            out.append((err.value.status, err.value.message))
        return out

    got = asyncio.run(_scripted(_Script(answer), calls))
    assert got == [
        (Status.UNAVAILABLE, "Received :status = '503'"),
        (Status.UNAUTHENTICATED, "token expired"),
        (Status.UNKNOWN, "Missing grpc-status header"),
        (Status.UNKNOWN, "Invalid content-type: 'text/html'"),
    ]


def test_a_reset_stream_and_goaway_end_their_calls_and_the_next_call_connects_again() -> None:
    n = iter(range(100))

    def answer(stream: int, enc: Encoder) -> bytes:
        nth = next(n)
        if nth == 0:
            return _f(grpc_codec.RST_STREAM, 0, stream, (2).to_bytes(4, "big"))
        if nth == 1:  # stream 3: taken and answered, then no more on this connection
            goaway = (3).to_bytes(4, "big") + (0).to_bytes(4, "big")
            return _ok(stream, enc) + _f(grpc_codec.GOAWAY, 0, 0, goaway)
        return _ok(stream, enc)

    script = _Script(answer)

    async def calls(wire: Wire) -> list[Any]:
        out: list[Any] = []
        with pytest.raises(StreamTerminatedError):
            await wire.call(PATH, b"")
        out.append(await wire.call(PATH, b""))
        first = wire.connection
        assert first is not None
        async with asyncio.timeout(5.0):
            while not first.going_away:
                await asyncio.sleep(0.01)
        out.append(await wire.call(PATH, b""))  # a new connection: stream 1 there
        out.append(wire.connection is not first)
        return out

    got = asyncio.run(_scripted(script, calls))
    assert got == [b"\x08\x01", b"\x08\x01", True]
    assert script.connections == 2


def test_a_cancelled_call_resets_its_stream() -> None:
    script = _Script(lambda stream, enc: b"")  # never answers

    async def calls(wire: Wire) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await wire.call(PATH, b"")
        async with asyncio.timeout(5.0):
            while not any(k == grpc_codec.RST_STREAM for k, *_ in script.got):
                await asyncio.sleep(0.01)

    asyncio.run(_scripted(script, calls))
    reset = [(s, p) for k, _f, s, p in script.got if k == grpc_codec.RST_STREAM]
    assert reset == [(1, grpc_codec.CANCEL.to_bytes(4, "big"))]


def test_a_smaller_header_table_from_the_server_is_announced_and_kept_to() -> None:
    """SETTINGS_HEADER_TABLE_SIZE 100: the next block starts with a size update and the
    fields are indexed within 100 octets (entries evicted, indexes shifting), so a decoder
    held to that size reads every request right."""
    settings = _f(grpc_codec.SETTINGS, 0, 0, struct.pack(">HI", 1, 100))
    script = _Script(_ok, first=settings)
    meta = (("authorization", "tok"),)

    async def calls(wire: Wire) -> None:
        for _ in range(4):
            assert await wire.call(PATH, b"", meta) == b"\x08\x01"

    asyncio.run(_scripted(script, calls))
    dec = Decoder()
    dec.max_allowed_table_size = 100  # a size update above it is an error
    blocks = [p for k, _f, _s, p in script.got if k == grpc_codec.HEADERS]
    decoded = [[(str(k), str(v)) for k, v in dec.decode(b)] for b in blocks]
    assert blocks[1][:1] == b"\x3f" or blocks[0][:1] == b"\x3f"  # 001 + 100 (5-bit prefix)
    assert dec.header_table_size == 100
    for headers in decoded:
        assert headers[2] == (":path", PATH) and headers[-1] == ("authorization", "tok")
