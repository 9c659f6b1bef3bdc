"""The plan's time axis: fixed steps, or fine steps near-term and coarser ones later.

A multi-resolution spec reads ``"5min:2h,15min:12h,1h"``: 5-minute steps for the first
2 hours, 15-minute steps until hour 12, hourly steps to the end of the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from models.durations import format_duration, parse_duration_s


@dataclass(frozen=True)
class TimeGrid:
    """Step starts and ends in UTC epoch seconds."""

    starts_s: np.ndarray
    ends_s: np.ndarray

    @property
    def n(self) -> int:
        return len(self.starts_s)

    @property
    def dur_s(self) -> np.ndarray:
        return self.ends_s - self.starts_s

    @property
    def dt_h(self) -> np.ndarray:
        return self.dur_s / 3600.0

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(int(self.starts_s[0]), UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(int(self.ends_s[-1]), UTC)

    def describe(self) -> str:
        durs = self.dur_s
        parts = []
        i = 0
        while i < self.n:
            j = i
            while j + 1 < self.n and durs[j + 1] == durs[i]:
                j += 1
            parts.append(f"{j - i + 1} x {format_duration(durs[i])}")
            i = j + 1
        return ", ".join(parts)


def uniform_grid(start_s: int, horizon_s: int, step_s: int) -> TimeGrid:
    if step_s <= 0 or horizon_s <= 0:
        raise ValueError("step and horizon must be positive")
    if horizon_s % step_s:
        raise ValueError(
            f"horizon {format_duration(horizon_s)} is not a whole number of "
            f"{format_duration(step_s)} steps"
        )
    if start_s % step_s:
        raise ValueError(f"start must be aligned to the step ({format_duration(step_s)})")
    n = horizon_s // step_s
    starts = start_s + step_s * np.arange(n, dtype=np.int64)
    return TimeGrid(starts, starts + step_s)


def parse_resolution(spec: str) -> list[tuple[int, int | None]]:
    """``"5min:2h,15min:12h,1h"`` -> [(300, 7200), (900, 43200), (3600, None)]."""
    out: list[tuple[int, int | None]] = []
    for i, part in enumerate(p.strip() for p in spec.split(",")):
        step_txt, _, until_txt = part.partition(":")
        step = parse_duration_s(step_txt)
        until = parse_duration_s(until_txt) if until_txt else None
        if until is None and i != len(spec.split(",")) - 1:
            raise ValueError(f"resolution part {part!r}: only the last part may omit ':until'")
        out.append((step, until))
    return out


def first_step_s(spec: str) -> int:
    """The first (shortest-horizon) step of a resolution spec: a start must align to it."""
    return parse_resolution(spec)[0][0]


def multires_grid(start_s: int, horizon_s: int, spec: str) -> TimeGrid:
    """Steps of growing length; each boundary is aligned to its own step length."""
    parts = parse_resolution(spec)
    if start_s % parts[0][0]:
        raise ValueError(
            f"start must be aligned to the first step ({format_duration(parts[0][0])})"
        )
    end = start_s + horizon_s
    starts: list[int] = []
    t = start_s
    for step, until in parts:
        stop = end if until is None else min(end, start_s + until)
        while t < stop:
            nxt = min(t + step - (t % step), end)  # realign to the coarser step
            starts.append(t)
            t = nxt
    if t < end:
        raise ValueError(
            f"resolution {spec!r} ends before the horizon; leave the last part without ':until'"
        )
    s = np.array(starts, dtype=np.int64)
    e = np.append(s[1:], end).astype(np.int64)
    return TimeGrid(s, e)
