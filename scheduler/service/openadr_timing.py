"""OpenADR 3 event timing: when each interval of an event starts and ends, and how its
values and the event's repetitions fall in time.

Timing (User Guide 7.3, 7.4): an interval's own period overrides the event's. The first
interval starts at its own start, else the event's; a later one without a start, or starting
``0001-01-01``, follows the previous one. ``0001-01-01`` at the event level means now;
``P9999Y`` until cancelled; a missing duration too. Several values in one payload split the
interval into equal sub-intervals. ``randomizeStart`` shifts the first start, and with it
every following one, by a draw within the bound (seeded by this VEN and the event, so that a
redelivery lands on the same times); an interval with its own bound draws again. The 3.1.0
event ``duration`` cuts the intervals at the first start plus it, or loops them until then
(``P9999Y``: indefinitely, expanded to ``LOOP_HORIZON`` ahead, the rest said in a notice).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from models.durations import iso_parts
from models.signals import FOREVER
from scheduler.service.openadr_payloads import Part

LOOP_HORIZON = timedelta(days=32)
MAX_PIECES = 20_000
#: a draw in [-bound_s, bound_s] for randomizeStart, keyed by VEN and event
Jitter = Callable[[str, float], float]


class OpenADRError(ValueError):
    """A notification that cannot be used; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def parse_iso_duration(text: str, path: str) -> float | None:
    """Seconds in an ISO 8601 duration; None for ``P9999Y`` (until cancelled)."""
    f = iso_parts(text)
    if f is None:
        raise OpenADRError(path, f"{text!r} is not an ISO 8601 duration (e.g. PT1H, P1D, P9999Y)")
    if f["y"] >= 9999:
        return None
    return (
        f["y"] * 365.25 * 86400
        + f["mo"] * 30 * 86400
        + f["w"] * 7 * 86400
        + f["d"] * 86400
        + f["h"] * 3600
        + f["mi"] * 60
        + f["s"]
    )


def seeded_jitter(key: str, bound_s: float) -> float:
    """The default draw: uniform, seeded by ``key`` (stable across redeliveries)."""
    return random.Random(key).uniform(-bound_s, bound_s)


def parse_time(text: Any, path: str) -> datetime | None:
    """An absolute time, or None for ``0001-01-01`` (now / after the previous interval);
    3.0.1 wrote the beginning of time ``0000-00-00``, not a valid date (3.1.0 change log, 339)."""
    if not isinstance(text, str):
        raise OpenADRError(path, f"expected an ISO 8601 date-time, got {text!r}")
    if text.startswith("0000-"):
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OpenADRError(path, f"{text!r} is not an ISO 8601 date-time") from None
    if t.year == 1:
        return None
    if t.tzinfo is None:  # RFC 3339 (the schema's dateTime) needs one: never guessed
        raise OpenADRError(
            path, f"{text!r} has no UTC offset; RFC 3339 needs one, e.g. {text[:19]}Z or -06:00"
        )
    return t.astimezone(UTC)


def duration_s(text: Any, path: str) -> float | None:
    """None when absent; math.inf for P9999Y."""
    if text is None:
        return None
    if isinstance(text, str) and text.startswith("-"):  # read as positive before (abs)
        raise OpenADRError(path, f"{text!r} is a negative duration; a length of time is needed")
    s = parse_iso_duration(text, path)
    return math.inf if s is None else s


