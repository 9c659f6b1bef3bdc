"""A rolling plan's horizon on coarser steps further out (``--plan-resolution``).

Each decision plans 48 hours to apply 15 minutes. The far hours shape the decision only
through what they make worth saving up or waiting for (billed peaks, batch deadlines, a
dear evening), and their prices are forecasts, mostly the day-ahead market's hourly ones;
at hourly steps they cost a quarter of the columns. ``"15min:8h,1h"`` plans the first 8
hours at the decision step and the rest in hours: 72 steps instead of 192.

The coarse steps are counted from the decision, not from the clock, so every decision's
LP has the same matrix and re-solves warm from the last one's basis. A coarse step's
inputs are those of ``scheduler.planner.seed.coarse_inputs``: prices, hashprice and
demand averaged over it, caps at their tightest, ramp limits scaled to its length, a
billed-peak or batch window holding any of its fine steps holding it.

This changes decisions: it is an option, never the default (docs/backtest.md).
"""

from __future__ import annotations

import numpy as np

from models.durations import format_duration
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.seed import coarse_inputs
from scheduler.planner.timegrid import parse_resolution


class PlanResolution:
    """Groups a window's decision steps into plan steps; one grouping per window length,
    kept (a window is shorter only at the end of the data)."""

    def __init__(self, spec: str, step_s: int) -> None:
        try:
            parts = parse_resolution(spec)
        except ValueError as exc:
            raise ValueError(f"--plan-resolution {spec!r}: {exc}") from None
        if parts[0][0] != step_s:
            raise ValueError(
                f"--plan-resolution {spec!r}: the first part's step must be the decision "
                f"step ({format_duration(step_s)}), the step a decision applies"
            )
        previous_s = 0
        for i, (part_s, until_s) in enumerate(parts):
            if part_s % step_s:
                raise ValueError(
                    f"--plan-resolution {spec!r}: step {format_duration(part_s)} is not a "
                    f"whole number of decision steps ({format_duration(step_s)})"
                )
            if until_s is not None and (until_s <= previous_s or until_s % part_s):
                raise ValueError(
                    f"--plan-resolution {spec!r}: part {i + 1} must end after the one "
                    f"before it, on a whole number of its own steps"
                )
            previous_s = until_s or previous_s
        self.spec = spec
        self._parts = parts
        self._step_s = step_s
        self._groups: dict[int, np.ndarray] = {}

    def groups(self, steps: int) -> np.ndarray:
        """For each of a window's ``steps`` decision steps, the plan step it falls in."""
        if steps not in self._groups:
            group = np.empty(steps, dtype=np.int64)
            t, g = 0, 0
            for part_s, until_s in self._parts:
                stop = steps if until_s is None else min(steps, until_s // self._step_s)
                size = part_s // self._step_s
                n = max(stop - t, 0)
                group[t : t + n] = g + np.arange(n) // size
                g += -(-n // size)
                t += n
            self._groups[steps] = group
        return self._groups[steps]

    def coarsen(self, window: PlanInputs) -> PlanInputs:
        """The window planned on this resolution's steps (its first step is unchanged)."""
        group = self.groups(window.T)
        if int(group[-1]) + 1 == window.T:
            return window  # a window no longer than the fine part: nothing to merge
        return coarse_inputs(window, group)

    def describe(self, steps: int) -> str:
        group = self.groups(steps)
        return f"plan steps {self.spec} ({int(group[-1]) + 1} steps for {steps})"
