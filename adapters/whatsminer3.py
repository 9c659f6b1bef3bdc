"""Whatsminer on API v3 (firmware after 2024-11) through pyasic, with its answers checked.

pyasic 0.79 drives such a miner as ``BTMinerV3`` (``miners/backends/btminer.py``,
``rpc/btminer.py``: port 4433, length-prefixed JSON, writes signed with a token made from
the miner's salt), but three of its answers cannot be taken as they come:

- ``set_power_limit`` returns True whatever the miner answers: a refused token, "no
  permission", a value out of range, or nothing at all (``_send_bytes`` answers ``{}`` when
  it cannot connect). Here ``set.miner.power_limit`` goes through pyasic's own
  ``rpc.send_command`` (which signs it) and the answer's ``code`` decides: 0 accepted
  (with ``msg`` "ok", as pyasic's sleep and wake require; any other msg is unreadable), -1
  a refused password, -4 no permission (MicroBT's API v3 "Overview"). Accepted is not
  done: the read-back of ``power-limit`` confirms it.
- ``stop_mining`` / ``resume_mining`` (``set.miner.service`` stop / start) return False for
  every refusal alike; here the code says which, so a wrong password is named.
- ``get_fw_ver()`` answers None: the base class calls ``_get_fw_ver``, which ``BTMinerV3``
  does not define (it has ``_get_firmware_version``). The version is read from
  ``get.device.info`` (``msg.system.fwversion``).

Not fixed here: pyasic reads no mining state on v3 (a reading's state follows its power
and hashrate), and the factory picks API v2 for a v3 miner whose port 4028 is closed
(``get_miner_version_whatsminer`` gives no version), which then cannot be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

from adapters.base import AdapterError, BadReply, ControlRejected, DeviceUnreachable, contain

PASSWORD_REFUSED = (
    "the miner refused the write token (API v3 code -1: a wrong password; pyasic sends "
    "'super' unless the adapter's password is set)"
)
NO_PERMISSION = (
    "no permission (API v3 code -4): write access is off in WhatsMinerTool, or the "
    "password is still the factory default"
)
#: pyasic's control calls as the API v3 writes they stand for (command, parameter).
WRITES = {
    "stop_mining": ("set.miner.service", "stop"),
    "resume_mining": ("set.miner.service", "start"),
}


def is_v3(miner: Any) -> bool:
    """Whether pyasic speaks API v3 to this miner (it chose ``BTMinerV3``)."""
    from pyasic.miners.backends.btminer import BTMinerV3

    return isinstance(miner, BTMinerV3)


def check(device_id: str, what: str, reply: Any) -> None:
    """Raise unless an API v3 answer says the write was accepted: ``code`` 0 and ``msg``
    ``"ok"``, as pyasic's ``BTMinerV3.stop_mining`` takes it; code 0 with any other msg is
    an answer that contradicts itself, unreadable (the read-back decides)."""
    if not isinstance(reply, dict) or not reply:
        raise DeviceUnreachable(device_id, f"{what}: no answer on the API v3 port (4433)")
    code = reply.get("code")
    if code == 0:
        if reply.get("msg") != "ok":
            shown = str(reply)[:120]
            raise BadReply(device_id, f"{what}: code 0 without msg 'ok' (pyasic's test): {shown}")
        return
    if code == -1:
        raise ControlRejected(device_id, f"{what}: {PASSWORD_REFUSED}")
    if code == -4:
        raise ControlRejected(device_id, f"{what}: {NO_PERMISSION}")
    if isinstance(code, int):
        raise ControlRejected(
            device_id, f"{what}: the miner answered code {code} ({reply.get('msg')!r})"
        )
    raise BadReply(device_id, f"{what}: an answer without a code: {str(reply)[:120]}")


async def call(
    device_id: str, miner: Any, fn: str, args: tuple[Any, ...], timeout_s: float
) -> None:
    """Do what pyasic's ``fn`` (``stop_mining``, ``resume_mining``, ``set_power_limit``)
    does, sending the API v3 write itself and checking its answer."""
    param: int | str
    if fn == "set_power_limit":
        cmd, param = "set.miner.power_limit", int(args[0])
    elif fn in WRITES:
        cmd, param = WRITES[fn]
    else:
        raise ValueError(f"no API v3 write for pyasic's {fn!r}; known: {', '.join(WRITES)}")
    what = f"{cmd} {param}"
    reply = await contain(device_id, what, miner.rpc.send_command(cmd, parameters=param), timeout_s)
    check(device_id, what, reply)


async def first_salt(device_id: str, miner: Any, timeout_s: float) -> None:
    """Get the write salt now (at connect), unless pyasic holds it: pyasic asks for it
    inside the first write and keeps it, so a curtail's first write to each miner was two
    round trips. Best-effort: without it, the first write gets it as before."""
    if is_v3(miner) and miner.rpc.salt is None:
        with contextlib.suppress(AdapterError):
            await contain(device_id, "get.device.info salt", miner.rpc.get_salt(), timeout_s)


async def _fw_version(device_id: str, miner: Any) -> str | None:
    reply = await miner.rpc.get_device_info()
    try:
        version = reply["msg"]["system"]["fwversion"]
    except (LookupError, TypeError):
        version = reply  # not there: the reply in no usable shape
    if version is None or (
        isinstance(version, str | int | float) and not isinstance(version, bool)
    ):
        return None if version is None else str(version)
    shown = str(reply)[:120]
    raise BadReply(
        device_id,
        "get.device.info: the reply has no msg.system.fwversion "
        f"(the firmware version, as text): {shown}",
    )


def fw_version(device_id: str, miner: Any) -> Awaitable[str | None]:
    """The firmware version, from ``get.device.info`` where pyasic's ``get_fw_ver`` has none
    (a reply without it there: BadReply)."""
    return _fw_version(device_id, miner) if is_v3(miner) else miner.get_fw_ver()
