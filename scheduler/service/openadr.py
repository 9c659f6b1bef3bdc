"""OpenADR 3 notifications (3.0.1 and 3.1.0) as gridsched events.

A VTN POSTs ``{objectType, operation, object}`` to the subscription's callback URL. For an
EVENT, each payload of each interval is read as the 3.1.0 User Guide (section 7) and the
enumerations mean it (``openadr_payloads``: what each type becomes); what gridsched does not
act on becomes a ``notice`` with the reason, so it is stored, audited and counted.

Timing (User Guide 7.3, 7.4): an interval's own period overrides the event's. The first
interval starts at its own start, else the event's; a later one without a start, or starting
``0001-01-01``, follows the previous one. ``0001-01-01`` at the event level means now;
``P9999Y`` until cancelled; a missing duration too. Several values in one payload split the
interval into equal sub-intervals. ``randomizeStart`` shifts the first start, and with it
every following one, by a draw within the bound (seeded by this VEN and the event, so that a
redelivery lands on the same times); an interval with its own bound draws again. The 3.1.0
event ``duration`` cuts the intervals at the first start plus it, or loops them until then
(``P9999Y``: indefinitely, expanded to ``LOOP_HORIZON`` ahead, the rest said in a notice).

Targets: 3.1.0 strings, or 3.0.1 valuesMaps (VEN_NAME, RESOURCE_NAME, any other type), are
matched against ``[openadr]`` ven_name, targets and resources; an event for another VEN is
recorded, not enforced. Site-level payloads (import limit, price, alerts) act on the site;
setpoints act on the resources they are for.

A DELETE or a zero-length event cancels every interval of the event; an UPDATE replaces them.
OpenADR priorities (lower number wins, none is lowest) become gridsched priorities (higher
wins) by negation. Event ids: ``oadr:<event>:<interval>``, then ``:<payload type>`` when the
interval has several payloads, ``/<resource>`` for a resource's part, ``[k]`` for the k-th
sub-interval and ``@r`` for the r-th repetition of a looped event.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from models.signals import FOREVER
from models.site import OpenADR
from scheduler.service.openadr_payloads import (
    PAYLOAD_TYPES,
    Part,
    PayloadError,
    Scope,
    interpret,
)
from scheduler.service.openadr_programs import Descriptors, Programs, descriptors_of, merged
from scheduler.service.openadr_targets import match_targets

__all__ = [
    "PAYLOAD_TYPES",
    "OpenADRError",
    "Programs",
    "Reading",
    "notification_to_events",
    "read_notification",
]

OPERATIONS_CREATE = {"POST", "PUT", "CREATE", "UPDATE"}
OPERATIONS_DELETE = {"DELETE"}
OPERATIONS_IGNORE = {"GET", "READ"}
LOOP_HORIZON = timedelta(days=32)
MAX_PIECES = 20_000
_DURATION = re.compile(
    r"^-?P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
#: a draw in [-bound_s, bound_s] for randomizeStart, keyed by VEN and event
Jitter = Callable[[str, float], float]


class OpenADRError(ValueError):
    """A notification that cannot be used; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class PayloadOutcome:
    event_id: str
    interval_id: str
    payload_type: str
    acted: bool
    reason: str | None

    @property
    def label(self) -> str:
        """The metric label: the type if enumerated, else ``private`` (a VTN's private names
        would otherwise make the label set unbounded)."""
        known = self.payload_type in PAYLOAD_TYPES or self.payload_type == "reportDescriptors"
        return self.payload_type if known else "private"


@dataclass(frozen=True)
class Reading:
    events: list[dict[str, Any]]  # simple-format dicts, cancels first
    payloads: list[PayloadOutcome]


def parse_iso_duration(text: str, path: str) -> float | None:
    """Seconds in an ISO 8601 duration; None for ``P9999Y`` (until cancelled)."""
    m = _DURATION.match(text if isinstance(text, str) else "")
    if not m or text.lstrip("-") in ("P", "PT") or text.endswith("T"):
        raise OpenADRError(path, f"{text!r} is not an ISO 8601 duration (e.g. PT1H, P1D, P9999Y)")
    f = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
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


def _time(text: Any, path: str) -> datetime | None:
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
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def _seconds(text: Any, path: str) -> float | None:
    """None when absent; math.inf for P9999Y."""
    if text is None:
        return None
    s = parse_iso_duration(text, path)
    return math.inf if s is None else abs(s)


