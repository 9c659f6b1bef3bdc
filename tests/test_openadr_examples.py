"""Every example event of the OpenADR 3.1.0 User Guide, read from ../shared/openadr3 (skipped
when it is absent), and what gridsched does with it; and the enumerations of event interval
payload types, each of which is acted on or recorded."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.site import OpenADR, OpenADRResource
from scheduler.service.openadr import PAYLOAD_TYPES, Reading, read_notification

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "openadr3" / "3.1.0"
GUIDE = SPEC / "User_Guide.md"
ENUMS = SPEC / "enumerations" / "event-interval-payloads.schema.yaml"
NOW = datetime(2026, 8, 10, 17, 0, tzinfo=UTC)
_EXAMPLE = re.compile(
    r"```json\s*\n((?:(?!```).)*?)```\s*\n\s*<p align=\"center\">\s*Example ([0-9.\-]+):", re.S
)

BARE = OpenADR()
PRICED = OpenADR(units={"PRICE": "KWH"}, currency="USD")
METER = OpenADR(ven_name="VEN-99", resources=(OpenADRResource(name="meter"),))
MINERS = OpenADR(ven_name="v", resources=(OpenADRResource(name="miners", classes=("s19",)),))


def _examples() -> dict[str, dict[str, Any]]:
    """The User Guide's example events by number (a listed read: its first object)."""
    if not GUIDE.exists():
        return {}
    out = {}
    for m in _EXAMPLE.finditer(GUIDE.read_text()):
        body = json.loads(m.group(1))
        obj = body[0] if isinstance(body, list) else body
        if "eventName" in obj or "intervals" in obj:
            out[m.group(2)] = obj
    return out


EXAMPLES = _examples()


def _read(example: str, site: OpenADR) -> Reading:
    obj = {"id": "ug-" + example.replace(".", "-"), **EXAMPLES[example]}
    return read_notification(
        {"objectType": "EVENT", "operation": "CREATE", "object": obj}, NOW, site
    )


def acted(r: Reading, reports: bool = True) -> list[tuple[str, bool]]:
    return [
        (p.payload_type, p.acted)
        for p in r.payloads
        if reports or p.payload_type != "reportDescriptors"
    ]


def of(r: Reading, kind: str, *keys: str) -> list[tuple[Any, ...]]:
    """(start, end, key values...) of the events of one type, times shortened to HH:MM."""
    return [
        (e["start"][11:16], e["end"][11:16] if "end" in e else "-", *(e.get(k) for k in keys))
        for e in r.events
        if e["type"] == kind
    ]


def only_cancel(r: Reading) -> bool:
    return [e["type"] for e in r.events] == ["cancel"] and r.events[0]["id"].endswith(":*")


NO_UNITS = [("PRICE", False)]
Check = Callable[[], None]


