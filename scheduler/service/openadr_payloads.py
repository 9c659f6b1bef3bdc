"""What gridsched does with each OpenADR 3 event interval payload type.

Every type of the OpenADR 3.1.0 enumerations (Definition, "Event Payload Enumerations", and
the specification's JSON schema of them) is either acted on or recorded as a ``notice`` with
the reason; a private type (any other name) is recorded too. Nothing is dropped.
``interpret`` turns one payload into event fields, one dict per value where several values
are sub-intervals (User Guide 7.3, "multi-valued payloads").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.site import OpenADR, OpenADRResource


class PayloadError(ValueError):
    """A payload whose values the specification does not allow; ``where`` names them."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.reason = message


@dataclass(frozen=True)
class Handling:
    does: str  # what gridsched does with it (the docs table reads this)
    spec: str  # where the specification defines or explains it
    acts: bool = False


_DEF = "Definition, Event Payload Enumerations"
_NOT_MODELLED = "not acted on"

PAYLOAD_TYPES: dict[str, Handling] = {
    "SIMPLE": Handling(
        "a level cap from `[tariff] dr_levels_kw` (0: none) for the site, or for a resource"
        " standing for the whole site",
        f"{_DEF}; User Guide 8.2",
        True,
    ),
    "PRICE": Handling(
        "a price override in USD/MWh from the descriptor's `units` (KWH, MWH) and `currency`"
        " (USD); without them, or in another currency, a notice",
        f"{_DEF}; User Guide 7.3, 7.6, 8.3",
        True,
    ),
    "PRICE_ALTERNATE": Handling(f"{_NOT_MODELLED} (a second form of energy)", _DEF),
    "CHARGE_STATE_SETPOINT": Handling(f"{_NOT_MODELLED} (no storage)", _DEF),
    "DISPATCH_SETPOINT": Handling(
        "an import cap (kW) for a resource standing for the whole site; for a resource"
        " covering some device classes, a cap on those classes' power at the meter"
        " (PUE included), other classes free",
        f"{_DEF}; User Guide 8.5, 8.9.3",
        True,
    ),
    "DISPATCH_SETPOINT_RELATIVE": Handling(f"{_NOT_MODELLED} (needs a baseline)", _DEF),
    "DISPATCH_INSTRUCTION": Handling(
        f"{_NOT_MODELLED} (meaning agreed out of band)", f"{_DEF}; User Guide 8.12"
    ),
    "CONTROL_SETPOINT": Handling(
        f"{_NOT_MODELLED} (program-defined meaning)", f"{_DEF}; User Guide 8.9.3"
    ),
    "CONTROL_LEVEL_OFFSET": Handling(f"{_NOT_MODELLED} (no load per level)", _DEF),
    "CONTROL_LEVEL_OFFSET_PERCENT": Handling(f"{_NOT_MODELLED} (no load per level)", _DEF),
    "EXPORT_PRICE": Handling(f"{_NOT_MODELLED} (export is not planned)", _DEF),
    "GHG": Handling(f"{_NOT_MODELLED} (no emissions objective)", f"{_DEF}; User Guide 7.6"),
    "CURVE": Handling(f"{_NOT_MODELLED} (inverter curves)", f"{_DEF}; User Guide 8.4"),
    "OLS": Handling(f"{_NOT_MODELLED} (optimum load shape)", _DEF),
    "IMPORT_CAPACITY_LIMIT": Handling(
        "an import cap for the site, in the descriptor's `units` (KW; W, MW scaled; none: kW"
        " as User Guide 8.10.1 announces them); other units, a notice",
        f"{_DEF}; User Guide 8.10.1",
        True,
    ),
    "EXPORT_CAPACITY_LIMIT": Handling(
        f"{_NOT_MODELLED} (export is not planned)", f"{_DEF}; User Guide 8.10.1"
    ),
    "ALERT_GRID_EMERGENCY": Handling(
        "an alert: shed to `dr_levels_kw.3` (or the protected load)",
        f"{_DEF}; User Guide 8.1",
        True,
    ),
    "ALERT_BLACK_START": Handling(
        'an alert ("devices should minimize electricity use"): shed as above', _DEF, True
    ),
    "ALERT_POSSIBLE_OUTAGE": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_FLEX_ALERT": Handling(
        'an alert ("devices that can shed should do so during the event"): shed as above',
        _DEF,
        True,
    ),
    "ALERT_FIRE": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_FREEZING": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_WIND": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_TSUNAMI": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_AIR_QUALITY": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "ALERT_OTHER": Handling(f"{_NOT_MODELLED} (information)", _DEF),
    "CTA2045_REBOOT": Handling(f"{_NOT_MODELLED} (CTA-2045 pass-through)", _DEF),
    "CTA2045_SET_OVERRIDE_STATUS": Handling(f"{_NOT_MODELLED} (CTA-2045 pass-through)", _DEF),
}
for _kind in ("SUBSCRIPTION", "RESERVATION", "RESERVATION_FEE", "AVAILABLE", "AVAILABLE_PRICE"):
    for _way in ("IMPORT", "EXPORT"):
        PAYLOAD_TYPES[f"{_way}_CAPACITY_{_kind}"] = Handling(
            f"{_NOT_MODELLED} (capacity subscriptions and reservations are not modelled)",
            f"{_DEF}; User Guide 8.10.2",
        )