def _period(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OpenADRError(path, "expected an intervalPeriod {start, duration, randomizeStart}")
    return raw


class _Clock:
    """Starts and ends of the intervals, with the randomizeStart shift in force."""

    def __init__(self, key: str, now: datetime, jitter: Jitter) -> None:
        self.key, self.now, self.jitter = key, now, jitter
        self.shift = timedelta(0)

    def draw(self, text: Any, path: str, key: str) -> None:
        bound = _seconds(text, path)
        if bound is None:
            return
        if math.isinf(bound):
            raise OpenADRError(path, "randomizeStart must be a finite duration, e.g. PT5M")
        x = self.jitter(key, bound) if bound > 0 else 0.0
        self.shift = timedelta(seconds=max(-bound, min(bound, x)))

    def spans(
        self, obj: dict[str, Any], intervals: list[dict[str, Any]]
    ) -> list[tuple[datetime, datetime | None]]:
        ep = _period(obj.get("intervalPeriod"), "object.intervalPeriod")
        e_start = self.now
        if ep.get("start") is not None:
            e_start = _time(ep["start"], "object.intervalPeriod.start") or self.now
        e_dur = _seconds(ep.get("duration"), "object.intervalPeriod.duration")
        self.draw(ep.get("randomizeStart"), "object.intervalPeriod.randomizeStart", self.key)
        out: list[tuple[datetime, datetime | None]] = []
        cursor = e_start
        for k, iv in enumerate(intervals):
            path = f"object.intervals[{k}].intervalPeriod"
            ip = _period(iv.get("intervalPeriod"), path)
            self.draw(ip.get("randomizeStart"), f"{path}.randomizeStart", f"{self.key}:{k}")
            given = _time(ip["start"], f"{path}.start") if ip.get("start") is not None else None
            if given is not None:
                start = given + self.shift
            elif k == 0:
                start = e_start + self.shift
            else:
                start = cursor  # follows the previous interval, already shifted
            dur = _seconds(ip.get("duration"), f"{path}.duration")
            dur = e_dur if dur is None else dur
            end = None if dur is None or math.isinf(dur) else start + timedelta(seconds=dur)
            out.append((start, end))
            cursor = FOREVER if end is None else end
        return out


def notification_to_events(
    body: Any, now: datetime, site: OpenADR | None = None
) -> list[dict[str, Any]]:
    """Simple-format event dicts (cancels and notices included) from one notification."""
    return read_notification(body, now, site).events


def read_notification(
    body: Any,
    now: datetime,
    site: OpenADR | None = None,
    jitter: Jitter | None = None,
    programs: Programs | None = None,
) -> Reading:
    """The events one OpenADR 3 notification makes here, and what became of each payload.
    ``programs``: the programs heard of, whose payload descriptors an event's default to; a
    PROGRAM notification is remembered there."""
    if not isinstance(body, dict):
        raise OpenADRError("(body)", "expected a JSON object {objectType, operation, object}")
    for key in ("objectType", "operation", "object"):
        if key not in body:
            raise OpenADRError(key, "missing (a notification has objectType, operation, object)")
    if body["objectType"] == "PROGRAM" and programs is not None:
        programs.learn(str(body["operation"]), body["object"])
    if body["objectType"] != "EVENT":
        return Reading([], [])  # programs, reports, subscriptions: nothing to enforce
    op = str(body["operation"]).upper()
    obj = body["object"]
    if not isinstance(obj, dict):
        raise OpenADRError("object", "expected an EVENT object")
    eid = obj.get("id")
    if not isinstance(eid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", eid):
        raise OpenADRError("object.id", f"expected a VTN object id (URL-safe, 1-128), got {eid!r}")
    if op in OPERATIONS_IGNORE:
        return Reading([], [])
    cancel_all = {"id": f"oadr:{eid}:*", "type": "cancel", "source": "openadr3"}
    if op in OPERATIONS_DELETE:
        return Reading([cancel_all], [])
    if op not in OPERATIONS_CREATE:
        raise OpenADRError(
            "operation",
            f"{op!r}: valid are POST, PUT, DELETE (3.0.1) or CREATE, UPDATE, DELETE (3.1.0)",
        )
    site = site or OpenADR()
    intervals = obj.get("intervals") or []
    if not isinstance(intervals, list):
        raise OpenADRError("object.intervals", "expected a list")
    for k, iv in enumerate(intervals):
        if not isinstance(iv, dict) or "id" not in iv:
            raise OpenADRError(
                f"object.intervals[{k}]", "expected an interval with id and payloads"
            )
    clock = _Clock(f"{site.ven_name or ''}:{eid}", now, jitter or seeded_jitter)
    spans = clock.spans(obj, intervals)
    ep = _period(obj.get("intervalPeriod"), "object.intervalPeriod")
    event_s = _seconds(obj.get("duration"), "object.duration")
    if event_s == 0.0 or (
        ep.get("duration") is not None
        and _seconds(ep["duration"], "object.intervalPeriod.duration") == 0.0
        and not any(iv.get("intervalPeriod") for iv in intervals)
    ):
        return Reading([cancel_all], [])  # a zero-length event: cancelled (User Guide 7.9)
    own = descriptors_of(obj.get("payloadDescriptors"))
    program = programs.descriptors(obj.get("programID")) if programs is not None else {}
    try:
        return _read(
            obj, eid, intervals, spans, event_s, site, now, merged(own, program), cancel_all
        )
    except PayloadError as exc:
        raise OpenADRError(exc.where, exc.reason) from None


def _read(
    obj: dict[str, Any],
    eid: str,
    intervals: list[dict[str, Any]],
    spans: list[tuple[datetime, datetime | None]],
    event_s: float | None,
    site: OpenADR,
    now: datetime,
    descriptors: Descriptors,
    cancel_all: dict[str, Any],
) -> Reading:
    scope: Scope = match_targets(obj.get("targets"), site)
    prio = obj.get("priority")
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int) or prio < 0):
        # 3.1.0 spec: integer >= 0 or null (lowest); a string is not read as the lowest
        raise OpenADRError(
            "object.priority", f"expected an integer >= 0 or null (lower is higher), got {prio!r}"
        )
    common = {
        "priority": -int(prio) if isinstance(prio, int) else -(2**31),
        "source": "openadr3",
    }
    reps, beyond = _repetitions(spans, event_s, now, len(intervals))
    out: list[dict[str, Any]] = [cancel_all]
    outcomes: list[PayloadOutcome] = []
    for k, iv in enumerate(intervals):
        path = f"object.intervals[{k}]"
        payloads = iv.get("payloads")
        if not isinstance(payloads, list):
            raise OpenADRError(f"{path}.payloads", "expected a list of {type, values}")
        start, end = spans[k]
        types = [p.get("type") if isinstance(p, dict) else None for p in payloads]
        for j, p in enumerate(payloads):
            if not isinstance(p, dict) or "type" not in p or not isinstance(p.get("values"), list):
                raise OpenADRError(f"{path}.payloads[{j}]", "expected {type, values: [...]}")
            kind = str(p["type"])
            base = f"oadr:{eid}:{iv['id']}"
            if len(payloads) > 1:
                base += f":{kind}" if types.count(kind) == 1 else f":{j}"
            if end == start:
                outcomes.append(
                    PayloadOutcome(eid, str(iv["id"]), kind, False, "zero-length interval")
                )
                out.append({"id": base, "type": "cancel", "source": "openadr3"})
                continue
            parts = interpret(
                kind, p["values"], descriptors.get(kind, {}), site, scope, end is not None,
                f"{path}.payloads[{j}].values",
            )  # fmt: skip
            for part in parts:
                outcomes.append(PayloadOutcome(eid, str(iv["id"]), kind, part.acted, part.reason))
                pid = base + (f"/{part.suffix}" if part.suffix else "")
                for suffix, fields, s, e in _pieces(part, start, end, reps, beyond is not None):
                    ev = {"id": pid + suffix, **fields, "payload_type": kind}
                    ev.update(start=s.isoformat(), **common)
                    if e is not None and e < FOREVER:
                        ev["end"] = e.isoformat()
                    out.append(ev)
    if beyond is not None:
        since, till = beyond
        ev = {
            "id": f"oadr:{eid}:loop",
            "type": "notice",
            "detail": f"the event's duration loops its intervals until "
            f"{'cancelled' if till is None else till.isoformat()}; repetitions from "
            f"{since.isoformat()} on are not expanded yet (an update of the event extends them)",
            "start": since.isoformat(),
            **common,
        }
        if till is not None:
            ev["end"] = till.isoformat()
        out.append(ev)
    reports = obj.get("reportDescriptors")
    for rd in reports if isinstance(reports, list) else []:
        kind = str(rd.get("payloadType")) if isinstance(rd, dict) else "?"
        outcomes.append(
            PayloadOutcome(
                eid, "-", "reportDescriptors", False,
                f"a report of {kind} is asked for; this intake sends no OpenADR reports",
            )
        )  # fmt: skip
    out[1:] = sorted(out[1:], key=lambda e: str(e.get("start", "")))  # in time order
    return Reading(out, outcomes)


def _pieces(
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


def _repetitions(
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
