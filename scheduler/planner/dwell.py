"""Minimum off-time across the horizon's start: units put to sleep before the plan.

The LP's min-off rule (``constraints.define_wear``) counts the stops inside the horizon.
A unit the daemon put to sleep before it (a curtail's shed, the last plan's dispatch)
would otherwise count as free to start at once: a cancel woke every miner 95 s after a
curtail had slept it, on a site with ``min_off_s = 300`` (the mixed-fleet walk, session
25). ``held_off`` says, per class and step, how many units must stay asleep: those
stopped less than ``min_off_s`` before the step starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from models.devices import DeviceClass
from scheduler.planner.timegrid import TimeGrid

if TYPE_CHECKING:
    from scheduler.planner.inputs import SiteState

__all__ = ["held_off"]


def held_off(
    devices: Sequence[DeviceClass], grid: TimeGrid, state: SiteState
) -> tuple[np.ndarray | None, list[str]]:
    """(C, T) units held asleep per step, or None when none is; and a note per class."""
    since = state.asleep_since or {}
    out = np.zeros((len(devices), grid.n))
    notes = []
    starts = grid.starts_s.astype(np.float64)
    if state.now_s is not None:  # the first step, begun before now, is decided from now
        starts = np.maximum(starts, state.now_s)
    for c, dc in enumerate(devices):
        times = since.get(dc.name) or []
        if dc.min_off_s <= 0 or not times:
            continue
        free_at = np.asarray(times, dtype=np.float64) + dc.min_off_s
        held = (free_at[None, :] > starts[:, None]).sum(axis=1)
        out[c] = np.minimum(held, dc.units)
        if out[c, 0] > 0:
            until = datetime.fromtimestamp(float(free_at.max()), UTC).strftime("%H:%M UTC")
            notes.append(
                f"{dc.name}: {int(out[c, 0])} units asleep less than min_off_s "
                f"({dc.min_off_s:g} s) stay asleep, the last until {until}"
            )
    return (out if out.any() else None), notes
