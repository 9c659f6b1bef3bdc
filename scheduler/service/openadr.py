"""OpenADR 3 notifications (3.0.1 and 3.1.0) as gridsched events.

A VTN POSTs ``{objectType, operation, object}`` to the subscription's callback URL. For an
EVENT each interval becomes one simple-format event (``oadr:<event id>:<interval id>``):

- IMPORT_CAPACITY_LIMIT and DISPATCH_SETPOINT (kW): a curtail event with that import cap;
- SIMPLE (levels 0-3): a curtail event at that level (caps from ``tariff.dr_levels_kw``);
- PRICE: a price event, converted to USD/MWh from the payload descriptor's units;
- ALERT_GRID_EMERGENCY: an alert (shed to level 3).

Timing: interval periods override the event's; intervals without one follow each other
from the event's start with the event's duration. Start ``0001-01-01`` means now, duration
``P9999Y`` until cancelled. A DELETE (3.0.1) / DELETE (3.1.0) operation or a zero-length
event cancels every interval of the event. OpenADR priorities (lower number wins, none is
lowest) become gridsched priorities (higher wins) by negation.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from models.signals import FOREVER

OPERATIONS_CREATE = {"POST", "PUT", "CREATE", "UPDATE"}
OPERATIONS_DELETE = {"DELETE"}
OPERATIONS_IGNORE = {"GET", "READ"}
PAYLOADS = ("IMPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT", "SIMPLE", "PRICE", "ALERT_GRID_EMERGENCY")
NOW_START = datetime(1, 1, 1, tzinfo=UTC)
_DURATION = re.compile(
    r"^P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
# Price units: what one unit of the payload value is priced per, in MWh.
_PER_MWH = {"KWH": 1000.0, "MWH": 1.0, "WH": 1e6}


class OpenADRError(ValueError):
    """A notification that cannot be used; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def parse_iso_duration(text: str, path: str) -> float | None:
    """Seconds in an ISO 8601 duration; None for ``P9999Y`` (until cancelled)."""
    m = _DURATION.match(text or "")
    if not m or text in ("P", "PT"):
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


