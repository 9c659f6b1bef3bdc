"""When each device last went to sleep or woke, for its class's ``min_off_s`` and
``min_on_s`` across plans and across restarts of the daemon.

The plan holds units asleep (awake) until their min-off (min-on) has passed, counted from
when the daemon put them to sleep (woke them), or saw them do so behind its back
(``SiteState.asleep_since`` / ``awake_since``, ``scheduler.planner.dwell``). Kept in memory
only, a daemon restarted a minute after a curtail (an upgrade during a DR event) woke every
miner at the next cheap price, within its min-off. So each change is also written to the
state file (its ``device_dwell`` table, not chained: a lost row costs one dwell, as before)
with the poll that follows it and at close, and read back at start. A stored time says
nothing of a device that, meanwhile, changed otherwise: only the entry that agrees with the
mode the device is in counts (``DeviceModes.asleep_since`` / ``awake_since``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Dwell"]

_ASLEEP, _AWAKE = "asleep", "awake"


class Dwell:
    """Device -> when it went to sleep (``slept_at``) or woke (``woke_at``), while it sleeps
    or runs; the changes not yet stored (``changes``)."""

    def __init__(self) -> None:
        self.slept_at: dict[str, float] = {}
        self.woke_at: dict[str, float] = {}
        self._changed: dict[str, dict[str, Any] | None] = {}
        self._short: dict[str, int] = {}  # class -> units stopped within min-on, unsaid

    def slept(self, device_id: str, at: float, min_on_s: float = 0.0, group: str = "") -> None:
        """Asleep from ``at``; one woken less than ``min_on_s`` before (of class ``group``)
        is counted as cut short (:meth:`cut_short`)."""
        woke = self.woke_at.pop(device_id, None)
        if woke is not None and at - woke < min_on_s:
            self._short[group] = self._short.get(group, 0) + 1
        self.slept_at[device_id] = at
        self._changed[device_id] = {"state": _ASLEEP, "at": at}

    def woke(self, device_id: str, at: float) -> None:
        self.slept_at.pop(device_id, None)
        self.woke_at[device_id] = at
        self._changed[device_id] = {"state": _AWAKE, "at": at}

    def never_slept(self, device_id: str) -> None:
        """A sleep accepted and not followed: the device never stopped (its row goes)."""
        if self.slept_at.pop(device_id, None) is not None:
            self._changed[device_id] = None

    def last_change(self, ids: list[str]) -> dict[str, float]:
        """Device -> when it last woke or was put to sleep, where known."""
        woke, slept = self.woke_at, self.slept_at
        return {i: t for i in ids if (t := woke.get(i, slept.get(i))) is not None}

    def cut_short(self) -> str:
        """The units stopped within their min-on since the last call, in words ("" none)."""
        out = ", ".join(f"{n} of {group}" for group, n in sorted(self._short.items()))
        self._short.clear()
        return out

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """The changes since the last call, as the state file's documents."""
        out = dict(self._changed)
        self._changed.clear()
        return out

    def restore(self, docs: dict[str, dict[str, Any]], known: set[str]) -> int:
        """Take the stored times of the devices in ``known`` (a row of another site's
        devices, or one not understood, is left out); how many were taken."""
        taken = 0
        for device_id, doc in docs.items():
            at = doc.get("at") if isinstance(doc, dict) else None
            state = doc.get("state") if isinstance(doc, dict) else None
            if device_id not in known or not isinstance(at, (int, float)) or not math.isfinite(at):
                continue
            if state == _ASLEEP:
                self.slept_at[device_id] = float(at)
            elif state == _AWAKE:
                self.woke_at[device_id] = float(at)
            else:
                continue
            taken += 1
        return taken
