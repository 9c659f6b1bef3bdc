"""Grid signals as data: demand-response events that cap import, set a price or alert.

The simple native format is
``{id, type: curtail|price|alert|cancel, start, end|duration, limit_kw?|level?, price?}``
(``limit_kw`` or ``level``, never both: which one applies would be a guess). Each type takes
only the fields it acts on (``TAKES``): a price with a cap, a curtail with a price, a cancel
with a time are refused, not read as one or the other; an event read back from the state file
(``STORED``) loads as it acted. A curtail with ``classes`` caps the power of those device
classes at the meter instead of the site's import.
OpenADR 3 events are translated into the same ``GridEvent`` by the webhook layer; an OpenADR
payload gridsched does not act on becomes a ``notice`` (its type, the reason, its time span), so
that it is stored, audited and reported rather than dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.durations import parse_duration_s
from models.errors import ConfigError
from models.textfile import TOO_DEEP, read_text

#: "until cancelled": OpenADR 3's P9999Y, capped so datetime arithmetic stays valid.
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
#: The times a signal may name (FOREVER aside): outside them it is a typo or an attack, and
#: date arithmetic on it overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_DURATION_S = 100 * 366 * 86400


class EventType(StrEnum):
    CURTAIL = "curtail"
    PRICE = "price"
    ALERT = "alert"
    CANCEL = "cancel"
    NOTICE = "notice"  # received and recorded, not acted on (``detail`` says why)


#: The refusal of an event that gives both: which one applies would be a guess.
BOTH_LIMIT_AND_LEVEL = (
    "limit_kw and level are both given: give one, not both (limit_kw: the cap in kW; "
    "level: 0-3, the cap of [tariff.dr_levels_kw] for that level)"
)
#: The fields that act only for some types, by the types that take them; any type may carry
#: id, source, priority, detail and payload_type (a record of what was sent). Another type
#: would ignore them, so an event giving one is refused: what it meant would be a guess.
TAKES: dict[EventType, tuple[str, ...]] = {
    EventType.CURTAIL: ("start", "end", "duration", "limit_kw", "level", "classes"),
    EventType.PRICE: ("start", "end", "duration", "price"),
    EventType.ALERT: ("start", "end", "duration", "limit_kw", "level"),
    EventType.CANCEL: (),
    EventType.NOTICE: ("start", "end", "duration"),
}
#: What each type takes, in the words of a refusal (``a curtail takes ...``).
TAKES_WORDS = {
    EventType.CURTAIL: "limit_kw or level, and classes with limit_kw",
    EventType.PRICE: "price (USD/MWh) and priority",
    EventType.ALERT: "nothing more, or limit_kw or level",
    EventType.CANCEL: "id only (it ends the stored event with that id when it is received)",
    EventType.NOTICE: "detail, the reason (it is recorded, never acted on)",
}
#: Why a field is not meant for another type: where what it says belongs.
_BELONGS = {
    "limit_kw": "a cap is an event of its own, type curtail or alert",
    "level": "a cap is an event of its own, type curtail or alert",
    "price": "a price override is an event of its own, type price",
    "classes": "only a curtail's limit_kw caps device classes",
    "start": "to end an event at another time, send it again with that end",
    "end": "to end an event at another time, send it again with that end",
    "duration": "to end an event at another time, send it again with that end",
}


def ignored_fields(event: GridEvent) -> str | None:
    """The refusal of an event giving fields its type does not act on, naming them, the
    type and what it takes; None when it gives none."""
    ignored = [f for f in _BELONGS if f not in TAKES[event.type] and getattr(event, f) is not None]
    if not ignored:
        return None
    names = " and ".join([", ".join(ignored[:-1]), ignored[-1]] if len(ignored) > 1 else ignored)
    why = "; ".join(dict.fromkeys(_BELONGS[f] for f in ignored))
    return (
        f"{names} on a {event.type} event: a {event.type} takes {TAKES_WORDS[event.type]}; "
        f"leave {'them' if len(ignored) > 1 else 'it'} out ({why})"
    )


#: Validation context for events read back from the state file (``GridEvent.model_validate(
#: body, context=STORED)``): one stored before a check was added still loads as it acted.
STORED = {"stored": True}


def _stored(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("stored"))


#: The largest price a signal may set (USD/MWh, either sign): two orders of magnitude above
#: any market's price cap (ERCOT's 5,000; Europe's harmonised 4,000), far below what the
#: solver's arithmetic fails on.
MAX_PRICE = 1_000_000.0
#: The largest import cap a signal may give (kW): a terawatt.
MAX_LIMIT_KW = 1e9


class GridEvent(BaseModel):
    """One grid signal. Times are timezone-aware and normalised to UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: no control characters: an id goes into log lines, where a newline forged one
    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    type: EventType
    start: datetime | None = None
    end: datetime | None = None
    duration: str | None = None
    #: bounded: a cap of 1e300 kW or a price of 1e300 USD/MWh passed as a number, and every
    #: plan after it failed in the solver ("ended with error (Unknown)") while it was in force
    limit_kw: Annotated[float, Field(ge=0, le=MAX_LIMIT_KW, allow_inf_nan=False)] | None = None
    level: Annotated[int, Field(ge=0, le=3)] | None = None
    price: Annotated[float, Field(ge=-MAX_PRICE, le=MAX_PRICE, allow_inf_nan=False)] | None = None
    #: strict: a priority sent as a string is refused, not read as something else
    priority: Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)] = 0
    source: str = "simple"
    #: the OpenADR 3 interval payload type this event was read from (e.g. PRICE)
    payload_type: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    #: a notice's reason, or an alert's text, as sent
    detail: Annotated[str, Field(max_length=1000)] | None = None
    #: device classes whose power (at the meter) a curtail's ``limit_kw`` caps, e.g. the
    #: classes an OpenADR resource covers; None: the cap is on the site's import
    classes: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] | None = None

    @field_validator("limit_kw", "level", "price", mode="before")
    @classmethod
    def _not_a_bool(cls, v: Any) -> Any:
        # JSON true is a Python bool, an int to pydantic: "limit_kw": true was a 1 kW cap
        if isinstance(v, bool):
            raise ValueError(f"a number is needed, not {json.dumps(v)}")
        return v

    @field_validator("start", "end")
    @classmethod
    def _in_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None or value.tzinfo is None or value == FOREVER:
            return value  # no offset: said in _check
        if not EARLIEST <= value <= LATEST:
            raise ValueError(
                f"{info.field_name} {value.isoformat()} is outside {EARLIEST.year}-"
                f"{LATEST.year - 1}; leave out end and duration for 'until cancelled'"
            )
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and parse_duration_s(value) > MAX_DURATION_S:
            raise ValueError(
                f"duration {value!r} is longer than 100 years; leave out end and duration "
                "for 'until cancelled'"
            )
        return value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                if value.tzinfo is None:
                    raise ValueError(
                        f"{name} {value.isoformat()} has no UTC offset; "
                        "write e.g. 2025-08-01T17:00:00Z"
                    )
                object.__setattr__(self, name, value.astimezone(UTC))
        if not _stored(info) and (ignored := ignored_fields(self)) is not None:
            raise ValueError(ignored)
        if self.type is EventType.CANCEL:
            return self
        if self.limit_kw is not None and self.level is not None and not _stored(info):
            raise ValueError(BOTH_LIMIT_AND_LEVEL)
        if self.start is None:
            raise ValueError("start is required (ISO 8601 with offset)")
        if self.end is not None and self.duration is not None:
            raise ValueError("give end or duration, not both")
        if self.duration is not None:
            end = self.start + timedelta(seconds=parse_duration_s(self.duration))
            if end > LATEST:
                raise ValueError(f"start plus duration ends after {LATEST.year - 1}")
            object.__setattr__(self, "end", end)
        if self.end is None:
            object.__setattr__(self, "end", FOREVER)
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end.isoformat()} is before start {self.start.isoformat()}")
        if self.type is EventType.CURTAIL and self.limit_kw is None and self.level is None:
            raise ValueError("a curtail event needs limit_kw or level")
        if self.type is EventType.PRICE and self.price is None:
            raise ValueError("a price event needs price (USD/MWh)")
        if self.type is EventType.NOTICE and not self.detail:
            raise ValueError("a notice needs detail (why it is not acted on)")
        if self.classes is not None:
            self._check_classes(self.classes)
        return self

    def _check_classes(self, classes: tuple[str, ...]) -> None:
        if self.type is not EventType.CURTAIL:
            raise ValueError(
                f"classes {list(classes)} on a {self.type} event: only a curtail's limit_kw "
                "caps device classes; leave classes out"
            )
        if self.limit_kw is None:
            raise ValueError(
                "classes needs limit_kw (kW at the meter for those classes); a level's kW "
                "(tariff.dr_levels_kw) caps the whole site"
            )
        if not classes:
            raise ValueError("classes is empty; leave it out to cap the whole site's import")
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise ValueError(f"classes names {twice} twice")

    @property
    def start_utc(self) -> datetime:
        return self.start or datetime.min.replace(tzinfo=UTC)

    @property
    def end_utc(self) -> datetime:
        return self.end or FOREVER

    def active_at(self, t: datetime) -> bool:
        return self.start_utc <= t < self.end_utc


