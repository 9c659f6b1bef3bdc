"""Whatsminer on API v2 (btminer on 4028) through pyasic, with its answers told apart.

pyasic 0.79's ``BTMinerV2`` (``miners/backends/btminer.py``) answers ``stop_mining``,
``resume_mining`` and ``set_power_limit`` with a bare False for every failure: the miner's
refusal (``{"STATUS": "E", "Msg": "invalid token"}`` for a wrong password, a value out of
range), and equally nothing coming back at all (``BTMinerRPCAPI.send_privileged_command``
turns a read that timed out or was cancelled into ``APIError("No data was returned from
the API.")``, its token request can fail the same way). Read as a refusal, a miner that is
merely slow was marked rejected and left alone; under load 1,000 mixed miners logged 253
such "refusals" that a retry then carried out. Here the same privileged commands go
through pyasic's own RPC client (``power_off(respbefore=True)``, ``power_on()``,
``adjust_power_limit(watts)``: the token and AES encryption are pyasic's), and its error
decides: no answer is a timeout and an undecodable one unreadable, both retried; the
miner's own message is a refusal, in its words. A write refused because the miner's write
access is off ("can't access write cmd", or API v2.0.5's code 45 "permission denied":
MicroBT ships writes off until the default password is changed and the API enabled in
WhatsMinerTool) is a refusal that says so.

**Tokens.** A write is signed with a token from ``get_token``: a round trip, then two
md5-crypts to derive the AES key and the sign. MicroBT's API v2.0.5 ("Protocol") keeps a
token for 30 minutes and gives one IP up to 32. pyasic keeps its token 30 minutes by its
own clock (``BTMinerRPCAPI.get_token``), and gets the first one inside the first write, so
a curtail's first command to each miner was two round trips. Here the token is got at
connect (:func:`first_token`) and renewed by a reading ahead of its end
(:func:`renew_if_due`, on a schedule of each miner's own, as LuxOS sessions are), so no
command waits for one. A write under a token the miner has ended (code 135, "check token
error": the miner rebooted, or its 30 minutes ran out before pyasic's) did nothing, so it is
sent once more under a new token, as the MiningOS worker's client does
(github.com/tetherto/miningos-wrk-miner-whatsminer, ``protocols/wm-api-v2.js``); pyasic would
have kept the ended token and had every write refused until its own 30 minutes were up.

**The write's wire.** pyasic's ``send_privileged_command`` derives the AES key and builds a
cipher for every write and for its answer, dumps and encrypts the same command again, and
formats its own name (the miner's address) for debug lines nobody logs. Here a write is the
same bytes (:func:`packet`: pyasic's ``create_privileged_cmd``, ``{"enc": 1, "data":
base64(AES-256-ECB(json + NUL padding))}``) made once per token and command, under one
cipher per token (ECB keeps no state between blocks, so one encryptor and one decryptor
serve every write), sent on one connection of its own read until the miner closes it, as
pyasic's ``_send_bytes`` does; the answer is decrypted, and judged by pyasic's
``validate_command_output``. A connection refused is now unreachable (pyasic answered it
with an empty dict, a refusal for power on/off and an acceptance for a power limit).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import time
from typing import Any, cast

from adapters import luxos
from adapters.aio import one_shot
from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    contain,
)

#: pyasic's words for "nothing came back" (rpc/base.py, rpc/btminer.py: a read that timed
#: out, was cancelled, or found the connection closed; the per-miner semaphore's wait).
NO_ANSWER = ("No data was returned", "No data returned", "timeout expired", "Timeout")
#: pyasic's words for an answer it could not decode (rpc/base.py ``_load_api_data``).
UNREADABLE = "Decode Error"
#: What the miner answers a write it carried out (MicroBT's API V2 documentation).
DONE = "API command OK"
#: The miner's words for a token it no longer knows (API v2.0.5 message code 135).
TOKEN_ENDED = "check token error"
#: The miner's words for a write refused because its write access is off: the firmware's
#: message (pyasic's ``send_privileged_command`` special-cases it) and API v2.0.5's code 45.
WRITES_OFF = ("can't access write cmd", "permission denied")
#: What such a refusal asks of the operator (MicroBT's API v2.0.5, "Summary").
WRITES_OFF_HINT = (
    "write access is off on the miner: change the default password and enable the API"
    " in WhatsMinerTool (MicroBT API v2.0.5)"
)
#: A reading renews a token this old (s); the miner keeps one 30 minutes (API v2.0.5), and
#: a miner's turn comes once in each such period, so a token is renewed well before then.
TOKEN_RENEW_S = 1200.0


_V2: list[type] = []  # pyasic's BTMinerV2, imported on first use


def is_v2(miner: Any) -> bool:
    """Whether pyasic speaks btminer API v2 to this miner (it chose ``BTMinerV2``)."""
    if not _V2:
        from pyasic.miners.backends.btminer import BTMinerV2

        _V2.append(BTMinerV2)
    return isinstance(miner, _V2[0])


async def call(
    device_id: str, miner: Any, fn: str, args: tuple[Any, ...], timeout_s: float
) -> None:
    """Do what pyasic's ``fn`` (``stop_mining``, ``resume_mining``, ``set_power_limit``)
    does, through its RPC client, raising a timeout or a refusal in the miner's words."""
    rpc = miner.rpc
    if fn not in ("stop_mining", "resume_mining", "set_power_limit"):
        raise ValueError(f"no API v2 write for pyasic's {fn!r}")
    what = f"adjust_power_limit {int(args[0])}" if fn == "set_power_limit" else _WRITES[fn]
    cmd, params = _command(fn, args)
    try:
        try:
            reply = await contain(device_id, what, _write(device_id, rpc, cmd, params), timeout_s)
        except _Refused as exc:
            if TOKEN_ENDED not in exc.reason.lower():
                raise
            rpc.token = None  # the miner did nothing under it: a new token, the write again
            reply = await contain(device_id, what, _write(device_id, rpc, cmd, params), timeout_s)
    except _Refused as exc:
        words = exc.reason
        if any(s.lower() in words.lower() for s in NO_ANSWER):
            raise DeviceTimeout(device_id, f"{what}: no answer ({words})") from None
        if words.startswith(UNREADABLE):
            why = f"{what}: an answer that cannot be read: {words[:160]}"
            raise BadReply(device_id, why) from None
        if any(s in words.lower() for s in WRITES_OFF):
            words = f"{words} ({WRITES_OFF_HINT})"
        raise ControlRejected(device_id, f"{what}: the miner refused: {words}") from None
    msg = reply.get("Msg") if isinstance(reply, dict) else None
    if fn == "set_power_limit" or msg == DONE:  # pyasic asks DONE of the other two
        return
    if not isinstance(msg, str):  # no answer of btminer's: garbled, not a refusal
        shown = str(reply)[:120]
        raise BadReply(device_id, f"{what}: the reply has no Msg (expected {DONE!r}): {shown}")
    raise ControlRejected(device_id, f"{what}: the miner answered {str(reply)[:120]}")


