"""A lean HTTP/1.1 client with RFC 7616 digest auth, for a miner's web CGI.

Stock Antminer firmware serves its CGI through lighttpd behind digest auth. pyasic sends
those requests with httpx (``pyasic.web.antminer.AntminerModernWebAPI``), and httpx's
per-request machinery (URL parsing, header models, the connection pool, anyio, h11) cost
the controller several milliseconds of CPU per request while the request itself is a few
hundred bytes. This client sends what httpx sends where the server reads it (the request
line, ``Host``, ``Accept``, ``Accept-Encoding``, ``Content-Type``/``Content-Length``, the
JSON body as httpx encodes it, and the ``Authorization`` header field by field in httpx's
``DigestAuth`` order and quoting) over one ``asyncio`` protocol per request.

Differences from httpx, each on purpose:

- ``Connection: close`` instead of ``keep-alive``: a connection serves one request (the
  simulator, like lighttpd configured without keep-alive, closes it anyway); asking for
  the close lets the server close first, so that the ``TIME_WAIT`` of thousands of short
  connections lands on the miner's side, not on the controller's ephemeral ports.
- ``User-Agent: gridsched``.
- No cookie jar: httpx copies a 401's ``Set-Cookie`` into the retried request; lighttpd's
  mod_auth sets none.

The digest follows httpx's ``DigestAuth.auth_flow``: the last challenge is kept and each
request carries it with the next ``nc``; a 401 with a ``Digest`` challenge (a new or a
``stale=true`` one) replaces it, ``nc`` starts again at 1 and the request is sent once more.

The answer is read by :mod:`adapters.http_reply` (one exchange per connection), and its
failures are typed there: :class:`Unreachable` when no connection was made or it ended
before a complete answer; :class:`Garbled` when something answered that is not HTTP, or a
body that cannot be read as JSON (its first bytes named in the message). An adapter turns
them into its own errors with :func:`adapter_error`, and an answer outside 2xx into the
firmware's refusal with :func:`refused`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.aio import one_shot
from adapters.base import AdapterError, BadReply, ControlRejected, DeviceUnreachable
from adapters.http_reply import MAX_REPLY_BYTES, Garbled, Reply, Unreachable, WebError, snippet
from adapters.http_reply import Exchange as _Exchange

# the answer's side, named here as before the split (adapters that catch these import them
# from here)
__all__ = [
    "MAX_REPLY_BYTES",
    "Challenge",
    "DigestAuth",
    "DigestClient",
    "Garbled",
    "Reply",
    "Unreachable",
    "WebError",
    "adapter_error",
    "authorization",
    "parse_challenge",
    "refused",
    "snippet",
]

_HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA": hashlib.sha1,
    "SHA-256": hashlib.sha256,
    "SHA-512": hashlib.sha512,
}


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str
    opaque: str | None
    qop: str | None


def parse_challenge(header: str) -> Challenge:
    """A ``WWW-Authenticate: Digest ...`` value as httpx's ``DigestAuth._parse_challenge``
    reads it (``urllib``'s ``parse_http_list``, quotes stripped)."""
    from urllib.request import parse_http_list

    _scheme, _, rest = header.partition(" ")
    fields: dict[str, str] = {}
    for item in parse_http_list(rest):
        key, eq, value = item.strip().partition("=")
        if eq:
            fields[key] = value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    try:
        return Challenge(
            realm=fields["realm"],
            nonce=fields["nonce"],
            algorithm=fields.get("algorithm", "MD5"),
            opaque=fields.get("opaque"),
            qop=fields.get("qop"),
        )
    except KeyError:
        raise Garbled(f"malformed digest challenge: {header[:120]!r}") from None


def _resolve_qop(qop: str | None) -> str | None:
    if qop is None:
        return None
    qops = re.split(", ?", qop)
    if "auth" in qops:
        return "auth"
    raise Garbled(f"digest qop {qop!r}: only 'auth' is supported")


class DigestAuth:
    """One challenge's digest, made once: HA1 (and the resolved ``qop``) when the challenge
    comes, HA2 once per method and URI; per request only the response's own hash, with a
    fresh ``cnonce`` and the next ``nc``, as httpx's ``DigestAuth`` sends each request."""

    def __init__(self, username: str, password: str, ch: Challenge) -> None:
        algorithm = ch.algorithm.upper()
        hash_fn = _HASHES.get(algorithm.removesuffix("-SESS"))
        if hash_fn is None:
            raise Garbled(f"digest algorithm {ch.algorithm!r} is not supported")
        self.hash_fn = hash_fn
        self.sess = algorithm.endswith("-SESS")
        self.username, self.ch = username, ch
        self.ha1 = self._digest(f"{username}:{ch.realm}:{password}")
        self.qop = _resolve_qop(ch.qop)
        self._ha2: dict[tuple[str, str], str] = {}
        # the header's fixed parts, in httpx's order: before the uri, and after the response
        self._head = f'Digest username="{username}", realm="{ch.realm}", nonce="{ch.nonce}", '
        self._tail = f", algorithm={ch.algorithm}" + (
            f', opaque="{ch.opaque}"' if ch.opaque else ""
        )

    def _digest(self, text: str) -> str:
        return str(self.hash_fn(text.encode()).hexdigest())

    def header(self, method: str, uri: str, nc: int) -> str:
        """The ``Authorization`` value for one request."""
        ha2 = self._ha2.get((method, uri))
        if ha2 is None:
            ha2 = self._ha2[method, uri] = self._digest(f"{method}:{uri}")
        cnonce = secrets.token_hex(8)  # httpx: 16 hex digits of a SHA-1 over random data
        ha1, nonce = self.ha1, self.ch.nonce
        if self.sess:
            ha1 = self._digest(f"{ha1}:{nonce}:{cnonce}")
        out = f'{self._head}uri="{uri}", response="'
        if self.qop is None:
            return out + self._digest(f"{ha1}:{nonce}:{ha2}") + '"' + self._tail
        nc_value = f"{nc:08x}"
        response = self._digest(f"{ha1}:{nonce}:{nc_value}:{cnonce}:auth:{ha2}")
        return f'{out}{response}"{self._tail}, qop=auth, nc={nc_value}, cnonce="{cnonce}"'


def authorization(
    username: str, password: str, method: str, uri: str, ch: Challenge, nc: int
) -> str:
    """The ``Authorization`` value for one request, field by field as httpx's
    ``DigestAuth._build_auth_header`` writes it (RFC 7616; RFC 2069 without qop)."""
    return DigestAuth(username, password, ch).header(method, uri, nc)


def json_bytes(value: Any) -> bytes:
    """A JSON body as httpx encodes it (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class DigestClient:
    """Requests to one host and port, each on a connection of its own, with the last
    digest challenge kept between them."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self._host_header = host if port == 80 else f"{host}:{port}"
        self._auth: DigestAuth | None = None  # the last challenge's, made once
        self._nc = 1
        self._heads: dict[tuple[str, str, bool, tuple[tuple[str, str], ...]], tuple[str, str]] = {}
        self.requests = 0  # every request sent, for tests and counters

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        on_sending: Callable[[], None] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        raw_body: bytes | None = None,
    ) -> Reply:
        """Send one request (a JSON body when ``json_body`` is not None, ``headers`` after
        the usual ones) and its answer; sent once more on a digest challenge. ``on_sending``
        is called as the request's bytes are handed to the socket (from then it may have
        reached the server). ``raw_body``: ``json_body`` already encoded
        (:func:`json_bytes`), by a caller that sends the same body again and again."""
        body = b""
        if json_body is not None:
            body = json_bytes(json_body) if raw_body is None else raw_body
        key = (method, path, json_body is not None, headers)
        parts = self._heads.get(key)
        if parts is None:  # the same few requests go to a miner again and again: made once
            if len(self._heads) >= 64:
                self._heads.clear()
            parts = self._heads[key] = self._head(*key)
        head = parts[0] if json_body is None else f"{parts[0]}{len(body)}{parts[1]}"
        reply = await self._send(head, method, path, body, on_sending)
        if reply.status != 401:
            return reply
        found = next(
            (v for k, v in reply.headers if k == "www-authenticate" and v[:7].lower() == "digest "),
            None,
        )
        if found is None:
            return reply
        self._auth, self._nc = DigestAuth(self.username, self.password, parse_challenge(found)), 1
        return await self._send(head, method, path, body, on_sending)

    def _head(
        self, method: str, path: str, has_body: bool, headers: tuple[tuple[str, str], ...]
    ) -> tuple[str, str]:
        """A request's head without its ``Authorization``: whole, or with a body the parts
        before and after its ``Content-Length`` value."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\nAccept: */*\r\n"
            "Accept-Encoding: gzip, deflate\r\nConnection: close\r\nUser-Agent: gridsched\r\n"
        )
        rest = ""
        if has_body:
            head += "Content-Length: "
            rest = "\r\nContent-Type: application/json\r\n"
        for name, value in headers:
            rest += f"{name}: {value}\r\n"
        return (head + rest, "") if not has_body else (head, rest)

    async def _send(
        self,
        head: str,
        method: str,
        path: str,
        body: bytes,
        on_sending: Callable[[], None] | None,
    ) -> Reply:
        if self._auth is not None:
            head += f"Authorization: {self._auth.header(method, path, self._nc)}\r\n"
            self._nc += 1
        data = head.encode("latin-1") + b"\r\n" + body
        self.requests += 1
        return await one_shot(
            lambda done: _Exchange(data, done, on_sending), self.host, self.port, Unreachable
        )


def adapter_error(device_id: str, what: str, exc: WebError) -> AdapterError:
    """A web exchange's failure as the adapter's error about ``what``: no connection is
    DeviceUnreachable (``contain`` would call it unreadable), an answer that cannot be read
    BadReply."""
    cls = DeviceUnreachable if isinstance(exc, Unreachable) else BadReply
    return cls(device_id, f"{what}: {exc}")


def refused(device_id: str, what: str, reply: Reply, words: str | None = None) -> ControlRejected:
    """An answer outside 2xx as the firmware's refusal of ``what``: its status and reason,
    and ``words`` (by default the body's first bytes)."""
    if words is None:
        words = snippet(reply.body, 120)
    why = f"the firmware answered HTTP {reply.status} {reply.reason}: {words}"
    return ControlRejected(device_id, f"{what}: {why}")