def interval_period(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OpenADRError(path, "expected an intervalPeriod {start, duration, randomizeStart}")
    return raw


class IntervalClock:
    """Starts and ends of the intervals, with the randomizeStart shift in force."""

    def __init__(self, key: str, now: datetime, jitter: Jitter) -> None:
        self.key, self.now, self.jitter = key, now, jitter
        self.shift = timedelta(0)
        #: the event's window lies at the beginning of time: over (set by :meth:`spans`)
        self.ended = False

    def draw(self, text: Any, path: str, key: str) -> None:
        bound = duration_s(text, path)
        if bound is None:
            return
        if math.isinf(bound):
            raise OpenADRError(path, "randomizeStart must be a finite duration, e.g. PT5M")
        x = self.jitter(key, bound) if bound > 0 else 0.0
        self.shift = timedelta(seconds=max(-bound, min(bound, x)))

    def spans(
        self, obj: dict[str, Any], intervals: list[dict[str, Any]]
    ) -> list[tuple[datetime, datetime | None]]:
        ep = interval_period(obj.get("intervalPeriod"), "object.intervalPeriod")
        e_start = self.now
        e_dur = duration_s(ep.get("duration"), "object.intervalPeriod.duration")
        if ep.get("start") is not None:
            given = parse_time(ep["start"], "object.intervalPeriod.start")
            own = any(iv.get("intervalPeriod") for iv in intervals)  # their own times rule
            if given is None and e_dur is not None and math.isfinite(e_dur) and not own:
                # 'do it now' only "if the duration extends into the future" (User Guide
                # 7.3); a finite one from the beginning of time ended long ago (7.9: how a
                # VTN retires an event). Before: a cap in force from now.
                self.ended = True
                return []
            e_start = given or self.now
        self.draw(ep.get("randomizeStart"), "object.intervalPeriod.randomizeStart", self.key)
        out: list[tuple[datetime, datetime | None]] = []
        cursor = e_start
        for k, iv in enumerate(intervals):
            path = f"object.intervals[{k}].intervalPeriod"
            ip = interval_period(iv.get("intervalPeriod"), path)
            if not ep and not ip:
                raise OpenADRError(
                    path,
                    "missing, and the event has no intervalPeriod: User Guide 7.4, one of "
                    "them gives each interval its time",
                )
            self.draw(ip.get("randomizeStart"), f"{path}.randomizeStart", f"{self.key}:{k}")
            given = (
                parse_time(ip["start"], f"{path}.start") if ip.get("start") is not None else None
            )
            if given is not None:
                start = given + self.shift
            elif k == 0:
                start = e_start + self.shift
            else:
                start = cursor  # follows the previous interval, already shifted
            dur = duration_s(ip.get("duration"), f"{path}.duration")
            dur = e_dur if dur is None else dur
            end = None if dur is None or math.isinf(dur) else start + timedelta(seconds=dur)
            out.append((start, end))
            cursor = FOREVER if end is None else end
        return out


def pieces(
    part: Part,
    start: datetime,
    end: datetime | None,
    reps: list[tuple[int, timedelta, datetime | None]],
    unexpanded: bool,
) -> list[tuple[str, dict[str, Any], datetime, datetime | None]]:
    """(id suffix, fields, start, end) of one payload part: a value per sub-interval and per
    repetition; a notice once, over every repetition of its interval."""
    if not part.acted:
        r, offset, until = reps[0]
        if len(reps) > 1 or unexpanded:
            return [("", part.fields[0], start + offset, until)]
        e = None if end is None else end + offset
        if until is not None:
            e = until if e is None else min(e, until)
        return [("", part.fields[0], start + offset, e)]
    out = []
    n = len(part.fields)
    for r, offset, until in reps:
        s0 = start + offset
        e0 = None if end is None else end + offset
        for m, fields in enumerate(part.fields):
            s = s0 if e0 is None else s0 + (e0 - s0) * m / n
            e = e0 if e0 is None else s0 + (e0 - s0) * (m + 1) / n
            if until is not None:
                if s >= until:
                    break
                e = until if e is None else min(e, until)
            out.append(((f"[{m}]" if n > 1 else "") + (f"@{r}" if r else ""), fields, s, e))
    return out


def repetitions(
    spans: list[tuple[datetime, datetime | None]], event_s: float | None, now: datetime, n: int
) -> tuple[list[tuple[int, timedelta, datetime | None]], tuple[datetime, datetime | None] | None]:
    """(repetition, offset, cut-off) for each pass over the intervals, and the span left
    unexpanded when the event's duration loops them past the horizon."""
    if event_s is None or not spans:
        return [(0, timedelta(0), None)], None
    first = spans[0][0]
    until = None if math.isinf(event_s) else first + timedelta(seconds=event_s)
    ends = [e for _, e in spans]
    if any(e is None for e in ends):
        return [(0, timedelta(0), until)], None
    lifespan = max(e for e in ends if e is not None) - first
    if lifespan <= timedelta(0) or (until is not None and until <= first + lifespan):
        return [(0, timedelta(0), until)], None  # cut, not looped
    last = until or FOREVER
    horizon = min(last, now + LOOP_HORIZON)
    r = max(0, math.floor((now - first) / lifespan))
    reps: list[tuple[int, timedelta, datetime | None]] = []
    max_reps = max(1, MAX_PIECES // max(1, n))
    while first + r * lifespan < horizon and len(reps) < max_reps:
        reps.append((r, r * lifespan, until))
        r += 1
    since = first + r * lifespan
    return reps, ((since, until) if since < last else None)
