"""The intervals a VEN report covers: the windows of an event's intervals as the daemon made
them (every pass its ``duration`` loops them over), and a descriptor's report stream.

``repeat`` other than 1 asks for a stream (User Guide 7.5, "Report on a subset of
intervals at a regular period", "Looping intervals", the report-only event with "a
continuous stream of reports based on default event intervalPeriod. repeat = -1"): report
``n`` covers ``numIntervals`` intervals from ``startInterval + n * frequency``, counted on
over the passes, or over a report-only event's implied intervals; ``-1`` for as long as
the event goes on, planned ``STREAM_AHEAD_S`` ahead and again by the reporter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.service.ven_report_only import event_s, implied_spans

__all__ = [
    "STREAM_AHEAD_S",
    "STREAM_LOOKBACK_S",
    "Stream",
    "Window",
    "places",
    "repeated",
    "windows",
]

#: a report stream (``repeat`` -1) is planned this far ahead, then extended by the reporter
STREAM_AHEAD_S = 86400
#: a stream's reports ended longer ago than this (the samples kept) are not planned again
STREAM_LOOKBACK_S = 2 * 86400


@dataclass(frozen=True)
class Window:
    interval_id: int
    start: float  # unix s
    end: float


def _spans(
    event_id: str, simple_events: list[dict[str, Any]]
) -> dict[tuple[int, int], tuple[float, float]]:
    """(pass, interval id) -> (start, end) from the interpreted events (ids
    ``oadr:<event>:<interval>...``, a repetition of the intervals that the event's
    ``duration`` loops ending ``@<pass>``, as far as the daemon expanded them)."""
    spans: dict[tuple[int, int], tuple[float, float]] = {}
    prefix = f"oadr:{event_id}:"
    for ev in simple_events:
        eid = str(ev.get("id", ""))
        if not eid.startswith(prefix) or "start" not in ev or "end" not in ev:
            continue
        head, at, rep = eid[len(prefix) :].rpartition("@")
        if not at or not rep.isdigit():  # no repetition (a private payload type's "@")
            head, rep = eid[len(prefix) :], "0"
        for sep in ":/[":
            head = head.split(sep)[0]
        try:
            key = (int(rep or 0), int(head))
            start = datetime.fromisoformat(str(ev["start"])).timestamp()
            end = datetime.fromisoformat(str(ev["end"])).timestamp()
        except ValueError:
            continue
        lo, hi = spans.get(key, (start, end))
        spans[key] = (min(lo, start), max(hi, end))
    return spans


def windows(event_id: str, simple_events: list[dict[str, Any]]) -> list[Window]:
    """The windows of the intervals' first pass, in time order."""
    spans = [(i, lo, hi) for (r, i), (lo, hi) in _spans(event_id, simple_events).items() if r == 0]
    return [Window(*s) for s in sorted(spans, key=lambda s: s[1])]


def places(event_id: str, simple_events: list[dict[str, Any]]) -> dict[int, Window]:
    """Each window of every pass by its place in the run of intervals (pass ``r``'s
    ``k``-th is ``r * n + k``, ``n`` intervals a pass): the same place whenever it is
    read, so that a stream's reports keep their keys when planned again later."""
    spans = _spans(event_id, simple_events)
    per_pass = len({i for _, i in spans}) or 1
    by_pass: dict[int, list[Window]] = {}
    for (r, i), (lo, hi) in spans.items():
        by_pass.setdefault(r, []).append(Window(i, lo, hi))
    return {
        r * per_pass + k: w
        for r, ws in by_pass.items()
        for k, w in enumerate(sorted(ws, key=lambda w: w.start))
    }


@dataclass(frozen=True)
class Stream:
    """A descriptor's reports at a regular period (``repeat`` other than 1)."""

    start: int  # the place of the first report's first interval
    size: int  # intervals in each report (``numIntervals``)
    step: int  # intervals from one report's first to the next's (``frequency``)
    repeat: int  # reports in all; -1: indefinitely

    def blocks(
        self, window_at: Callable[[int], Window | None], first: int, last: int, now: float
    ) -> tuple[list[tuple[int, list[Window]]], float | None, int]:
        """(report number, windows) of each report whose intervals lie between places
        ``first`` and ``last``, ended no longer than ``STREAM_LOOKBACK_S`` ago and due
        within ``STREAM_AHEAD_S``; the time to plan again when the stream goes on past
        them (else None); and how many reports the intervals there are allow."""
        out: list[tuple[int, list[Window]]] = []
        r = max(0, (first - self.start - self.size) // self.step)
        ahead, behind = now + STREAM_AHEAD_S, now - STREAM_LOOKBACK_S
        count = r
        while self.repeat < 0 or r < self.repeat:
            lo = self.start + r * self.step
            if lo > last:
                return out, None, count
            ws = [w for p in range(lo, lo + self.size) if (w := window_at(p)) is not None]
            if ws and ws[-1].end > ahead:
                return out, ws[-1].end - STREAM_AHEAD_S / 2, count
            if ws:
                count = r + 1
                if ws[-1].end >= behind:
                    out.append((r, ws))
            r += 1
        return out, None, count


def repeated(
    event: dict[str, Any], d: dict[str, Any], places: dict[int, Window] | None, now: float
) -> tuple[list[tuple[int, list[Window]]], float | None, str | None]:
    """The reports of a descriptor whose ``repeat`` is not 1 (User Guide 7.5): the ``n``-th
    covers ``numIntervals`` intervals from place ``startInterval + n * frequency`` of the
    run of intervals over every pass (``places``; None: a report-only event's implied
    intervals, as many as the stream needs). ``frequency`` -1 is ``numIntervals``;
    ``numIntervals`` -1 is the rest of a pass (an implied interval: the ``frequency``, else
    one). With the time to plan it again when the stream goes on past ``STREAM_AHEAD_S``,
    and a line to say (fewer reports than asked for, or why none)."""
    repeat = int(d.get("repeat", 1))
    if repeat == 0 or repeat < -1:
        return [], None, f"repeat {repeat}: not a count the definition gives (1 or more; -1: "
        "indefinitely); not reported"
    start = max(int(d.get("startInterval", -1)), 0)
    num, freq = int(d.get("numIntervals", -1)), int(d.get("frequency", -1))
    if places is None:  # implied: interval k is k periods after the event's
        probe, why = implied_spans(event, 0, 1, now)
        if not probe:
            return [], None, f"report-only event: {why}"
        _, t0, t1 = probe[0]
        dt, whole_s = t1 - t0, event_s(event)
        last = math.ceil(whole_s / dt) - 1 if whole_s is not None else 2**62
        stop = t0 + whole_s if whole_s is not None else math.inf
        first = max(0, int((now - STREAM_LOOKBACK_S - t0) // dt))
        size = num if num > 0 else freq if freq > 0 else 1

        def at(p: int) -> Window | None:  # as implied_spans times interval p, cut at the end
            return None if p > last else Window(p, t0 + p * dt, min(t0 + (p + 1) * dt, stop))

    else:
        if not places:
            return [], None, None
        per_pass = len({w.interval_id for w in places.values()})
        first, last = min(places), max(places)
        size = num if num > 0 else max(per_pass - start, 1)
        held = places

        def at(p: int) -> Window | None:
            return held.get(p)

    stream = Stream(start, size, freq if freq > 0 else size, repeat)
    blocks, more, count = stream.blocks(at, first, last, now)
    if more is None and repeat > count:
        return blocks, None, f"repeat {repeat}: {count} reports (the event's intervals end)"
    return blocks, more, None
