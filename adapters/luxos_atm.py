"""A LuxOS profile change, and ATM (Advanced Thermal Management) around it.

``set_profile``: pyasic's ``set_power_limit`` first reads the whole configuration (a
six-command multicommand) to find the presets, which the adapter already knows; here a
profile change is two round trips (ATM's state, read as pyasic reads it, then
``profileset``; four with ATM on, which pyasic also turns off around it). ATM is read at
each change, not once at connect: an operator, or Luxor's own tools, may turn it on at any
time. ``restore_atm``: the re-enable a change owes when its answer was lost.
What ATM does on the miner, and its sources: :mod:`adapters.sim.luxos_atm`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from adapters.base import BadReply, ControlRejected, contain
from adapters.luxos import _in_session, _refused_or_unreadable, _said_done, ask
from adapters.luxos_wire import LuxosError, NoReply, Refused


@dataclass
class AtmState:
    """What the adapter knows of a miner's ATM at its last profile change (kept per miner)."""

    #: ATM was on (or owed a re-enable) at the last change: turned off around it, then on.
    on: bool = False
    #: ATM was turned off by a change whose re-enable was not answered: the miner is owed
    #: one, whatever ``atm`` reads (it reads off because of us), at the next change.
    owed: bool = False
    #: ATM's floor then (``MinProfile``; "" unbounded: the lowest profile).
    floor: str = ""
    #: The ceiling the last change gave ATM (the profile it set): an owed re-enable sets it.
    ceiling: str = ""


async def set_profile(device_id: str, rpc: Any, name: str, atm: AtmState, timeout_s: float) -> None:
    """``profileset name``; raises BadReply when the reply names no profile, ControlRejected
    when it names another (and as :func:`curtail` for the rest).

    ATM is read first, at each change, as pyasic's ``set_power_limit`` does: an operator
    (or Luxor's tools) may turn it on at any time, and LuxOS's ``profileset`` is not to be
    sent beside it (pyasic and Luxor's own helper turn it off around it; the simulator
    refuses it, :mod:`adapters.sim.luxos_atm`). With ATM on, or a re-enable owed
    (``atm.owed``), the change is ``atmset enabled=false``, ``profileset``, and ``atmset
    enabled=true,max_profile=<name>``: ATM keeps stepping the profile down on heat, never
    back up past the power the scheduler set (the operator's ``max_profile`` is replaced by
    each target). ``atm.owed`` is set before ATM is turned off and cleared only when its
    re-enable is answered, so a lost re-enable is sent at the next change.
    """

    async def send(sid: str) -> Any:
        # atmset as pyasic sends it (the session, then key=value: docs.luxor.tech,
        # "atmset"), not through its ``atmset``, whose ``{}`` for a miner not reached
        # would report the profile set with ATM left off.
        try:
            atm_reply = await ask(rpc, "atm")
        except NoReply:
            raise
        except LuxosError:  # an error or no JSON: ATM unknown, read as on
            atm_reply = None
        on, atm.floor = _atm_read(atm_reply)
        on = atm.on = on or atm.owed
        if on:
            atm.owed, atm.ceiling = True, name
            await ask(rpc, "atmset", sid, "enabled=false")
        try:
            reply = await ask(rpc, "profileset", sid, name)
        except Refused:
            if on:  # nothing changed: ATM back on as it was (or owed still)
                with contextlib.suppress(ConnectionError, OSError, LuxosError):
                    await ask(rpc, "atmset", sid, "enabled=true")
                    atm.owed = False
            raise
        if on:
            await ask(rpc, "atmset", sid, "enabled=true", f"max_profile={name}")
            atm.owed = False
        return reply

    what = f"profileset {name}"

    async def go() -> Any:
        with _refused_or_unreadable(device_id, what):
            return await _in_session(device_id, what, rpc, send)

    reply = await contain(device_id, what, go(), timeout_s)
    try:
        got = reply["PROFILE"][0]["Profile"]
    except (KeyError, IndexError, TypeError):
        got = None
    if not isinstance(got, str):
        shown = str(reply)[:120]
        raise BadReply(
            device_id, f"{what}: the reply has no PROFILE[0].Profile (the profile set): {shown}"
        )
    if got != name:
        raise ControlRejected(device_id, f"{what}: the firmware set profile {got!r}")


async def restore_atm(device_id: str, rpc: Any, atm: AtmState, timeout_s: float) -> None:
    """The re-enable a profile change owes (``atm.owed``: it turned ATM off and lost the
    answer to turning it back on), sent on its own, with the ceiling that change set.
    Raises as :func:`curtail`; ``atm.owed`` is cleared only when LuxOS says it is done."""
    args = ["enabled=true"] + ([f"max_profile={atm.ceiling}"] if atm.ceiling else [])
    what = "atmset " + ",".join(args)

    async def go() -> Any:
        with _refused_or_unreadable(device_id, what):
            return await _in_session(
                device_id, what, rpc, lambda sid: ask(rpc, "atmset", sid, *args)
            )

    reply = await contain(device_id, what, go(), timeout_s)
    if not _said_done(reply, "ATM"):
        raise BadReply(device_id, f"{what}: the reply is not LuxOS's success: {str(reply)[:120]}")
    atm.owed = False


def _atm_read(reply: Any) -> tuple[bool, str]:
    """An ``atm`` reply's ``Enabled`` and ``MinProfile``; one that does not say reads as on
    (turned off around the change and back on: what pyasic would do had it read on)."""
    try:
        row = reply["ATM"][0]
        enabled, floor = row["Enabled"], row.get("MinProfile", "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return True, ""
    return (enabled if isinstance(enabled, bool) else True), str(floor or "")