def _checks() -> dict[str, Check]:
    def c_7_2_3() -> None:  # no payload descriptor: a price of unknown units is not guessed
        r = _read("7.2-3", BARE)
        assert acted(r) == NO_UNITS and of(r, "notice") == [("00:00", "01:00")]
        assert of(_read("7.2-3", PRICED), "price", "price") == [("00:00", "01:00", 170.0)]

    def c_7_2_4() -> None:
        assert acted(_read("7.2-4", BARE)) == NO_UNITS

    def c_7_3_1() -> None:  # three prices over PT3H: one an hour
        r = _read("7.3-1", BARE)
        got = [(s, e, round(p, 6)) for s, e, p in of(r, "price", "price")]
        assert got == [
            ("00:00", "01:00", 170.0),
            ("01:00", "02:00", 30.0),
            ("02:00", "03:00", 110.0),
        ]

    def c_7_4_1() -> None:  # the second interval's own duration, following the first
        r = _read("7.4-1", PRICED)
        assert of(r, "price", "price") == [("00:00", "01:00", 170.0), ("01:00", "03:00", 220.0)]
        assert acted(_read("7.4-1", BARE)) == NO_UNITS * 2

    def c_7_6_1() -> None:
        r = _read("7.6-1", BARE)
        assert acted(r) == [("PRICE", True), ("GHG", False)]
        assert of(r, "price", "price") == [("00:00", "01:00", 170.0)]

    def c_7_7_1() -> None:  # a report is asked for: recorded as not sent
        assert acted(_read("7.7-1", BARE)) == [*NO_UNITS, ("reportDescriptors", False)]

    def c_8_1_1() -> None:
        r = _read("8.1-1", BARE)
        assert acted(r) == [("ALERT_GRID_EMERGENCY", True)]
        assert of(r, "alert", "detail") == [
            ("00:00", "04:00", "The grid is currently under emergency conditions")
        ]

    def c_8_2_1() -> None:
        assert of(_read("8.2-1", BARE), "curtail", "level") == [("00:00", "04:00", 1)]

    def c_8_3_2() -> None:
        r = _read("8.3-2", BARE)
        assert of(r, "price", "price") == [("00:00", "01:00", 170.0), ("01:00", "02:00", 30.0)]

    def c_8_4_2() -> None:
        assert acted(_read("8.4-2", BARE)) == [("CURVE", False)]

    def c_8_5_1() -> None:  # a setpoint of 0 kW: for the meter resource, a cap at 0
        assert acted(_read("8.5-1", BARE)) == [("DISPATCH_SETPOINT", False)]
        r = _read("8.5-1", METER)
        assert of(r, "curtail", "limit_kw") == [("00:00", "04:00", 0.0)]

    def c_report_only(example: str) -> Check:
        def check() -> None:
            r = _read(example, BARE)
            assert only_cancel(r)
            assert {p.payload_type for p in r.payloads} <= {"reportDescriptors"}

        return check

    def c_8_9_3_1() -> None:  # a setpoint for one resource caps its classes, not the site
        r = _read("8.9.3-1", MINERS)
        assert acted(r) == [("DISPATCH_SETPOINT", True)]
        assert of(r, "curtail", "limit_kw") == [("00:00", "-", 0.5)]
        assert [e["classes"] for e in r.events if e["type"] == "curtail"] == [["s19"]]
        r = _read("8.9.3-1", METER)
        assert of(r, "curtail", "limit_kw") == [("00:00", "-", 0.5)]

    def c_8_9_3_2() -> None:
        assert acted(_read("8.9.3-2", BARE)) == [("CONTROL_SETPOINT", False)]

    def c_8_9_3_3() -> None:
        assert acted(_read("8.9.3-3", BARE)) == [
            ("CONTROL_SETPOINT", False),
            ("reportDescriptors", False),
        ]

    def c_8_10_1_1() -> None:  # import limits act; export limits are recorded
        r = _read("8.10.1-1", BARE)
        assert of(r, "curtail", "limit_kw") == [("00:00", "00:30", 10.0), ("00:30", "01:00", 8.0)]
        assert sorted(set(acted(r, reports=False))) == [
            ("EXPORT_CAPACITY_LIMIT", False),
            ("IMPORT_CAPACITY_LIMIT", True),
        ]
        assert len(r.payloads) == 4 + 3  # and the three reports asked for

    def c_8_10_2_1() -> None:  # CAPACITY_SUBSCRIPTION is not an enumerated name: private
        r = _read("8.10.2-1", BARE)
        assert acted(r) == [("CAPACITY_SUBSCRIPTION", False)]
        assert "private" in r.payloads[0].reason  # type: ignore[operator]

    def c_8_10_2_4() -> None:  # zero-length interval: nothing in force
        r = _read("8.10.2-4", METER)
        assert {p.acted for p in r.payloads} == {False}
        assert all(e["type"] == "cancel" for e in r.events)

    def c_8_10_2_5() -> None:  # targets VEN-99: without a ven_name they cannot be matched
        r = _read("8.10.2-5", BARE)
        got = [p.reason or "" for p in r.payloads if p.payload_type != "reportDescriptors"]
        assert len(got) == 2 and all("ven_name" in why for why in got)
        r = _read("8.10.2-5", METER)
        got = [p.reason or "" for p in r.payloads if p.payload_type != "reportDescriptors"]
        assert len(got) == 2 and all("private" in why for why in got)
        assert of(r, "notice")[0] == ("00:00", "01:00")

    def c_8_12_1() -> None:
        r = _read("8.12-1", BARE)
        assert acted(r) == [("DISPATCH_INSTRUCTION", False)]
        assert of(r, "notice") == [("19:00", "21:00")]

    def c_8_12_2() -> None:  # the updated event: its second interval follows the first
        r = _read("8.12-2", BARE)
        assert of(r, "notice") == [("19:00", "20:00"), ("20:00", "22:00")]

    def c_targets_only(example: str) -> Check:
        def check() -> None:
            r = _read(example, BARE)
            assert only_cancel(r) and r.payloads == []

        return check

    checks: dict[str, Check] = {
        "7.2-3": c_7_2_3,
        "7.2-4": c_7_2_4,
        "7.3-1": c_7_3_1,
        "7.4-1": c_7_4_1,
        "7.6-1": c_7_6_1,
        "7.7-1": c_7_7_1,
        "8.1-1": c_8_1_1,
        "8.2-1": c_8_2_1,
        "8.3-2": c_8_3_2,
        "8.4-2": c_8_4_2,
        "8.5-1": c_8_5_1,
        "8.9.3-1": c_8_9_3_1,
        "8.9.3-2": c_8_9_3_2,
        "8.9.3-3": c_8_9_3_3,
        "8.10.1-1": c_8_10_1_1,
        "8.10.2-1": c_8_10_2_1,
        "8.10.2-4": c_8_10_2_4,
        "8.10.2-5": c_8_10_2_5,
        "8.12-1": c_8_12_1,
        "8.12-2": c_8_12_2,
    }
    for ex in ("8.6-1", "8.7-1", "8.8-1", "8.10.2-2"):
        checks[ex] = c_report_only(ex)
    for ex in ("8.13-4", "8.13-5", "8.13-6"):
        checks[ex] = c_targets_only(ex)
    return checks


