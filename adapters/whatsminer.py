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
"""

from __future__ import annotations

from typing import Any

from adapters.base import AdapterError, BadReply, ControlRejected, DeviceTimeout, contain

#: pyasic's words for "nothing came back" (rpc/base.py, rpc/btminer.py: a read that timed
#: out, was cancelled, or found the connection closed; the per-miner semaphore's wait).
NO_ANSWER = ("No data was returned", "No data returned", "timeout expired", "Timeout")
#: pyasic's words for an answer it could not decode (rpc/base.py ``_load_api_data``).
UNREADABLE = "Decode Error"
#: What the miner answers a write it carried out (MicroBT's API V2 documentation).
DONE = "API command OK"


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
    if fn == "stop_mining":
        what, aw = "power_off", rpc.power_off(respbefore=True)
    elif fn == "resume_mining":
        what, aw = "power_on", rpc.power_on()
    elif fn == "set_power_limit":
        what, aw = f"adjust_power_limit {int(args[0])}", rpc.adjust_power_limit(int(args[0]))
    else:
        raise ValueError(f"no API v2 write for pyasic's {fn!r}")
    try:
        reply = await contain(device_id, what, _raw(device_id, aw, APIError), timeout_s)
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


class _Refused(AdapterError):
    """pyasic's APIError, carried past :func:`adapters.base.contain` unchanged."""


async def _raw(device_id: str, aw: Any, api_error: type[Exception]) -> Any:
    try:
        return await aw
    except api_error as exc:
        raise _Refused(device_id, str(exc)) from None
