"""LuxOS calls through pyasic's RPC that the adapter makes its own way.

``set_profile``: pyasic's ``set_power_limit`` first reads the whole configuration (a
six-command multicommand) to find the presets, which the adapter already knows; here a
profile change is one round trip (three with ATM on, which pyasic also turns off around
it). ``renew_session``: LuxOS ends a session unused for about a minute
(docs.luxor.tech, "Sessions"), and pyasic only notices when a command fails.
"""

from __future__ import annotations

import contextlib
from typing import Any

from adapters.base import ControlRejected, contain


async def set_profile(device_id: str, rpc: Any, name: str, atm: bool, timeout_s: float) -> None:
    """``profileset name``; raises ControlRejected unless the reply names the profile."""

    async def go() -> Any:
        if atm:
            await rpc.atmset(enabled=False)
        reply = await rpc.profileset(name)
        if atm:
            await rpc.atmset(enabled=True)
        return reply

    reply = await contain(device_id, f"profileset {name}", go(), timeout_s)
    try:
        ok = reply["PROFILE"][0]["Profile"] == name
    except (KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise ControlRejected(device_id, f"profileset {name}: the firmware did not confirm")


async def renew_session(device_id: str, rpc: Any, timeout_s: float) -> None:
    """End a session that sat idle and open a fresh one, so that the next command finds
    one with its whole minute ahead (an expired one would fail the command once)."""

    async def go() -> None:
        if rpc.session_token is not None:
            # Uses the session, ending it if it is still ours; one already expired answers
            # an error, and there is nothing to end.
            with contextlib.suppress(Exception):
                await rpc.logoff()
        rpc.session_token = None
        await rpc.auth()

    await contain(device_id, "session renewal", go(), timeout_s)
