"""The Braiins OS+ simulator's gRPC server with its writes corked (adapters/sim/grpc_cork.py):
the bytes on the connection are grpclib's own, in grpclib's order, and an answer's frames
leave in one write instead of one write each."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpclib.const
import h2.config
import h2.connection
import h2.events
from grpclib.client import Channel
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from adapters.sim.grpc_cork import CorkedProtocol, CorkedServer, CorkedTransport
from tests.support.grpcmsg import PATH, RawMessage


class _Echo:
    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        async def call(stream: Stream[Any, Any]) -> None:
            req = await stream.recv_message()
            await stream.send_message(RawMessage(b"re:" + (req.data if req else b"")))

        return {
            PATH: grpclib.const.Handler(
                call, grpclib.const.Cardinality.UNARY_UNARY, RawMessage, RawMessage
            )
        }


def _port(server: Server) -> int:
    """The OS-chosen port a started grpclib server listens on."""
    listening = cast(asyncio.Server, server._server)
    return int(listening.sockets[0].getsockname()[1])


WRITES: list[int] = []  # the socket writes of the servers below, one entry each


class _Counting:
    """A transport that counts its writes."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport

    def write(self, data: bytes) -> None:
        WRITES.append(len(data))
        self._t.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class _PlainProto(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_Counting(transport))  # type: ignore[arg-type]


class _CorkedProto(CorkedProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_Counting(transport))  # type: ignore[arg-type]


class _CountedPlain(Server):
    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        return _PlainProto(made.handler, made.config, made.h2_config)


class _CountedCorked(Server):
    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        return _CorkedProto(made.handler, made.config, made.h2_config)


async def _exchange(server_cls: type[Server], calls: int) -> tuple[bytes, int]:
    """All the bytes a server sends for ``calls`` unary calls on one connection (each
    sent when the last has ended), and how many socket writes they took."""
    WRITES.clear()
    server = server_cls([_Echo()])
    await server.start("127.0.0.1", 0)
    port = _port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    writer.write(client.data_to_send())
    got = bytearray()
    try:
        for k in range(calls):
            sid = client.get_next_available_stream_id()
            client.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", PATH),
                    (":authority", f"127.0.0.1:{port}"),
                    ("te", "trailers"),
                    ("content-type", "application/grpc+proto"),
                ],
            )
            body = f"call {k}".encode()
            client.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
            writer.write(client.data_to_send())
            ended = False
            while not ended:
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "the server closed the connection"
                got += data
                for ev in client.receive_data(data):
                    ended |= isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid
                writer.write(client.data_to_send())  # SETTINGS and PING acknowledged
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    assert sum(WRITES) == len(got)
    return bytes(got), len(WRITES)


def test_a_corked_server_sends_grpclibs_bytes_in_fewer_writes() -> None:
    plain, plain_writes = asyncio.run(_exchange(_CountedPlain, 5))
    corked, corked_writes = asyncio.run(_exchange(_CountedCorked, 5))
    assert corked == plain  # the same stream of bytes: only where the segments end differs
    assert b"re:call 4" in corked
    # grpclib: an answer's HEADERS, DATA and trailing HEADERS are a write each; corked,
    # one write per turn of the loop (an answer in one, a WINDOW_UPDATE at most beside it)
    assert plain_writes >= 3 * 5
    assert corked_writes <= 2 * 5 + 2 and corked_writes < plain_writes


def test_grpclibs_own_client_calls_a_corked_server() -> None:
    asyncio.run(_call_50())


async def _call_50() -> None:
    server = CorkedServer([_Echo()])
    await server.start("127.0.0.1", 0)
    port = _port(server)
    try:
        async with Channel("127.0.0.1", port) as channel:
            method = grpclib.client.UnaryUnaryMethod(channel, PATH, RawMessage, RawMessage)
            answers = await asyncio.gather(*(method(RawMessage(b"%d" % i)) for i in range(50)))
        assert [a.data for a in answers] == [b"re:%d" % i for i in range(50)]
    finally:
        server.close()
        await server.wait_closed()


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_turn_leave_together_and_closing_sends_what_is_left() -> None:
    asyncio.run(_one_turn())


async def _one_turn() -> None:
    inner = _Recorder()
    corked = CorkedTransport(inner)  # type: ignore[arg-type]
    corked.write(b"a")
    corked.write(b"")
    corked.write(b"bc")
    assert inner.writes == []  # not before this turn of the loop ends
    await asyncio.sleep(0)
    assert inner.writes == [b"abc"]
    corked.write(b"d")
    corked.close()
    assert inner.writes == [b"abc", b"d"] and inner.closed
    assert corked.is_closing()
    assert corked.get_extra_info("peername") == ("127.0.0.1", 1)
    await asyncio.sleep(0)
    assert inner.writes == [b"abc", b"d"]  # nothing written twice
    corked.write(b"e")  # after the connection closed: dropped, not raised in the loop
    await asyncio.sleep(0)
    assert inner.writes == [b"abc", b"d"]


# -- header blocks coded once (adapters/sim/grpc_hpack.py) ----------------------------------


def _blocks() -> list[list[tuple[str, str]]]:
    """Header lists as a connection sees them: the same answer again and again, a new
    field now and then (added to the table), some evicting others from a small table."""
    answer = [(":status", "200"), ("content-type", "application/grpc+proto")]
    trailers = [("grpc-status", "0")]
    out: list[list[tuple[str, str]]] = []
    for i in range(40):
        out += [answer, trailers]
        if i % 7 == 3:
            out.append([*trailers, ("grpc-message", f"m{i}")])  # new: a literal, indexed
        if i % 11 == 5:
            out.append([("x-big", "v" * 40 + str(i))])  # evicts from a 128-octet table
    return out


def test_cached_hpack_codes_every_block_as_hpack_does() -> None:
    """The same bytes as a plain encoder for every block, and the same headers as a plain
    decoder: through new fields, evictions and table size changes."""
    import hpack

    from adapters.sim.grpc_hpack import caching_decode, caching_encode

    plain, cached = hpack.Encoder(), hpack.Encoder()
    encode = caching_encode(cached)
    plain_dec, cached_dec = hpack.Decoder(), hpack.Decoder()
    decode = caching_decode(cached_dec)
    hits = 0
    for n, headers in enumerate(_blocks()):
        if n in (30, 61):  # the peer's SETTINGS_HEADER_TABLE_SIZE: a size update is due
            plain.header_table_size = cached.header_table_size = 128 if n == 30 else 4096
        want = plain.encode(headers)
        got = encode(iter(headers))  # h2 hands a generator
        assert got == want, n
        assert decode(got, raw=True) == plain_dec.decode(want, raw=True), n
        hits += not got.translate(None, bytes(range(0x80, 0xFF)))
    assert hits > 40  # most blocks were one-byte indexes, served from the cache


def test_a_corked_servers_connection_codes_its_headers_through_the_caches() -> None:
    """Installed on each connection before its first block (so the byte-stream test above
    runs through them: the same bytes as grpclib's own server)."""

    class _Nowhere:
        def write(self, data: bytes) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

        def is_closing(self) -> bool:
            return False

    async def go() -> Any:
        proto = CorkedServer([_Echo()])._protocol_factory()
        proto.connection_made(_Nowhere())  # type: ignore[arg-type]
        return proto.connection._connection

    h2_conn = asyncio.run(go())
    assert h2_conn.encoder.encode.__qualname__.startswith("caching_encode")
    assert h2_conn.decoder.decode.__qualname__.startswith("caching_decode")