def resolve_cancels(events: list[GridEvent]) -> list[GridEvent]:
    """Apply cancels in order: a cancel removes every earlier event with its id.

    A zero-length event is a cancel too (OpenADR 3 convention).
    """
    live: dict[str, GridEvent] = {}
    for ev in events:
        if ev.type is EventType.CANCEL or (ev.start is not None and ev.end == ev.start):
            live.pop(ev.id, None)
        else:
            live[ev.id] = ev
    return list(live.values())


def class_problems(
    events: Iterable[GridEvent], class_names: Sequence[str]
) -> list[tuple[str, str]]:
    """(where, what) for each class an event names that the site has not got; for the
    ``ConfigError`` of a plan, or the 422 of an intake that knows the site."""
    valid = ", ".join(class_names)
    return [
        (f"event {ev.id}: classes", f"unknown device class {c!r} (valid: {valid})")
        for ev in events
        for c in ev.classes or ()
        if c not in class_names
    ]


def level_problems(events: Iterable[GridEvent], levels: dict[str, float]) -> list[str]:
    """What is wrong with each cap given as a level (not 0, which is none) that the site's
    ``[tariff.dr_levels_kw]`` has no cap for: stored or planned, such an event would make
    every plan over it fail; for the ``ConfigError`` of a file or a plan, or an intake's 422."""
    have = ", ".join(sorted(levels, key=lambda k: (len(k), k))) or "none"
    return [
        f"event {ev.id!r}: level {ev.level} has no cap at this site; it has levels "
        f'{have} (add tariff.dr_levels_kw."{ev.level}" in kW), or give limit_kw'
        for ev in events
        if ev.type in (EventType.CURTAIL, EventType.ALERT)
        and ev.level
        and ev.limit_kw is None
        and str(ev.level) not in levels
    ]


