"""One HTTP/1.1 exchange on a connection of its own: the request written as the connection
is made, the answer read until it is complete, and its failures typed.

Split from :mod:`adapters.webdigest` (which sends the requests, with their digest) so that
each module does one job: this one reads what a miner's web server answers. An answer is
complete at its ``Content-Length``, at a chunked body's last chunk, or at the server's
close; a ``gzip`` or ``deflate`` body is inflated. :class:`Unreachable` when no connection
was made or it ended before a complete answer; :class:`Garbled` when something answered
that is not HTTP, or a body that cannot be read as JSON (its first bytes named).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from adapters.neterrors import describe

#: An answer larger than this is not a CGI's JSON.
MAX_REPLY_BYTES = 4 << 20


class WebError(Exception):
    """A request that got no usable HTTP answer."""


class Unreachable(WebError):
    """No connection, or it ended before a complete answer."""


class Garbled(WebError):
    """Something answered that cannot be read: not HTTP, a bad challenge, or a body that
    is not what was expected."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer; header names lower case."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        """The body as JSON; :class:`Garbled` naming its first bytes when it is not."""
        try:
            return json.loads(self.body)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise Garbled(f"not JSON: {snippet(self.body)}") from None


def snippet(data: bytes, limit: int = 60) -> str:
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


class Exchange(asyncio.Protocol):
    """One request written as the connection is made, and its answer collected until it
    is complete (``Content-Length``, the last chunk, or the server's close)."""

    def __init__(
        self, data: bytes, done: asyncio.Future[Reply], on_sending: Callable[[], None] | None
    ) -> None:
        self.data, self.done, self.on_sending = data, done, on_sending
        self.buf = bytearray()
        self.head: tuple[int, str, tuple[tuple[str, str], ...], int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.on_sending is not None:
            self.on_sending()
        # uvloop's transports are not registered as asyncio.WriteTransport: no isinstance
        cast(asyncio.WriteTransport, transport).write(self.data)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buf += data
        if len(self.buf) > MAX_REPLY_BYTES:
            self._fail(Garbled(f"an answer over {MAX_REPLY_BYTES} bytes"))
            return
        try:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) >= 8 and not self.buf.startswith(b"HTTP/"):
                        raise Garbled(f"not an HTTP answer: {snippet(bytes(self.buf))}")
                    return
                self.head = _parse_head(bytes(self.buf[:end]), end + 4)
            reply = _complete(self.head, self.buf, eof=False)
        except Garbled as exc:
            self._fail(exc)
            return
        if reply is not None:
            self.done.set_result(reply)

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def _finish(self, exc: Exception | None = None) -> None:
        if self.done.done():
            return
        if not self.buf:
            why = describe(exc) if exc else "closed without an answer"
            self._fail(Unreachable(f"the connection ended: {why}"))
            return
        try:
            if self.head is None:
                if not self.buf.startswith(b"HTTP/"):
                    raise Garbled(f"not an HTTP answer: {snippet(bytes(self.buf))}")
                raise Unreachable("the connection ended within the answer's head")
            reply = _complete(self.head, self.buf, eof=True)
        except WebError as err:
            self._fail(err)
            return
        if reply is None:
            self._fail(Unreachable("the connection ended before the answer's body was complete"))
        else:
            self.done.set_result(reply)

    def _fail(self, exc: WebError) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _parse_head(raw: bytes, body_at: int) -> tuple[int, str, tuple[tuple[str, str], ...], int]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (len(code) == 3 and code.isdigit()):
        raise Garbled(f"not an HTTP status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise Garbled(f"not an HTTP header: {line[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    return int(code), reason, tuple(headers), body_at


def _complete(
    head: tuple[int, str, tuple[tuple[str, str], ...], int], buf: bytearray, eof: bool
) -> Reply | None:
    """The reply once its body is all here (None: not yet)."""
    status, reason, headers, at = head
    fields = dict(headers)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(memoryview(buf)[at:])
        if body is None:
            return None
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise Garbled(f"Content-Length {fields['content-length']!r}") from None
        if len(buf) - at < length:
            return None
        body = bytes(buf[at : at + length])
    elif eof or status in (204, 304) or 100 <= status < 200:
        body = bytes(buf[at:])
    else:
        return None
    coding = fields.get("content-encoding", "").lower()
    if coding in ("gzip", "deflate"):
        try:
            body = zlib.decompress(
                body, 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
            )
        except zlib.error as exc:
            raise Garbled(f"{coding} body: {exc}") from None
    return Reply(status, reason, headers, body)


def _dechunk(data: memoryview) -> bytes | None:
    """A chunked body decoded; None while its last chunk has not come."""
    out = bytearray()
    pos = 0
    raw = data.tobytes()
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            return None
        size_text = raw[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise Garbled(f"chunk size {snippet(size_text)}") from None
        if size == 0:
            return bytes(out) if raw.find(b"\r\n", end + 2) >= 0 else None
        start = end + 2
        if len(raw) < start + size + 2:
            return None
        out += raw[start : start + size]
        pos = start + size + 2