_WRITES = {"stop_mining": "power_off", "resume_mining": "power_on"}


def _command(fn: str, args: tuple[Any, ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The privileged command pyasic sends for ``fn`` (``power_off(respbefore=True)``,
    ``power_on()``, ``adjust_power_limit(watts)``): its name and parameters, in order."""
    if fn == "stop_mining":
        return "power_off", (("respbefore", "true"),)
    if fn == "resume_mining":
        return "power_on", ()
    return "adjust_power_limit", (("power_limit", str(int(args[0]))),)


#: pyasic keeps a token this long by its own clock (``BTMinerRPCAPI.get_token``).
PYASIC_TOKEN_S = datetime.timedelta(minutes=30)


async def _write(
    device_id: str, rpc: Any, cmd: str, params: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    """One privileged write as pyasic's ``send_privileged_command`` makes it, under the
    token pyasic holds (got by pyasic's ``get_token`` when it has none or it is 30
    minutes old), its answer decrypted; the miner's refusal raised as :class:`_Refused`."""
    from pyasic.errors import APIError
    from pyasic.misc import validate_command_output
    from pyasic.rpc.base import BaseMinerRPCAPI

    token = rpc.token
    if token is None or token.timestamp <= datetime.datetime.now() - PYASIC_TOKEN_S:
        token = await _raw(device_id, rpc.get_token(), APIError)
    wire = _wire(rpc, token)
    data = await _exchange(device_id, str(rpc.ip), int(rpc.port), wire.packet(cmd, params))
    if not data:
        raise _Refused(device_id, "No data was returned from the API.")
    try:
        reply = json.loads(data.rstrip(b"\0"))
    except ValueError:  # pyasic's repairs of btminer's broken JSON, or its Decode Error
        reply = await _raw(device_id, _load(BaseMinerRPCAPI, data), APIError)
    if isinstance(reply, dict) and "enc" in reply:
        reply = wire.open(reply["enc"], reply)
    if not isinstance(reply, dict):
        raise BadReply(device_id, f"{cmd}: an answer that is not an object: {str(reply)[:120]}")
    ok, why = validate_command_output(reply)
    if not ok:
        raise _Refused(device_id, str(why))
    return reply


async def _load(api: Any, data: bytes) -> Any:
    return api._load_api_data(data)


class Wire:
    """One token's AES-256-ECB, the key derived once (sha256 of the md5-crypted password,
    as pyasic derives it per write), and the write packets made under it."""

    def __init__(self, token: Any) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self.token = token
        key = hashlib.sha256(str(token.host_passwd_md5).encode()).digest()
        cipher = Cipher(algorithms.AES(key), modes.ECB())
        self._enc, self._dec = cipher.encryptor(), cipher.decryptor()
        self._packets: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}

    def packet(self, cmd: str, params: tuple[tuple[str, str], ...] = ()) -> bytes:
        """pyasic's ``create_privileged_cmd`` bytes for ``{"cmd": cmd, **params}``."""
        key = (cmd, params)
        got = self._packets.get(key)
        if got is None:
            text = json.dumps({"cmd": cmd, **dict(params), "token": self.token.host_sign})
            text += "\0" * (-len(text) % 16)  # pyasic's _add_to_16 (the JSON is ASCII)
            data = base64.b64encode(self._enc.update(text.encode())).decode()
            got = json.dumps({"enc": 1, "data": data}).encode()
            if len(self._packets) < 256:  # a few commands and power limits per miner
                self._packets[key] = got
        return got

    def open(self, enc: Any, raw: dict[str, Any]) -> Any:
        """An encrypted answer's JSON; ``raw`` as it came when it does not decrypt (pyasic
        logs that and goes on with the answer as it came)."""
        try:
            blob = base64.decodebytes(str(enc).encode())
            if len(blob) % 16:  # an ECB context would keep the rest for the next answer
                return raw
            return json.loads(self._dec.update(blob).rstrip(b"\0").decode("utf8"))
        except ValueError:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
            return raw


def _wire(rpc: Any, token: Any) -> Wire:
    wire: Wire | None = getattr(rpc, "_gridsched_wire", None)
    if wire is None or wire.token is not token:
        wire = Wire(token)
        rpc._gridsched_wire = wire
    return wire


async def _exchange(device_id: str, host: str, port: int, data: bytes) -> bytes:
    """``data`` written on a connection of its own, and what comes back until the miner
    closes it (b"" when it was reset first: pyasic reads nothing then either)."""
    return await one_shot(
        lambda done: _OneShot(data, done),
        host,
        port,
        lambda why: DeviceUnreachable(device_id, why),
    )


class _OneShot(asyncio.Protocol):
    def __init__(self, data: bytes, done: asyncio.Future[bytes]) -> None:
        self.data, self.done = data, done
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.WriteTransport: no isinstance
        cast(asyncio.WriteTransport, transport).write(self.data)

    def data_received(self, data: bytes) -> None:
        self.buf += data

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(bytes(self.buf))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(b"" if exc is not None else bytes(self.buf))


async def first_token(device_id: str, miner: Any, timeout_s: float) -> None:
    """Get the miner's write token now (at connect), unless pyasic holds one: the first
    command is then one round trip. Best-effort: without one, the first write gets it."""
    if is_v2(miner) and miner.rpc.token is None:
        await _renew(device_id, miner.rpc, timeout_s)


async def renew_if_due(device_id: str, miner: Any, timeout_s: float) -> None:
    """On a reading: a token at least TOKEN_RENEW_S old is replaced, at the miner's own
    turn (:func:`adapters.luxos.renewal_due`), so that a fleet's renewals are spread over
    its sweeps and no command meets an ended token. Best-effort."""
    if not is_v2(miner):
        return
    token = miner.rpc.token
    got_at = -float("inf") if token is None else token.timestamp.timestamp()
    if luxos.renewal_due(device_id, got_at, time.time(), TOKEN_RENEW_S):
        await _renew(device_id, miner.rpc, timeout_s)


async def _renew(device_id: str, rpc: Any, timeout_s: float) -> None:
    """A new token in place of the old; the old one is kept when none comes (the miner
    keeps it good until its 30 minutes are up, and an earlier one is not ended by a newer)."""
    old, rpc.token = rpc.token, None
    try:
        await contain(device_id, "get_token", rpc.get_token(), timeout_s)
    except AdapterError:
        pass
    finally:
        if rpc.token is None:
            rpc.token = old


class _Refused(AdapterError):
    """pyasic's APIError, carried past :func:`adapters.base.contain` unchanged."""


async def _raw(device_id: str, aw: Any, api_error: type[Exception]) -> Any:
    try:
        return await aw
    except api_error as exc:
        raise _Refused(device_id, str(exc)) from None