PRIVATE = Handling(
    f"{_NOT_MODELLED} (a private type)", "Definition, valuesMap: enumerated or private strings"
)

ALERTS_ACTED = ("ALERT_GRID_EMERGENCY", "ALERT_BLACK_START", "ALERT_FLEX_ALERT")
#: units a descriptor may leave out: User Guide 8.10.1 announces capacity limits in kW
SPEC_DEFAULT_UNITS = {"IMPORT_CAPACITY_LIMIT": "KW"}
_KW_PER_UNIT = {"KW": 1.0, "W": 0.001, "MW": 1000.0}
_PER_MWH = {"KWH": 1000.0, "MWH": 1.0, "WH": 1e6}


@dataclass(frozen=True)
class Scope:
    """Whom an event addresses here (its ``targets`` matched against this VEN)."""

    ours: bool
    why_not: str | None  # when not ours
    whole_ven: bool  # addressed to this VEN as a whole (no resource targets)
    resources: tuple[OpenADRResource, ...]  # those it is for (with whole_ven: all declared)


@dataclass(frozen=True)
class Part:
    """One payload read: event fields per sub-interval (one dict: the whole interval)."""

    fields: list[dict[str, Any]]
    acted: bool
    suffix: str = ""  # a resource's part of the payload

    @property
    def reason(self) -> str | None:
        return None if self.acted else str(self.fields[0]["detail"])


def notice(reason: str, suffix: str = "") -> Part:
    return Part([{"type": "notice", "detail": reason[:1000]}], False, suffix)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PayloadError(where, f"expected a number, got {v!r}")
    return float(v)