def parse_events(raw: Any, source: str) -> list[GridEvent]:
    """Validate a list of simple-format events; errors name the index and field."""
    if isinstance(raw, dict) and "events" in raw:
        raw = raw["events"]
    if not isinstance(raw, list):
        raise ConfigError(
            source,
            [("(top level)", "expected a JSON list of events or an object with an 'events' list")],
        )
    events: list[GridEvent] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        try:
            events.append(GridEvent.model_validate(item))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                where = f"[{i}]" + (f".{loc}" if loc else "")
                msg = err["msg"].removeprefix("Value error, ")
                if loc:  # the field's value; an error of the whole event names its fields
                    msg += f" (got {err.get('input')!r})"
                problems.append((where, msg))
    seen: dict[str, int] = {}
    for i, ev in enumerate(events):  # the later one silently replaced the earlier before
        if (first := seen.setdefault(ev.id, i)) != i:
            problems.append((f"[{i}].id", f"{ev.id!r} is also event [{first}]'s; ids are unique"))
    if problems:
        raise ConfigError(source, problems)
    return events


def events_from_power_trace(
    path: str | Path,
    start: datetime,
    scale_kw: float,
    step_s: int = 900,
    baseline_minutes: int = 15,
    threshold: float = 0.98,
) -> list[GridEvent]:
    """Replay a measured DR event's shape as import caps.

    ``path`` is a CSV of ``timestamp`` (ISO 8601 with offset) and ``total`` (W), such as
    the Salt River Project event in ../shared/data. Power is taken relative to its
    median over the first ``baseline_minutes``; each ``step_s`` bucket whose mean falls
    below ``threshold`` of it becomes a curtail event capping import at that share of
    ``scale_kw``, placed so the trace begins at ``start``.
    """
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except FileNotFoundError:
        raise ConfigError(str(p), [("(file)", "not found")]) from None
    for col in ("timestamp", "total"):
        if col not in df.columns:
            raise ConfigError(str(p), [(col, f"column missing; columns are {list(df.columns)}")])
    ts = pd.to_datetime(df["timestamp"], errors="coerce", utc=True)
    power = pd.to_numeric(df["total"], errors="coerce")
    bad = ts.isna() | power.isna()
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2
        raise ConfigError(str(p), [(f"line {line}", "timestamp or total is not readable")])
    if start.tzinfo is None:
        raise ConfigError("events", [("start", "needs a UTC offset")])
    offset = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    base = float(power[offset < baseline_minutes * 60].median())
    if not base > 0:
        raise ConfigError(str(p), [("total", "baseline power is not positive")])
    ratio = power.to_numpy() / base
    bucket = (offset // step_s).astype(int)
    events = []
    for b in sorted(set(bucket.tolist())):
        share = float(ratio[bucket == b].mean())
        if share < threshold:
            events.append(
                GridEvent(
                    id=f"{p.stem}-{b}",
                    type=EventType.CURTAIL,
                    start=start + timedelta(seconds=b * step_s),
                    duration=f"{step_s}s",
                    limit_kw=round(share * scale_kw, 3),
                    source=f"trace:{p.name}",
                )
            )
    return events


def load_events(path: str | Path) -> list[GridEvent]:
    p = Path(path)
    try:
        raw = json.loads(read_text(p))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(p), [(f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")]
        ) from None
    except RecursionError:
        raise ConfigError(str(p), [("(syntax)", TOO_DEEP)]) from None
    return parse_events(raw, str(p))
