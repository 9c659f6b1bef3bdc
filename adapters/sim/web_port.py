"""A simulated miner's web port on the wire: one HTTP/1.1 request read (method, target,
headers, ``Content-Length`` bytes of body), one answer written, then closed, as the
simulated web servers (stock Antminer CGI, VNish, Braiins OS+) serve them; the faults they
follow are :class:`adapters.sim.server.MinerServer`'s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["HTTP_REASONS", "parse_http_head", "read_http_request", "write_http_reply"]

#: Reason phrases of the statuses the simulated web servers answer.
HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
}


async def read_http_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes]:
    """One HTTP/1.1 request from a miner's web port: method, target, headers (names lower
    case) and body (``Content-Length`` bytes), read within 10 s."""
    async with asyncio.timeout(10.0):
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, headers, length = parse_http_head(head)
        body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def parse_http_head(head: bytes) -> tuple[str, str, dict[str, str], int]:
    """An HTTP/1.1 request head: method, target, headers (names lower case) and its
    ``Content-Length``; ValueError when it is no request line or the length no number."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k:
            headers[k.strip().lower()] = v.strip()
    return method, target, headers, int(headers.get("content-length", "0") or 0)


def http_reply(
    status: int,
    payload: Any,
    garbled: bytes | None = None,
    extra: tuple[str, ...] | list[str] | None = None,
) -> bytes:
    """One answer's bytes, closing the connection: ``payload`` bytes as HTML, anything else
    as JSON; ``garbled`` (a MALFORMED fault on a 200) replaces the body with those bytes;
    ``extra`` header lines after the others."""
    if isinstance(payload, bytes):
        data, ctype = payload, "text/html"
    else:
        data, ctype = json.dumps(payload).encode(), "application/json"
    if garbled is not None and status == 200:
        data = garbled
    lines = [
        f"HTTP/1.1 {status} {HTTP_REASONS.get(status, 'OK')}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(extra or ()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


async def write_http_reply(
    writer: asyncio.StreamWriter,
    status: int,
    payload: Any,
    garbled: bytes | None = None,
    extra: tuple[str, ...] | list[str] = (),
) -> None:
    """Answer one request and close (:func:`http_reply`'s bytes)."""
    writer.write(http_reply(status, payload, garbled, extra))
    await writer.drain()
