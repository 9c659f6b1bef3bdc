"""HPACK for the simulated Braiins OS+ gRPC server, each header block coded once.

grpclib's server codes every header block with ``hpack`` (through ``h2``), in pure Python:
a request's block decoded, an answer's two blocks (headers, trailers) encoded, on every
call. Profiled while 250 simulated miners took their sleeps and wakes (the simulator
process under cProfile), that coding was about a third of the server's time per call,
and a Braiins OS+ command cost the simulator more CPU than any other family's. The blocks
repeat: once their fields are in the connection's dynamic table, a client's request block
and the server's answer blocks are runs of one-byte indexes (RFC 7541 6.1) that change no
table, so the same block means the same headers until a block that may change a table.

:func:`cache_hpack` keeps, per connection and direction, the blocks that are only one-byte
indexes with what they code; any other block (a literal, an index past 126, a table size
update) may change the table and empties the cache. The bytes on the wire and the headers
read are exactly ``hpack``'s (tests/test_grpc_cork.py compares both with plain ``hpack``
and the byte streams with grpclib's own server).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Bytes that are each a whole indexed field (indexes 0-126; 0xFF starts a longer one).
ONE_BYTE_INDEXED = bytes(range(0x80, 0xFF))
#: Blocks kept per connection and direction: an answer's two and a request's few.
KEEP = 64


def cache_hpack(h2_connection: Any) -> None:
    """Code ``h2_connection``'s header blocks through the caches (its encoder and decoder,
    before any block went through them)."""
    h2_connection.encoder.encode = caching_encode(h2_connection.encoder)
    h2_connection.decoder.decode = caching_decode(h2_connection.decoder)


def caching_encode(encoder: Any) -> Callable[..., bytes]:
    """``encoder.encode``, a block kept while it is one-byte indexes and the table is as
    it was (no size update pending, no block since that may have changed it)."""
    real = encoder.encode
    kept: dict[tuple[Any, ...], bytes] = {}

    def encode(headers: Any, huffman: bool = True) -> bytes:
        if isinstance(headers, dict):  # its own ordering rules: not kept
            kept.clear()
            return bytes(real(headers, huffman))
        items = list(headers)
        key = (huffman, *((type(h), *h) for h in items))
        if not encoder.header_table.resized:
            got = kept.get(key)
            if got is not None:
                return got
        block = bytes(real(items, huffman))
        if block.translate(None, ONE_BYTE_INDEXED):
            kept.clear()  # it may have added to the table: every kept index may differ now
        elif len(kept) < KEEP:
            kept[key] = block
        return block

    return encode


def caching_decode(decoder: Any) -> Callable[..., list[Any]]:
    """``decoder.decode``, the headers of a block of one-byte indexes kept until a block
    that may change the table."""
    real = decoder.decode
    kept: dict[tuple[bytes, bool], list[Any]] = {}

    def decode(data: bytes, raw: bool = False) -> list[Any]:
        block = bytes(data)
        got = kept.get((block, raw))
        if got is not None:
            return list(got)  # a copy: the caller owns what it is given
        headers = list(real(block, raw))
        if block.translate(None, ONE_BYTE_INDEXED):
            kept.clear()
        elif len(kept) < KEEP:
            kept[block, raw] = list(headers)
        return headers

    return decode