CHECKS = _checks()
needs_spec = pytest.mark.skipif(not GUIDE.exists(), reason="../shared/openadr3 is absent")


@needs_spec
def test_every_example_event_of_the_user_guide_has_a_check() -> None:
    assert len(EXAMPLES) >= 20
    assert sorted(EXAMPLES) == sorted(CHECKS)


@needs_spec
@pytest.mark.parametrize("example", sorted(CHECKS))
def test_user_guide_example(example: str) -> None:
    if example not in EXAMPLES:
        pytest.fail(f"example {example} is no longer in the User Guide")
    CHECKS[example]()


@pytest.mark.skipif(not ENUMS.exists(), reason="../shared/openadr3 is absent")
def test_every_enumerated_payload_type_is_acted_on_or_recorded() -> None:
    # each definition: its name at four spaces, then its items' JSON type
    blocks = re.split(r"^    ([A-Z0-9_]+):\n", ENUMS.read_text(), flags=re.M)[1:]
    defs = {
        name: (m.group(1) if (m := re.search(r"^ {12}type: (\w+)", body, re.M)) else None)
        for name, body in zip(blocks[::2], blocks[1::2], strict=True)
    }
    assert set(defs) == set(PAYLOAD_TYPES)
    site = OpenADR(ven_name="v", units={"DISPATCH_SETPOINT": "KW"}, currency="USD",
                   resources=(OpenADRResource(name="meter"),))  # fmt: skip
    for kind, item_type in defs.items():
        sample: Any = {"string": "text", "integer": 1}.get(item_type or "", 1.0)
        if kind == "CURVE":
            sample = [{"x": 1.0, "y": 2.0}]
        obj = {
            "id": "e",
            "intervalPeriod": {"start": "2026-08-10T18:00:00Z", "duration": "PT1H"},
            "payloadDescriptors": [{"payloadType": "PRICE", "units": "KWH"}],
            "intervals": [{"id": 0, "payloads": [{"type": kind, "values": [sample]}]}],
        }
        r = read_notification(
            {"objectType": "EVENT", "operation": "CREATE", "object": obj}, NOW, site
        )
        (outcome,) = r.payloads
        assert outcome.acted is PAYLOAD_TYPES[kind].acts, kind
        events = [e for e in r.events if e["type"] != "cancel"]
        assert events and all(e["payload_type"] == kind for e in events), kind
        if not outcome.acted:
            assert [e["type"] for e in events] == ["notice"] and outcome.reason, kind


V301 = SPEC.parent / "3.0.1" / "openadr3.yaml"


@pytest.mark.skipif(not V301.exists(), reason="../shared/openadr3 is absent")
@pytest.mark.parametrize("version", ["3.0.1", "3.1.0"])
def test_the_test_notifications_are_valid_for_their_version(version: str) -> None:
    """The notifications the version tests send are what that version's OpenAPI definition
    allows (the event against components/schemas/event, the operation against its enum)."""
    yaml = pytest.importorskip("yaml")
    oas = pytest.importorskip("openapi_schema_validator")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    from tests.test_openadr import v301_notification, v310_notification

    spec = yaml.safe_load((SPEC.parent / version / "openadr3.yaml").read_text())
    registry = Registry().with_resource(
        "urn:oadr", Resource.from_contents(spec, default_specification=DRAFT4)
    )
    body = v301_notification() if version == "3.0.1" else v310_notification()
    ops = spec["components"]["schemas"]["notification"]["properties"]["operation"]["enum"]
    assert body["operation"] in ops
    event = oas.OAS30Validator({"$ref": "urn:oadr#/components/schemas/event"}, registry=registry)
    assert [e.message for e in event.iter_errors(body["object"])] == []
    assert read_notification(body, NOW, MINERS).events
