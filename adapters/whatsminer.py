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
miner's own message is a refusal, in its words.

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
"""

from __future__ import annotations

import time
from typing import Any

from adapters import luxos
from adapters.base import AdapterError, BadReply, ControlRejected, DeviceTimeout, contain

#: pyasic's words for "nothing came back" (rpc/base.py, rpc/btminer.py: a read that timed
#: out, was cancelled, or found the connection closed; the per-miner semaphore's wait).
NO_ANSWER = ("No data was returned", "No data returned", "timeout expired", "Timeout")
#: pyasic's words for an answer it could not decode (rpc/base.py ``_load_api_data``).
UNREADABLE = "Decode Error"
#: What the miner answers a write it carried out (MicroBT's API V2 documentation).
DONE = "API command OK"
#: The miner's words for a token it no longer knows (API v2.0.5 message code 135).
TOKEN_ENDED = "check token error"
#: A reading renews a token this old (s); the miner keeps one 30 minutes (API v2.0.5), and
#: a miner's turn comes once in each such period, so a token is renewed well before then.
TOKEN_RENEW_S = 1200.0


def is_v2(miner: Any) -> bool:
    """Whether pyasic speaks btminer API v2 to this miner (it chose ``BTMinerV2``)."""
    from pyasic.miners.backends.btminer import BTMinerV2

    return isinstance(miner, BTMinerV2)


async def call(
    device_id: str, miner: Any, fn: str, args: tuple[Any, ...], timeout_s: float
) -> None:
    """Do what pyasic's ``fn`` (``stop_mining``, ``resume_mining``, ``set_power_limit``)
    does, through its RPC client, raising a timeout or a refusal in the miner's words."""
    from pyasic.errors import APIError

    rpc = miner.rpc
    if fn not in ("stop_mining", "resume_mining", "set_power_limit"):
        raise ValueError(f"no API v2 write for pyasic's {fn!r}")
    what = f"adjust_power_limit {int(args[0])}" if fn == "set_power_limit" else _WRITES[fn]
    try:
        try:
            reply = await contain(
                device_id, what, _raw(device_id, _write(rpc, fn, args), APIError), timeout_s
            )
        except _Refused as exc:
            if TOKEN_ENDED not in exc.reason.lower():
                raise
            rpc.token = None  # the miner did nothing under it: a new token, the write again
            reply = await contain(
                device_id, what, _raw(device_id, _write(rpc, fn, args), APIError), timeout_s
            )
    except _Refused as exc:
        words = exc.reason
        if any(s.lower() in words.lower() for s in NO_ANSWER):
            raise DeviceTimeout(device_id, f"{what}: no answer ({words})") from None
        if words.startswith(UNREADABLE):
            why = f"{what}: an answer that cannot be read: {words[:160]}"
            raise BadReply(device_id, why) from None
        raise ControlRejected(device_id, f"{what}: the miner refused: {words}") from None
    msg = reply.get("Msg") if isinstance(reply, dict) else None
    if fn != "set_power_limit" and msg != DONE:  # pyasic asks the same of these two
        raise ControlRejected(device_id, f"{what}: the miner answered {str(reply)[:120]}")


_WRITES = {"stop_mining": "power_off", "resume_mining": "power_on"}


def _write(rpc: Any, fn: str, args: tuple[Any, ...]) -> Any:
    if fn == "stop_mining":
        return rpc.power_off(respbefore=True)
    if fn == "resume_mining":
        return rpc.power_on()
    return rpc.adjust_power_limit(int(args[0]))


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
