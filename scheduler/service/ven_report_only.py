"""The intervals of a 'report-only' event (User Guide 7.5), from the event's own timing.

An event whose intervals all have empty payloads ("'report-only' event with BL-determined
intervals"), or that has none ("with implied intervals"), makes no simple event here (no
cap, no price), so the reports' intervals cannot come from what the daemon made of it, as
``ven_reports`` takes them for other events. They come from the event's timing instead, as
``openadr_timing`` reads it (an interval's period overrides the event's; one without a
start follows the previous one; ``0001-01-01`` is now), with no ``randomizeStart`` shift:
that moves when a VEN acts, and a report-only event asks for no action.

- BL-determined: each interval with an end is a window, by its own ``id``, cut at the
  first start plus the event's ``duration`` when that is shorter (a ``duration`` that would
  loop them is not looped: each interval is reported once).
- Implied: the event's ``intervalPeriod`` is interval 0; interval ``k`` starts ``k``
  durations later (ids ``k``: "determined by VEN"). How many there are: the event's finite
  ``duration`` over the period's, else as many as the descriptor's ``startInterval`` and
  ``numIntervals`` reach, else the one the period names. A period with no end (``P9999Y``
  or no duration) has no interval to report on, said so; an event with no
  ``intervalPeriod`` either ("VEN-determined intervals": a report at a time of the VEN's
  choosing) is said too, not sent.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from scheduler.service.openadr_timing import IntervalClock, OpenADRError, duration_s

__all__ = ["MAX_IMPLIED", "Span", "bl_spans", "event_s", "implied_spans", "is_report_only"]

#: at most this many implied intervals for one descriptor (the rest said, not reported)
MAX_IMPLIED = 10_000
#: (interval id, start, end), unix seconds
Span = tuple[int, float, float]


def is_report_only(event: dict[str, Any]) -> bool:
    """No interval, or every interval with an empty ``payloads`` (User Guide 7.5)."""
    ivs = event.get("intervals") or []
    return isinstance(ivs, list) and all(
        isinstance(iv, dict) and not iv.get("payloads") for iv in ivs
    )


def _clock(now: float) -> IntervalClock:
    return IntervalClock("", datetime.fromtimestamp(now, UTC), lambda _key, _bound: 0.0)


def event_s(event: dict[str, Any]) -> float | None:
    s = duration_s(event.get("duration"), "object.duration")
    return s if s is not None and math.isfinite(s) else None


def bl_spans(event: dict[str, Any], now: float) -> tuple[list[Span], str | None]:
    """The windows of a report-only event's own intervals, or why there are none."""
    ivs = [iv for iv in event.get("intervals") or [] if isinstance(iv, dict)]
    try:
        clock = _clock(now)
        spans = clock.spans(event, ivs)
        cut_s = event_s(event)
    except OpenADRError as exc:
        return [], str(exc)
    if clock.ended or not spans:
        return [], "the event is over (User Guide 7.9) or has no intervals"
    cut = spans[0][0].timestamp() + cut_s if cut_s is not None else math.inf
    out: list[Span] = []
    for k, (iv, (start, end)) in enumerate(zip(ivs, spans, strict=True)):
        if end is None or start.timestamp() >= cut:
            continue
        try:
            iid = int(iv.get("id", k))
        except (TypeError, ValueError):
            iid = k
        out.append((iid, start.timestamp(), min(end.timestamp(), cut)))
    if not out:
        return [], "its intervals have no end (P9999Y or no duration) to report after"
    return sorted(out, key=lambda s: s[1]), None


def implied_spans(
    event: dict[str, Any], start_interval: int, num_intervals: int, now: float
) -> tuple[list[Span], str | None]:
    """The implied intervals a descriptor selects, or why there are none."""
    if not event.get("intervalPeriod"):
        return [], "no intervals, no intervalPeriod: VEN-determined intervals are not sent"
    try:
        clock = _clock(now)
        spans = clock.spans(event, [{}])  # interval 0: the event's period
        whole_s = event_s(event)
    except OpenADRError as exc:
        return [], str(exc)
    if clock.ended or not spans:  # a finite window from 0001-01-01
        return [], "the event is over (User Guide 7.9)"
    ((start, end),) = spans
    if end is None or end <= start:
        return [], "its intervalPeriod has no end (P9999Y or no duration): no implied interval"
    t0, step = start.timestamp(), end.timestamp() - start.timestamp()
    stop = t0 + whole_s if whole_s is not None else math.inf
    if num_intervals >= 0:
        last = start_interval + num_intervals
    elif whole_s is not None:
        last = math.ceil(whole_s / step)
    else:
        last = 1  # the one interval the event's period names
    if whole_s is not None:
        last = min(last, math.ceil(whole_s / step))
    if last - start_interval > MAX_IMPLIED:
        return [], f"{last - start_interval} implied intervals: more than {MAX_IMPLIED}"
    out = [(k, t0 + k * step, min(t0 + (k + 1) * step, stop)) for k in range(start_interval, last)]
    if not out:
        return [], f"no implied interval from startInterval {start_interval}"
    return out, None
