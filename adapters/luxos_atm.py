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
from collections.abc import Mapping
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
    #: The last change lowered ATM's floor to its ceiling (the profile set was below it).
    lowered_floor: bool = False

    def enable_args(self) -> list[str]:
        """``atmset``'s arguments that turn ATM back on with the last change's band."""
        band = [f"max_profile={self.ceiling}"] if self.ceiling else []
        if self.ceiling and self.lowered_floor:
            band.append(f"min_profile={self.ceiling}")
        return ["enabled=true", *band]


async def set_profile(
    device_id: str,
    rpc: Any,
    name: str,
    atm: AtmState,
    timeout_s: float,
    watts: Mapping[str, float] | None = None,
) -> None:
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
    re-enable is answered, so a lost re-enable is sent at the next change. A profile below
    ATM's floor (``MinProfile``, by ``watts``: profile name -> W) lowers the floor to it too:
    a ceiling under the floor is a band LuxOS is not documented to take (walk 26).

    An ``atm`` reply that cannot be read leaves ATM alone (no ``atmset``), as pyasic's
    ``set_power_limit`` does when its ``atm_enabled()`` answers None: taken as on, the
    change turned ATM *on* on a miner whose ATM may have been off (walk 26), and failed on
    every build that refuses ``atmset``.
    """

    async def send(sid: str) -> Any:
        # atmset as pyasic sends it (the session, then key=value: docs.luxor.tech,
        # "atmset"), not through its ``atmset``, whose ``{}`` for a miner not reached
        # would report the profile set with ATM left off.
        try:
            atm_reply = await ask(rpc, "atm")
        except NoReply:
            raise
        except LuxosError:  # an error or no JSON: ATM unknown, left alone
            atm_reply = None
        known, atm.floor = _atm_read(atm_reply)
        on = atm.on = bool(known) or atm.owed
        if on:
            w = watts or {}
            below = bool(atm.floor) and w.get(name, 0.0) < w.get(atm.floor, 0.0)
            atm.owed, atm.ceiling, atm.lowered_floor = True, name, below
            if below:
                atm.floor = name
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
            await ask(rpc, "atmset", sid, *atm.enable_args())
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
    args = atm.enable_args()
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


def _atm_read(reply: Any) -> tuple[bool | None, str]:
    """An ``atm`` reply's ``Enabled`` and ``MinProfile``; None where it does not say (left
    alone, as pyasic's ``atm_enabled()`` answers None and ``set_power_limit`` does)."""
    try:
        row = reply["ATM"][0]
        enabled, floor = row["Enabled"], row.get("MinProfile", "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, ""
    return (enabled if isinstance(enabled, bool) else None), str(floor or "")