def _shown(values: list[Any]) -> str:
    text = ", ".join(repr(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    return f"[{text}]"


def interpret(
    kind: str,
    values: list[Any],
    desc: dict[str, Any],
    site: OpenADR,
    scope: Scope,
    bounded: bool,
    where: str,
) -> list[Part]:
    """The parts one payload makes. ``desc`` is its payloadDescriptor ({} when none);
    ``bounded``: the interval has a finite duration (several values can be split)."""
    handling = PAYLOAD_TYPES.get(kind, PRIVATE)
    if not scope.ours:
        return [notice(f"{kind} {_shown(values)}: {scope.why_not}")]
    if not handling.acts:
        return [notice(f"{kind} {_shown(values)}: {handling.does}")]
    if kind in ALERTS_ACTED:
        text = "; ".join(str(v) for v in values)[:1000] or kind
        return [Part([{"type": "alert", "detail": text}], True)]
    if not values:
        raise PayloadError(where, f"{kind} needs at least one value")
    if len(values) > 1 and not bounded:
        return [
            notice(
                f"{kind} {_shown(values)}: {len(values)} values over an interval without end"
                " cannot be split into sub-intervals (User Guide 7.3)"
            )
        ]
    if kind == "SIMPLE":
        return _simple(values, scope, where)
    if kind == "PRICE":
        return [_price(values, desc, site, where)]
    kw = _power_kw(kind, values, desc, site, where)
    if isinstance(kw, Part):
        return [kw]
    fields = [{"type": "curtail", "limit_kw": v} for v in kw]
    if kind == "IMPORT_CAPACITY_LIMIT":  # "the maximum import level for the site"
        return [Part(fields, True)]
    # DISPATCH_SETPOINT: "the absolute amount of consumption by a resource"
    if not scope.resources:
        return [
            notice(
                f"{kind} {_shown(values)}: sets one resource's consumption; no"
                " [[openadr.resources]] are declared to say which device classes it covers"
            )
        ]
    # a resource standing for the whole site caps import; one covering some device classes
    # caps their power at the meter (GridEvent.classes), and only theirs
    return [
        Part([{**f, "classes": list(r.classes)} for f in fields] if r.classes else fields,
             True, r.name)
        for r in scope.resources
    ]  # fmt: skip


def _per_class(kind: str, values: list[Any], r: OpenADRResource) -> Part:
    return notice(
        f"{kind} {_shown(values)} for resource {r.name} (device classes"
        f" {', '.join(r.classes)}): a level's kW (tariff.dr_levels_kw) is a cap on the site's"
        " import, not on some classes' power; not applied to the whole site",
        r.name,
    )


def _simple(values: list[Any], scope: Scope, where: str) -> list[Part]:
    levels = []
    for j, v in enumerate(values):
        level = _number(v, f"{where}[{j}]")
        if level not in (0, 1, 2, 3):
            raise PayloadError(f"{where}[{j}]", f"SIMPLE level {v!r}: valid are 0, 1, 2, 3")
        levels.append(int(level))
    fields = [{"type": "curtail", "level": lv} for lv in levels]
    if scope.whole_ven or any(not r.classes for r in scope.resources):
        return [Part(fields, True)]
    return [_per_class("SIMPLE", values, r) for r in scope.resources]


def _price(values: list[Any], desc: dict[str, Any], site: OpenADR, where: str) -> Part:
    units = desc.get("units") or site.units.get("PRICE")
    currency = desc.get("currency") or site.currency
    prices = [_number(v, f"{where}[{j}]") for j, v in enumerate(values)]
    head = f"PRICE {_shown(values)}"
    if units is None:
        return notice(
            f"{head}: no units (the payload descriptor has none, and the specification gives"
            " no default); declare the program's in [openadr] units"
        )
    per = _PER_MWH.get(str(units).upper())
    if per is None:
        return notice(f"{head}: units {units!r} are not energy gridsched buys (KWH, MWH)")
    if currency is None:
        return notice(f"{head}: no currency; declare the program's in [openadr] currency")
    if str(currency).upper() != "USD":
        return notice(f"{head}: currency {currency!r}; gridsched plans in USD only")
    return Part([{"type": "price", "price": p * per} for p in prices], True)


def _power_kw(
    kind: str, values: list[Any], desc: dict[str, Any], site: OpenADR, where: str
) -> list[float] | Part:
    units = desc.get("units") or site.units.get(kind) or SPEC_DEFAULT_UNITS.get(kind)
    out = []
    for j, v in enumerate(values):
        x = _number(v, f"{where}[{j}]")
        if x < 0:
            raise PayloadError(f"{where}[{j}]", f"{kind} {x}: a limit must be >= 0")
        out.append(x)
    if units is None:
        return notice(
            f"{kind} {_shown(values)}: no units (the payload descriptor has none); declare"
            " the program's in [openadr] units"
        )
    scale = _KW_PER_UNIT.get(str(units).upper())
    if scale is None:
        return notice(
            f"{kind} {_shown(values)}: units {units!r} cannot be read as power in kW"
            " (KW, W, MW); not acted on rather than guessed"
        )
    return [x * scale for x in out]