def _time(text: Any, path: str, now: datetime) -> datetime:
    if not isinstance(text, str):
        raise OpenADRError(path, f"expected an ISO 8601 date-time, got {text!r}")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise OpenADRError(path, f"{text!r} is not an ISO 8601 date-time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t.year == 1:
        return now
    return t.astimezone(UTC)


def notification_to_events(body: Any, now: datetime) -> list[dict[str, Any]]:
    """Simple-format event dicts (cancels included) from one OpenADR 3 notification."""
    if not isinstance(body, dict):
        raise OpenADRError("(body)", "expected a JSON object {objectType, operation, object}")
    for key in ("objectType", "operation", "object"):
        if key not in body:
            raise OpenADRError(key, "missing (a notification has objectType, operation, object)")
    if body["objectType"] != "EVENT":
        return []  # programs, reports, subscriptions: nothing to enforce
    op = str(body["operation"]).upper()
    obj = body["object"]
    if not isinstance(obj, dict):
        raise OpenADRError("object", "expected an EVENT object")
    eid = obj.get("id")
    if not isinstance(eid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", eid):
        raise OpenADRError("object.id", f"expected a VTN object id (URL-safe, 1-128), got {eid!r}")
    if op in OPERATIONS_IGNORE:
        return []
    intervals = obj.get("intervals") or []
    if not isinstance(intervals, list):
        raise OpenADRError("object.intervals", "expected a list")
    ids = [f"oadr:{eid}:{iv.get('id')}" for iv in intervals if isinstance(iv, dict)]
    if op in OPERATIONS_DELETE:
        return [{"id": i, "type": "cancel", "source": "openadr3"} for i in ids] or [
            {"id": f"oadr:{eid}:*", "type": "cancel", "source": "openadr3"}
        ]
    if op not in OPERATIONS_CREATE:
        raise OpenADRError(
            "operation",
            f"{op!r}: valid are POST, PUT, DELETE (3.0.1) or CREATE, UPDATE, DELETE (3.1.0)",
        )

    period = obj.get("intervalPeriod") or {}
    prio = obj.get("priority")
    priority = -int(prio) if isinstance(prio, int) else -(2**31)
    units: dict[str, tuple[str | None, str | None]] = {}
    for d in obj.get("payloadDescriptors") or []:
        if isinstance(d, dict) and "payloadType" in d:
            units[str(d["payloadType"])] = (d.get("units"), d.get("currency"))

    base_start = _time(period.get("start"), "object.intervalPeriod.start", now) if period else now
    base_dur = (
        parse_iso_duration(period["duration"], "object.intervalPeriod.duration")
        if period.get("duration") is not None
        else None
    )
    if (
        period
        and base_dur == 0.0
        and not any(isinstance(iv, dict) and iv.get("intervalPeriod") for iv in intervals)
    ):
        return [{"id": i, "type": "cancel", "source": "openadr3"} for i in ids]  # zero-length event

    # An update replaces the event: intervals it no longer lists must not stay in force.
    out: list[dict[str, Any]] = [{"id": f"oadr:{eid}:*", "type": "cancel", "source": "openadr3"}]
    cursor = base_start
    for k, iv in enumerate(intervals):
        path = f"object.intervals[{k}]"
        if not isinstance(iv, dict) or "id" not in iv:
            raise OpenADRError(path, "expected an interval with id and payloads")
        ip = iv.get("intervalPeriod")
        if ip:
            start = _time(ip.get("start"), f"{path}.intervalPeriod.start", now)
            dur = (
                parse_iso_duration(ip["duration"], f"{path}.intervalPeriod.duration")
                if ip.get("duration") is not None
                else base_dur
            )
        else:
            start, dur = cursor, base_dur
        end = FOREVER if dur is None else start + timedelta(seconds=dur)
        if dur is not None:
            cursor = end
        ev_id = f"oadr:{eid}:{iv['id']}"
        if dur == 0.0:
            out.append({"id": ev_id, "type": "cancel", "source": "openadr3"})
            continue
        ev = _interval_event(ev_id, iv.get("payloads"), units, path)
        if ev is None:
            continue
        ev.update(
            start=start.isoformat(),
            end=None if end is FOREVER else end.isoformat(),
            priority=priority,
            source="openadr3",
        )
        if ev["end"] is None:
            del ev["end"]
        out.append(ev)
    return out


def _interval_event(
    ev_id: str, payloads: Any, units: dict[str, tuple[str | None, str | None]], path: str
) -> dict[str, Any] | None:
    if not isinstance(payloads, list):
        raise OpenADRError(f"{path}.payloads", "expected a list of {type, values}")
    for j, p in enumerate(payloads):
        if not isinstance(p, dict) or "type" not in p or "values" not in p:
            raise OpenADRError(f"{path}.payloads[{j}]", "expected {type, values}")
        kind = str(p["type"])
        values = p["values"]
        if kind not in PAYLOADS:
            continue  # private or unsupported payload types are ignored, as the spec allows
        if not isinstance(values, list) or (kind != "ALERT_GRID_EMERGENCY" and not values):
            raise OpenADRError(f"{path}.payloads[{j}].values", "expected a non-empty list")
        v = values[0] if values else None
        where = f"{path}.payloads[{j}].values[0]"
        if kind in ("IMPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT"):
            kw = _number(v, where)
            if kw < 0:
                raise OpenADRError(where, f"{kw} kW: a limit must be >= 0")
            return {"id": ev_id, "type": "curtail", "limit_kw": kw}
        if kind == "SIMPLE":
            level = _number(v, where)
            if level not in (0, 1, 2, 3):
                raise OpenADRError(where, f"SIMPLE level {v!r}: valid are 0, 1, 2, 3")
            return {"id": ev_id, "type": "curtail", "level": int(level)}
        if kind == "PRICE":
            price = _number(v, where)
            unit, currency = units.get("PRICE", (None, None))
            if currency not in (None, "USD"):
                raise OpenADRError(
                    "object.payloadDescriptors", f"currency {currency!r}: only USD is supported"
                )
            per = _PER_MWH.get(str(unit or "KWH").upper())
            if per is None:
                raise OpenADRError(
                    "object.payloadDescriptors", f"price units {unit!r}: valid are KWH, MWH, WH"
                )
            return {"id": ev_id, "type": "price", "price": price * per}
        return {"id": ev_id, "type": "alert"}
    return None


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise OpenADRError(where, f"expected a number, got {v!r}")
    return float(v)
