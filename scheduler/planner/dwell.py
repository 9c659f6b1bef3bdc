"""Minimum off- and on-time across the horizon's start: units put to sleep or woken
before the plan.

The LP's min-off and min-on rules (``constraints.define_wear``) count the stops and starts
inside the horizon. A unit the daemon put to sleep before it (a curtail's shed, the last
plan's dispatch) would otherwise count as free to start at once: a cancel woke every miner
95 s after a curtail had slept it, on a site with ``min_off_s = 300`` (the mixed-fleet
walk, session 25). ``held_off`` says, per class and step, how many units must stay asleep:
those stopped less than ``min_off_s`` before the step starts. ``held_on`` likewise says
how many must stay awake: those woken less than ``min_on_s`` before it. The first is a
bound (sleeping harms nothing); the second is a soft floor, priced below the DR cap and the
committed inference (``constraints.define_held_on``): a grid cap stops a unit early.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from models.devices import DeviceClass
from scheduler.planner.timegrid import TimeGrid

if TYPE_CHECKING:
    from scheduler.planner.inputs import PlanInputs, SiteState
    from scheduler.planner.plan import ClassPlan

__all__ = ["held_off", "held_on", "stopped_early"]


def held_off(
    devices: Sequence[DeviceClass], grid: TimeGrid, state: SiteState
) -> tuple[np.ndarray | None, list[str]]:
    """(C, T) units held asleep per step, or None when none is; and a note per class."""
    return _held(devices, grid, state, asleep=True)


def held_on(
    devices: Sequence[DeviceClass], grid: TimeGrid, state: SiteState
) -> tuple[np.ndarray | None, list[str]]:
    """(C, T) units held awake per step, or None when none is; and a note per class."""
    return _held(devices, grid, state, asleep=False)


def _held(
    devices: Sequence[DeviceClass], grid: TimeGrid, state: SiteState, asleep: bool
) -> tuple[np.ndarray | None, list[str]]:
    since = (state.asleep_since if asleep else state.awake_since) or {}
    out = np.zeros((len(devices), grid.n))
    notes = []
    starts = grid.starts_s.astype(np.float64)
    if state.now_s is not None:  # the first step, begun before now, is decided from now
        starts = np.maximum(starts, state.now_s)
    for c, dc in enumerate(devices):
        times = since.get(dc.name) or []
        dwell, key = (dc.min_off_s, "min_off_s") if asleep else (dc.min_on_s, "min_on_s")
        if dwell <= 0 or not times:
            continue
        free_at = np.asarray(times, dtype=np.float64) + dwell
        held = (free_at[None, :] > starts[:, None]).sum(axis=1)
        out[c] = np.minimum(held, dc.units)
        if out[c, 0] > 0:
            until = datetime.fromtimestamp(float(free_at.max()), UTC).strftime("%H:%M UTC")
            state_word = "asleep" if asleep else "awake"
            notes.append(
                f"{dc.name}: {int(out[c, 0])} units {state_word} less than {key} "
                f"({dwell:g} s) stay {state_word}, the last until {until}"
                + ("" if asleep else " (a grid cap may stop them sooner)")
            )
    return (out if out.any() else None), notes


def stopped_early(inp: PlanInputs, classes: Sequence[ClassPlan]) -> list[str]:
    """A note per class whose units held awake (``held_on``) the plan stops before their
    min-on has passed: a grid cap outranked it (``constraints.define_held_on``)."""
    if inp.held_on is None:
        return []
    notes = []
    for c, cp in enumerate(classes):
        on = np.asarray(cp.units_by_mode).sum(axis=0)
        short = np.flatnonzero(inp.held_on[c] - on > 0.5)
        if len(short):
            n = round(float((inp.held_on[c] - on)[short].max()))
            when = datetime.fromtimestamp(float(inp.grid.starts_s[short[0]]), UTC)
            notes.append(
                f"{cp.name}: {n} units stopped before their min_on_s ({inp.min_on_s[c]:g} s) "
                f"has passed, from {when:%H:%M} UTC: a grid cap, or the committed inference, "
                "outranks it (penalties.min_on_usd_per_mwh)"
            )
    return notes
