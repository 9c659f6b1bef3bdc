"""OpenADR 3 notifications (3.0.1 and 3.1.0) as gridsched events.

A VTN POSTs ``{objectType, operation, object}`` to the subscription's callback URL. For an
EVENT, each payload of each interval is read as the 3.1.0 User Guide (section 7) and the
enumerations mean it (``openadr_payloads``: what each type becomes); what gridsched does not
act on becomes a ``notice`` with the reason, so it is stored, audited and counted.

Timing (User Guide 7.3, 7.4: periods, ``0001-01-01``, ``randomizeStart``, the event's
``duration``) is :mod:`scheduler.service.openadr_timing`.

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

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.signals import FOREVER
from models.site import OpenADR
from scheduler.service.openadr_payloads import PAYLOAD_TYPES, PayloadError, Scope, interpret
from scheduler.service.openadr_programs import Descriptors, Programs, descriptors_of, merged
from scheduler.service.openadr_targets import match_targets
from scheduler.service.openadr_timing import (
    IntervalClock,
    Jitter,
    OpenADRError,
    duration_s,
    interval_period,
    parse_iso_duration,
    pieces,
    repetitions,
    seeded_jitter,
)

__all__ = [
    "PAYLOAD_TYPES",
    "OpenADRError",
    "Programs",
    "Reading",
    "notification_to_events",
    "parse_iso_duration",
    "read_notification",
]

OPERATIONS_CREATE = {"POST", "PUT", "CREATE", "UPDATE"}
OPERATIONS_DELETE = {"DELETE"}
OPERATIONS_IGNORE = {"GET", "READ"}


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


#: A notification's objectType, as the 3.0.1 and 3.1.0 schemas list them (``objectTypes``)
OBJECT_TYPES = ("PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE")


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
    if body["objectType"] not in OBJECT_TYPES:
        raise OpenADRError(
            "objectType",
            f"{body['objectType']!r}: valid are {', '.join(OBJECT_TYPES)} (3.0.1 and 3.1.0)",
        )
    if body["objectType"] in ("PROGRAM", "EVENT") and isinstance(body["object"], dict):
        raw = body["object"].get("payloadDescriptors")
        if raw is not None and not (
            isinstance(raw, list) and all(isinstance(d, dict) for d in raw)
        ):
            # they carry the units (KW or W) and currency the values are read in
            raise OpenADRError(
                "object.payloadDescriptors",
                f"expected a list of payload descriptor objects or null, got {raw!r:.80}",
            )
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
    clock = IntervalClock(f"{site.ven_name or ''}:{eid}", now, jitter or seeded_jitter)
    spans = clock.spans(obj, intervals)
    if clock.ended:  # a finite window from 0001-01-01: over, as a zero-length one
        return Reading([cancel_all], [])
    ep = interval_period(obj.get("intervalPeriod"), "object.intervalPeriod")
    event_s = duration_s(obj.get("duration"), "object.duration")
    if event_s == 0.0 or (
        ep.get("duration") is not None
        and duration_s(ep["duration"], "object.intervalPeriod.duration") == 0.0
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
    if isinstance(prio, float) and prio.is_integer():
        prio = int(prio)  # JSON Schema's integer: 1e30 is one
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int) or prio < 0):
        # 3.1.0 spec: integer >= 0 or null (lowest); a string is not read as the lowest
        raise OpenADRError(
            "object.priority", f"expected an integer >= 0 or null (lower is higher), got {prio!r}"
        )
    common = {
        # the schema sets no maximum: one beyond int32 is the lowest a number gives, still
        # above null's (-2**31)
        "priority": -min(int(prio), 2**31 - 1) if isinstance(prio, int) else -(2**31),
        "source": "openadr3",
    }
    reps, beyond = repetitions(spans, event_s, now, len(intervals))
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
                for suffix, fields, s, e in pieces(part, start, end, reps, beyond is not None):
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
