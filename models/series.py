"""A market series: a regular step function over UTC time, its gaps remembered.

A ``Series`` is a regular step function: ``values[k]`` holds over
``[start_s + k*interval_s, start_s + (k+1)*interval_s)`` (UTC epoch seconds). Rows missing
from the file and NaN values stay NaN and are remembered; asking for a window that touches
one raises ``DataError`` naming the timestamps (and file lines). Nothing is filled silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.errors import DataError

FILL_METHODS = ("refuse", "hold", "linear")


def iso(ts_s: float) -> str:
    return datetime.fromtimestamp(float(ts_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Series:
    """A regular time series of interval averages (UTC inside)."""

    label: str
    unit: str
    start_s: int
    interval_s: int
    values: np.ndarray
    #: file line of each value (0 where the row was missing), for error messages
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    synthetic: bool = False

    @property
    def end_s(self) -> int:
        return self.start_s + self.interval_s * len(self.values)

    def times_s(self) -> np.ndarray:
        return self.start_s + self.interval_s * np.arange(len(self.values), dtype=np.int64)

    def covers(self, start_s: float, end_s: float) -> bool:
        return self.start_s <= start_s and end_s <= self.end_s

    def _bad_report(self, bad: np.ndarray) -> str:
        times = self.times_s()[bad]
        parts = []
        for k, t in zip(np.flatnonzero(bad)[:5], times[:5], strict=False):
            line = int(self.lines[k]) if len(self.lines) else 0
            parts.append(f"{iso(t)} ({'NaN at line ' + str(line) if line else 'row missing'})")
        more = f" and {int(bad.sum()) - 5} more" if bad.sum() > 5 else ""
        return ", ".join(parts) + more

    def mean_over(self, starts_s: np.ndarray, ends_s: np.ndarray) -> np.ndarray:
        """Time-weighted mean over each ``[starts_s[i], ends_s[i])``."""
        starts = np.asarray(starts_s, dtype=np.float64)
        ends = np.asarray(ends_s, dtype=np.float64)
        if len(starts) == 0:
            return np.zeros(0)
        lo, hi = float(starts.min()), float(ends.max())
        if not self.covers(lo, hi):
            raise DataError(
                self.label,
                f"covers {iso(self.start_s)} to {iso(self.end_s)} but "
                f"{iso(lo)} to {iso(hi)} was asked for; choose a period inside it (plan: "
                "--start and --horizon; backtest: --from and --to, which also reads a day "
                "before --from and the horizon after --to)",
            )
        k0 = int((lo - self.start_s) // self.interval_s)
        k1 = int(-(-(hi - self.start_s) // self.interval_s))
        window = self.values[k0:k1]
        bad = ~np.isfinite(window)
        if bad.any():
            mask = np.zeros(len(self.values), dtype=bool)
            mask[k0:k1] = bad
            raise DataError(self.label, f"missing values in the window: {self._bad_report(mask)}")
        edges = self.start_s + self.interval_s * np.arange(k0, k1 + 1, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(window * self.interval_s)])
        integral = np.interp(ends, edges, cum) - np.interp(starts, edges, cum)
        return integral / (ends - starts)

    def value_at(self, t_s: float) -> float:
        return float(self.mean_over(np.array([t_s]), np.array([t_s + 1.0]))[0])

    def scaled(self, factor: float, label: str | None = None, unit: str | None = None) -> Series:
        return Series(
            label or self.label,
            unit or self.unit,
            self.start_s,
            self.interval_s,
            self.values * factor,
            self.lines,
            self.synthetic,
        )

    @property
    def currency(self) -> str:
        """The currency the values are in, from the unit (``USD/MWh`` -> ``USD``)."""
        return self.unit.split("/", 1)[0]

    def filled(self, method: str, start_s: float, end_s: float) -> tuple[Series, int]:
        """Missing values inside ``[start_s, end_s)`` bridged on purpose: ``hold`` (the last
        value before the gap) or ``linear`` (between the values either side). ``refuse``
        changes nothing. Returns the series and how many intervals were filled; a gap at
        the very start of the series (nothing before it) cannot be bridged and stays."""
        if method not in FILL_METHODS:
            raise ValueError(f"fill {method!r}: valid are {', '.join(FILL_METHODS)}")
        t = self.times_s()
        inside = (t + self.interval_s > start_s) & (t < end_s)
        bad = ~np.isfinite(self.values) & inside
        if method == "refuse" or not bad.any():
            return self, 0
        good = np.flatnonzero(np.isfinite(self.values))
        if len(good) == 0:
            return self, 0
        idx = np.flatnonzero(bad)
        if method == "hold":
            src = np.searchsorted(good, idx, side="right") - 1
            ok = src >= 0
            new = self.values.copy()
            new[idx[ok]] = self.values[good[src[ok]]]
            filled = int(ok.sum())
        else:
            ok = (idx > good[0]) & (idx < good[-1])
            new = self.values.copy()
            new[idx[ok]] = np.interp(idx[ok], good, self.values[good])
            filled = int(ok.sum())
        label = f"{self.label} ({filled} intervals filled: {method})"
        return Series(
            label, self.unit, self.start_s, self.interval_s, new, self.lines, self.synthetic
        ), filled

    def gaps(self) -> list[str]:
        """Human list of missing or NaN intervals (empty when complete)."""
        bad = ~np.isfinite(self.values)
        return [] if not bad.any() else [self._bad_report(bad)]


def regularise(
    label: str,
    unit: str,
    times: Any,
    values: np.ndarray,
    interval_s: int | None = None,
) -> Series:
    """Put parsed (UTC epoch seconds, value) rows on a regular grid.

    Duplicated timestamps and timestamps off the grid raise; missing rows become NaN.
    Row ``i`` of the input is file line ``i + 2`` (header on line 1).
    """
    t = np.asarray(times, dtype=np.int64)
    if len(t) < 2:
        raise DataError(label, f"needs at least 2 rows, found {len(t)}")
    order = np.argsort(t, kind="stable")
    t_sorted = t[order]
    diffs = np.diff(t_sorted)
    dup = np.flatnonzero(diffs == 0)
    if len(dup):
        lines = ", ".join(f"{iso(t_sorted[d])} (line {order[d + 1] + 2})" for d in dup[:5])
        raise DataError(label, f"duplicate timestamps: {lines}")
    if interval_s is None:
        vals, counts = np.unique(diffs, return_counts=True)
        interval_s = int(vals[np.argmax(counts)])
    start = int(t_sorted[0])
    rel = t_sorted - start
    off = np.flatnonzero(rel % interval_s)
    if len(off):
        rows = ", ".join(f"{iso(t_sorted[o])} (line {order[o] + 2})" for o in off[:5])
        raise DataError(label, f"timestamps off the {interval_s}s grid: {rows}")
    idx = rel // interval_s
    n = int(idx[-1]) + 1
    out = np.full(n, np.nan)
    out[idx] = np.asarray(values, dtype=np.float64)[order]
    line_of = np.zeros(n, dtype=np.int64)
    line_of[idx] = order + 2
    return Series(label, unit, start, int(interval_s), out, line_of)
