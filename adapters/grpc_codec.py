"""HTTP/2 frames, HPACK for our requests and the gRPC status of an answer, for
:mod:`adapters.grpc_wire` (RFC 9113, RFC 7541, gRPC over HTTP/2 as grpclib speaks it)."""

from __future__ import annotations

import struct

from grpclib import GRPCError, Status
from grpclib.metadata import USER_AGENT, decode_grpc_message

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
CANCEL, PROTOCOL_ERROR = 0x8, 0x1
#: Our receive window, per stream and for the connection (RFC 9113's default is 65,535).
WINDOW = 1 << 20
DEFAULT_WINDOW = 65_535
HEAD = struct.Struct(">BHBBI")  # a frame header: length (24 bits), type, flags, stream
SETTING = struct.Struct(">HI")
MESSAGE = struct.Struct(">BI")  # a gRPC message's prefix: compressed flag, length

#: grpclib's mapping of an HTTP status other than 200 to a gRPC status (client.py).
HTTP_TO_GRPC = {
    "400": Status.INTERNAL,
    "401": Status.UNAUTHENTICATED,
    "403": Status.PERMISSION_DENIED,
    "404": Status.UNIMPLEMENTED,
    "502": Status.UNAVAILABLE,
    "503": Status.UNAVAILABLE,
    "504": Status.UNAVAILABLE,
}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, stream) + payload


#: Frame types by number (RFC 9113 6), to name a frame that cannot be read.
FRAME_NAMES: tuple[str, ...] = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS")
FRAME_NAMES += ("PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION")


def header_frames(stream: int, block: bytes, max_frame: int) -> bytes:
    """A header block as HEADERS (END_HEADERS), or HEADERS and CONTINUATIONs when it is
    larger than the peer's MAX_FRAME_SIZE."""
    if len(block) <= max_frame:
        return frame(HEADERS, END_HEADERS, stream, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, 0, stream, parts[0])]
    out += [frame(CONTINUATION, 0, stream, p) for p in parts[1:-1]]
    return b"".join(out) + frame(CONTINUATION, END_HEADERS, stream, parts[-1])


def data_frames(stream: int, body: bytes, room: int, max_frame: int) -> bytes:
    """DATA frames for the first ``room`` bytes of ``body``, none over ``max_frame``;
    END_STREAM on the body's last byte."""
    out, i = [], 0
    while i < room:
        chunk = body[i : i + min(room - i, max_frame)]
        i += len(chunk)
        out.append(frame(DATA, END_STREAM if i == len(body) else 0, stream, chunk))
    return b"".join(out)


def _int(value: int, bits: int, first: int = 0) -> bytes:
    """An HPACK integer with a ``bits``-bit prefix (RFC 7541 5.1)."""
    top = (1 << bits) - 1
    if value < top:
        return bytes((first | value,))
    out, value = bytearray((first | top,)), value - top
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("ascii")
    return _int(len(raw), 7) + raw  # no Huffman coding


#: Bytes that are each a whole indexed field (RFC 7541 6.1, an index below 127): a block
#: of nothing else changes no table, and decodes the same while the table is unchanged.
ONE_BYTE_INDEXED = bytes(range(0x80, 0xFF))


class Encoder:
    """HPACK for our request headers (RFC 7541), one per connection: each field is added
    to the dynamic table once (a literal with incremental indexing, 6.2.1) and named by
    its index after that, as ``hpack``'s encoder under grpclib does, so the server decodes
    one byte per field. That includes ``authorization``: grpclib turns off ``h2``'s header
    normalisation, which would send it never-indexed (``utilities._secure_headers``), and
    indexes the token like the rest (tests/test_grpc_wire.py compares the two). The table
    follows the server's SETTINGS_HEADER_TABLE_SIZE (4.2): a smaller one is announced at
    the next block."""

    def __init__(self) -> None:
        self.table: list[tuple[str, str]] = []  # newest first: index 62, 63, ...
        self.size = 0
        self.max_size = 4096
        self.generation = 0  # bumped by every change of the table
        self._update = b""

    def limit(self, size: int) -> None:
        if size < self.max_size:
            self.max_size = size
            self._update = _int(size, 5, 0x20)  # a dynamic table size update
            self._evict()
            self.generation += 1

    def _evict(self) -> None:
        while self.size > self.max_size:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + 32

    def field(self, name: str, value: str) -> bytes:
        try:
            return _int(62 + self.table.index((name, value)), 7, 0x80)
        except ValueError:
            pass
        size = len(name) + len(value) + 32
        if size > self.max_size:  # would empty the table and not fit: not indexed
            return b"\x00" + _string(name) + _string(value)
        self.table.insert(0, (name, value))
        self.size += size
        self._evict()
        self.generation += 1
        return b"\x40" + _string(name) + _string(value)

    def block(self, path: str, authority: str, metadata: tuple[tuple[str, str], ...]) -> bytes:
        """grpclib's request headers for a unary call, in its order (``Stream.send_request``);
        ``:method: POST`` and ``:scheme: http`` are the static table's entries 3 and 6."""
        fields = [self._update, b"\x83\x86", self.field(":path", path)]
        self._update = b""
        fields.append(self.field(":authority", authority))
        fields.append(self.field("te", "trailers"))
        fields.append(self.field("content-type", "application/grpc"))
        fields.append(self.field("user-agent", USER_AGENT))
        fields += [self.field(k.lower(), v) for k, v in metadata]
        return b"".join(fields)


def answer(
    first: list[tuple[str, str]] | None, trailers: list[tuple[str, str]] | None, data: bytes
) -> bytes | None:
    """A finished call's message from its headers, trailers (None for a trailers-only
    answer) and DATA, or its status as grpclib raises it (``Stream.recv_initial_metadata``,
    ``_maybe_raise``)."""
    headers = dict(first or ())
    status = headers.get(":status")
    if status != "200":
        raise GRPCError(
            HTTP_TO_GRPC.get(str(status), Status.UNKNOWN), f"Received :status = {status!r}"
        )
    kind = headers.get("content-type")
    if kind is None:
        raise GRPCError(Status.UNKNOWN, "Missing content-type header")
    base, _, sub = kind.partition("+")
    if base != "application/grpc" or sub not in ("", "proto"):
        raise GRPCError(Status.UNKNOWN, f"Invalid content-type: {kind!r}")
    status_map = dict(trailers) if trailers is not None else headers
    code = status_map.get("grpc-status")
    if code is None:
        raise GRPCError(Status.UNKNOWN, "Missing grpc-status header")
    try:
        got = Status(int(code))
    except ValueError:
        raise GRPCError(Status.UNKNOWN, f"Invalid grpc-status: {code!r}") from None
    if got is not Status.OK:
        words = status_map.get("grpc-message")
        raise GRPCError(got, None if words is None else decode_grpc_message(words))
    if not data:
        return None
    if len(data) < 5:
        raise GRPCError(Status.INTERNAL, f"a message cut short: {len(data)} bytes")
    compressed, size = MESSAGE.unpack_from(data)
    if compressed:  # we asked for no compression (no grpc-accept-encoding)
        raise GRPCError(Status.INTERNAL, "a compressed message, none was asked for")
    if len(data) < 5 + size:
        raise GRPCError(Status.INTERNAL, f"a message of {size} bytes cut at {len(data) - 5}")
    return bytes(data[5 : 5 + size])
