"""LuxOS's API on TCP 4028, one request per connection, lean: pyasic's framing and checks.

What goes over the wire is what pyasic sends and reads (pyasic 0.x, ``rpc/base.py``
``send_command`` / ``_send_bytes`` / ``_load_api_data``, ``misc.validate_command_output``),
and what Luxor documents (docs.luxor.tech, LuxOS API: cgminer-style JSON on 4028): the
client writes ``{"command": ..., "parameter": "a,b"}`` (no ``parameter`` without one), the
miner answers one JSON object, NUL-terminated, and closes the connection. A reply ends at
its NUL or when the miner closes.

Why not pyasic's transport: per request it opens asyncio streams (a StreamReader, a
StreamWriter, a reading task and a timeout), formats several debug log lines whether
logging is on or not, and runs nine string repairs and a regular expression over every
reply before parsing it: about a third of the controller's CPU per LuxOS reading (issue
21's profile). Here a request is one connection with a small Protocol and one future; a
reply that is JSON as sent is parsed as sent, and only one that is not (or that holds
``"inf"`` / ``"nan"``, which pyasic reads as 0) goes through pyasic's own repairs, so that
every reply reads exactly as pyasic would read it.

Errors, as pyasic's contract had them and the adapter maps them (``adapters.base.contain``):
no connection raises ``ConnectionError`` / ``OSError`` (unreachable); a reply that is not
JSON, or none at all (a connection closed unanswered, as a rebooting miner does),
:class:`Unparsable` (:class:`NoReply` for none); an error ``STATUS`` (in any part of a
multicommand) :class:`Refused`. Both are :class:`LuxosError`, where pyasic raised its
``APIError`` for both.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

#: Longest reply read (a LuxOS ``stats`` of a three-board miner is some kilobytes).
MAX_REPLY_BYTES = 1 << 22


class LuxosError(Exception):
    """The miner answered, and the answer is no success (pyasic's ``APIError``)."""


class Unparsable(LuxosError):
    """The answer is not JSON, even after pyasic's repairs, or there was none."""


class NoReply(Unparsable):
    """None at all: the miner closed the connection unanswered (as a rebooting one does)."""


class Refused(LuxosError):
    """The answer's ``STATUS`` is an error (``E``/``F``); ``msg`` is the miner's ``Msg``."""

    def __init__(self, command: str, msg: str) -> None:
        super().__init__(f"{command}: {msg}")
        self.msg = msg


def request(command: str, *params: str) -> bytes:
    """A request as pyasic encodes it (``json.dumps`` of the dict, parameters joined by ``,``;
    no ``parameter`` key when they join to nothing)."""
    cmd: dict[str, str] = {"command": command}
    joined = ",".join(params)
    if joined:
        cmd["parameter"] = joined
    return json.dumps(cmd).encode()


def decode(data: bytes) -> Any:
    """A reply's JSON, as pyasic's ``_load_api_data`` reads it: the trailing NUL dropped; a
    reply that does not parse as sent is repaired pyasic's way first. Raises Unparsable,
    in words (no reply at all, or not JSON with pyasic's reason)."""
    if not data.strip(b"\x00"):
        raise NoReply("no reply (the miner closed the connection unanswered)")
    if data.endswith(b"\x00"):
        data = data[:-1]
    if b'"inf"' not in data and b'"nan"' not in data:
        try:
            return json.loads(data)
        except ValueError:  # also UnicodeDecodeError: pyasic decodes with "replace"
            pass
    from pyasic.errors import APIError
    from pyasic.rpc.base import BaseMinerRPCAPI

    try:
        return BaseMinerRPCAPI._load_api_data(data)
    except APIError as exc:
        raise Unparsable(f"the reply is not JSON ({str(exc)[:200]})") from None


def check(command: str, reply: Any) -> None:
    """pyasic's ``validate_command_output``: an error STATUS, of the reply or of any part of
    a multicommand, raises Refused. A reply that is no object raises Unparsable (where
    pyasic's ``AttributeError`` was); a shape pyasic cannot walk raises what walking it
    raises (TypeError, KeyError... in pyasic's code), as pyasic's does: the adapter reads
    both as unreadable, on a command too."""
    if not isinstance(reply, dict):
        raise Unparsable(f"{command}: the reply is JSON but no object ({str(reply)[:80]})")
    from pyasic.misc import validate_command_output

    ok, msg = validate_command_output(reply)
    if not ok:
        raise Refused(command, str(msg))


async def ask(host: str, port: int, command: str, *params: str) -> Any:
    """One command: its reply decoded and checked (see the module's errors)."""
    reply = decode(await exchange(host, port, request(command, *params)))
    check(command, reply)
    return reply


async def exchange(host: str, port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a new connection and return the raw reply (up to its NUL).

    A connection refused or not made raises OSError (ConnectionRefusedError...);
    cancellation (the caller's timeout) closes the connection.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Exchange(payload, done), host, port)
    try:
        return await done
    finally:
        transport.close()


class _Exchange(asyncio.Protocol):
    """One request written on connect; the reply gathered until its NUL or the peer's close.
    A reset while reading ends the reply empty, as pyasic's read does (it logs the error
    and parses what it has: nothing). A Protocol rather than streams or the loop's socket
    calls: on uvloop (the daemon's loop) the connection, write and reads stay in C."""

    __slots__ = ("_buf", "_done", "_payload", "_transport")

    def __init__(self, payload: bytes, done: asyncio.Future[bytes]) -> None:
        self._payload = payload
        self._done = done
        self._buf = bytearray()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        # uvloop's transports are not registered as asyncio.Transport: no isinstance
        cast(asyncio.WriteTransport, transport).write(self._payload)

    def data_received(self, data: bytes) -> None:
        end = data.find(b"\x00")
        if end >= 0:
            self._buf += data[: end + 1]
            self._finish(bytes(self._buf))
        elif len(self._buf) + len(data) > MAX_REPLY_BYTES:
            self._buf += data
            self._finish(bytes(self._buf))
        else:
            self._buf += data

    def eof_received(self) -> bool:
        self._finish(bytes(self._buf))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(b"" if exc is not None else bytes(self._buf))

    def _finish(self, reply: bytes) -> None:
        if not self._done.done():
            self._done.set_result(reply)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
