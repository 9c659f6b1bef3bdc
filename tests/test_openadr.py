"""OpenADR 3 events read as the specification means them (3.1.0 User Guide section 7, the
event interval payload enumerations), one test per way they were misread."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.site import OpenADR, OpenADRResource
from scheduler.service.openadr import (
    PAYLOAD_TYPES,
    OpenADRError,
    Programs,
    notification_to_events,
    parse_iso_duration,
    read_notification,
)

NOW = datetime(2026, 8, 10, 17, 0, tzinfo=UTC)
T0 = "2026-08-10T18:00:00Z"
KW = [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}]
PRICE_KWH = [{"payloadType": "PRICE", "units": "KWH", "currency": "USD"}]


def note(obj: dict[str, Any], op: str = "CREATE") -> dict[str, Any]:
    return {"objectType": "EVENT", "operation": op, "object": {"id": "e1", "programID": "p", **obj}}


def kinds(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["type"] == kind]


def at(hours: float) -> str:
    return (datetime(2026, 8, 10, 18, 0, tzinfo=UTC) + timedelta(hours=hours)).isoformat()


# -- 1. several values in one interval are sub-intervals (User Guide 7.3, example 7.3-1) --------


def test_a_multi_valued_price_is_one_price_per_sub_interval() -> None:
    evs = notification_to_events(
        note(
            {
                "payloadDescriptors": PRICE_KWH,
                "intervals": [
                    {
                        "id": 0,
                        "intervalPeriod": {"start": T0, "duration": "PT3H"},
                        "payloads": [{"type": "PRICE", "values": [0.17, 0.03, 0.11]}],
                    }
                ],
            }
        ),
        NOW,
    )
    prices = kinds(evs, "price")
    assert [round(e["price"], 6) for e in prices] == [170.0, 30.0, 110.0]
    assert [(e["start"], e["end"]) for e in prices] == [(at(k), at(k + 1)) for k in range(3)]
    assert len({e["id"] for e in prices}) == 3


# -- 2. units and descriptor defaults -------------------------------------------------------------


def test_a_limit_in_percent_is_not_taken_for_kw() -> None:
    evs = notification_to_events(
        note(
            {
                "payloadDescriptors": [
                    {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "PERCENT"}
                ],
                "intervalPeriod": {"start": T0, "duration": "PT1H"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [0.5]}]}
                ],
            }
        ),
        NOW,
    )
    assert kinds(evs, "curtail") == []
    (n,) = kinds(evs, "notice")
    assert n["payload_type"] == "IMPORT_CAPACITY_LIMIT" and "PERCENT" in n["detail"]
    assert (n["start"], n["end"]) == (at(0), at(1))


def test_a_price_without_units_is_not_assumed_per_kwh() -> None:
    obj = {
        "intervalPeriod": {"start": T0, "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [150]}]}],
    }
    evs = notification_to_events(note(obj), NOW)
    assert kinds(evs, "price") == []
    (n,) = kinds(evs, "notice")
    assert n["payload_type"] == "PRICE" and "units" in n["detail"]
    # the program's descriptor, declared in the site file, supplies them
    site = OpenADR(units={"PRICE": "MWH"}, currency="USD")
    (p,) = kinds(notification_to_events(note(obj), NOW, site), "price")
    assert p["price"] == pytest.approx(150.0)
    # a currency gridsched cannot convert is recorded, not guessed
    eur = {
        **obj,
        "payloadDescriptors": [{"payloadType": "PRICE", "units": "KWH", "currency": "EUR"}],
    }
    evs = notification_to_events(note(eur), NOW, site)
    assert kinds(evs, "price") == [] and "EUR" in kinds(evs, "notice")[0]["detail"]


def test_limits_in_kw_are_the_user_guides_capacity_unit() -> None:
    # User Guide 8.10.1: capacity limits are announced "in units of kW"
    obj = {
        "intervalPeriod": {"start": T0, "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [120]}]}],
    }
    (c,) = kinds(notification_to_events(note(obj), NOW), "curtail")
    assert c["limit_kw"] == 120
    (c,) = kinds(notification_to_events(note({**obj, "payloadDescriptors": KW}), NOW), "curtail")
    assert c["limit_kw"] == 120


# -- 3. several payloads in one interval ----------------------------------------------------------


def test_every_payload_of_an_interval_counts() -> None:
    evs = notification_to_events(
        note(
            {
                "payloadDescriptors": PRICE_KWH + KW,
                "intervalPeriod": {"start": T0, "duration": "PT1H"},
                "intervals": [
                    {
                        "id": 0,
                        "payloads": [
                            {"type": "PRICE", "values": [0.2]},
                            {"type": "IMPORT_CAPACITY_LIMIT", "values": [300]},
                        ],
                    }
                ],
            }
        ),
        NOW,
    )
    (p,) = kinds(evs, "price")
    (c,) = kinds(evs, "curtail")
    assert p["price"] == pytest.approx(200.0) and c["limit_kw"] == 300
    assert p["id"] != c["id"] and c["start"] == p["start"] == at(0)


# -- 4. interval and event periods ----------------------------------------------------------------


def test_a_later_interval_starting_0001_01_01_follows_the_previous_one() -> None:
    evs = notification_to_events(
        note(
            {
                "payloadDescriptors": KW,
                "intervals": [
                    {
                        "id": 0,
                        "intervalPeriod": {"start": T0, "duration": "PT1H"},
                        "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300]}],
                    },
                    {
                        "id": 1,
                        "intervalPeriod": {"start": "0001-01-01", "duration": "PT30M"},
                        "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [200]}],
                    },
                    {
                        "id": 2,
                        "intervalPeriod": {"duration": "PT2H"},
                        "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [100]}],
                    },
                ],
            }
        ),
        NOW,
    )
    spans = [(e["limit_kw"], e["start"], e["end"]) for e in kinds(evs, "curtail")]
    assert spans == [(300, at(0), at(1)), (200, at(1), at(1.5)), (100, at(1.5), at(3.5))]


def test_the_event_duration_loops_or_cuts_the_intervals() -> None:
    obj = {
        "payloadDescriptors": KW,
        "intervalPeriod": {"start": T0, "duration": "PT1H"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300]}]},
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [200]}]},
        ],
    }
    looped = kinds(notification_to_events(note({**obj, "duration": "PT5H"}), NOW), "curtail")
    assert [(e["limit_kw"], e["start"], e["end"]) for e in looped] == [
        (300, at(0), at(1)),
        (200, at(1), at(2)),
        (300, at(2), at(3)),
        (200, at(3), at(4)),
        (300, at(4), at(5)),
    ]
    cut = kinds(notification_to_events(note({**obj, "duration": "PT90M"}), NOW), "curtail")
    assert [(e["limit_kw"], e["start"], e["end"]) for e in cut] == [
        (300, at(0), at(1)),
        (200, at(1), at(1.5)),
    ]
    # P9999Y: repeated indefinitely; what lies beyond the expansion horizon is said, not lost
    forever = read_notification(note({**obj, "duration": "P9999Y"}), NOW)
    caps = kinds(forever.events, "curtail")
    assert len(caps) > 48 and caps[0]["start"] == at(0)
    assert any("loop" in (e.get("detail") or "") for e in kinds(forever.events, "notice"))


# -- 5. targets and randomizeStart ----------------------------------------------------------------

SITE = OpenADR(
    ven_name="ven_0999",
    targets=("group1",),
    resources=(
        OpenADRResource(name="meter", targets=("resource_meter",)),
        OpenADRResource(name="RESOURCE_0999", targets=("resource_0999",), classes=("s19",)),
    ),
)
CAP = {
    "payloadDescriptors": KW,
    "intervalPeriod": {"start": T0, "duration": "PT1H"},
    "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300]}]}],
}


@pytest.mark.parametrize(
    ("targets", "ours"),
    [
        (None, True),
        (["ven_0999"], True),
        (["group1"], True),
        (["resource_meter"], True),
        (["ven_0998"], False),
        (["areaY", "group2"], False),
        # 3.0.1: targets are valuesMaps
        ([{"type": "VEN_NAME", "values": ["ven_0999"]}], True),
        ([{"type": "VEN_NAME", "values": ["ven_0998"]}], False),
        ([{"type": "RESOURCE_NAME", "values": ["RESOURCE_0999"]}], True),
        ([{"type": "GROUP", "values": ["group1"]}], True),
    ],
)
def test_targets_are_matched_against_this_ven_and_its_resources(
    targets: list[Any] | None, ours: bool
) -> None:
    evs = notification_to_events(note({**CAP, "targets": targets}), NOW, SITE)
    assert bool(kinds(evs, "curtail")) is ours
    if not ours:
        (n,) = kinds(evs, "notice")
        assert "targets" in n["detail"] and "ven_0999" in n["detail"]


def test_targets_cannot_be_matched_without_a_ven_name() -> None:
    evs = notification_to_events(note({**CAP, "targets": ["ven_0999"]}), NOW)
    assert kinds(evs, "curtail") == []
    assert "ven_name" in kinds(evs, "notice")[0]["detail"]


def test_randomize_start_shifts_every_interval_alike_within_the_bound() -> None:
    obj = {
        "payloadDescriptors": KW,
        "intervalPeriod": {"start": T0, "duration": "PT1H", "randomizeStart": "PT10M"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300]}]},
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [200]}]},
        ],
    }
    first = kinds(notification_to_events(note(obj), NOW, SITE), "curtail")
    again = kinds(notification_to_events(note(obj), NOW, SITE), "curtail")
    assert first == again  # a redelivery lands on the same times
    t0 = datetime.fromisoformat(at(0))
    shift = datetime.fromisoformat(first[0]["start"]) - t0
    assert timedelta(minutes=-10) <= shift <= timedelta(minutes=10) and shift != timedelta(0)
    assert datetime.fromisoformat(first[1]["start"]) - t0 == shift + timedelta(hours=1)
    # the draw is injectable: a test can pin it
    pinned = read_notification(note(obj), NOW, SITE, jitter=lambda _key, bound: bound)
    assert kinds(pinned.events, "curtail")[0]["start"] == at(1 / 6)


# -- 6. setpoints go to the resource they name ----------------------------------------------------

SETPOINT = {  # User Guide example 8.9.3-1
    "intervalPeriod": {"start": "2023-02-10T00:00:00.000Z", "duration": "P9999Y"},
    "payloadDescriptors": [{"payloadType": "DISPATCH_SETPOINT", "units": "KW"}],
    "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [0.5]}]}],
}


def test_a_dispatch_setpoint_for_one_resource_caps_its_classes_not_the_site() -> None:
    one = OpenADR(
        ven_name="v", resources=(OpenADRResource(name="RESOURCE_0999", classes=("s19",)),)
    )
    evs = notification_to_events(note(SETPOINT), NOW, one)
    (c,) = kinds(evs, "curtail")
    assert c["limit_kw"] == 0.5 and c["classes"] == ["s19"] and c["id"].endswith("/RESOURCE_0999")
    assert kinds(evs, "notice") == []
    # a SIMPLE level for that resource: a level's kW is the site's, so it is recorded only
    simple = {
        "targets": ["RESOURCE_0999"],
        "intervalPeriod": SETPOINT["intervalPeriod"],
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
    }
    evs = notification_to_events(note(simple), NOW, one)
    assert kinds(evs, "curtail") == []
    (n,) = kinds(evs, "notice")
    assert "RESOURCE_0999" in n["detail"] and "s19" in n["detail"]
    # no resources declared: which resource the setpoint is for is not known
    evs = notification_to_events(note(SETPOINT), NOW)
    assert kinds(evs, "curtail") == [] and "resources" in kinds(evs, "notice")[0]["detail"]


def test_a_dispatch_setpoint_for_the_whole_site_resource_caps_import() -> None:
    evs = notification_to_events(note({**SETPOINT, "targets": ["resource_meter"]}), NOW, SITE)
    (c,) = kinds(evs, "curtail")
    assert c["limit_kw"] == 0.5 and "end" not in c
    assert kinds(evs, "notice") == []  # the event names only the meter resource
    evs = notification_to_events(note(SETPOINT), NOW, SITE)  # to every resource: each capped
    got = [(c["limit_kw"], c.get("classes")) for c in kinds(evs, "curtail")]
    assert sorted(got, key=str) == [(0.5, None), (0.5, ["s19"])]
    assert kinds(evs, "notice") == []


# -- 7. no payload type is dropped ----------------------------------------------------------------


def test_payloads_not_acted_on_are_recorded_with_the_reason() -> None:
    r = read_notification(
        note(
            {
                "payloadDescriptors": KW,
                "intervalPeriod": {"start": T0, "duration": "PT1H"},
                "intervals": [
                    {
                        "id": 0,
                        "payloads": [
                            {"type": "GHG", "values": [420.0]},
                            {"type": "ALERT_FIRE", "values": ["red flag warning"]},
                            {"type": "ALERT_FLEX_ALERT", "values": ["conserve 4-9 pm"]},
                            {"type": "X_UTILITY_PRIVATE", "values": [1]},
                        ],
                    }
                ],
            }
        ),
        NOW,
    )
    got = {(o.payload_type, o.acted) for o in r.payloads}
    assert got == {
        ("GHG", False),
        ("ALERT_FIRE", False),
        ("ALERT_FLEX_ALERT", True),
        ("X_UTILITY_PRIVATE", False),
    }
    notes = {e["payload_type"]: e for e in kinds(r.events, "notice")}
    assert set(notes) == {"GHG", "ALERT_FIRE", "X_UTILITY_PRIVATE"}
    assert "red flag warning" in notes["ALERT_FIRE"]["detail"]
    (alert,) = kinds(r.events, "alert")
    assert alert["payload_type"] == "ALERT_FLEX_ALERT" and alert["detail"] == "conserve 4-9 pm"
    assert all(o.reason for o in r.payloads if not o.acted)


def test_every_enumerated_payload_type_has_a_handling() -> None:
    # the 38 event interval payload types of the 3.1.0 Definition's enumerations
    assert len(PAYLOAD_TYPES) == 38
    for name, handling in PAYLOAD_TYPES.items():
        assert handling.does and handling.spec, name


# -- 3.0.1 notifications keep working -------------------------------------------------------------


def v301_notification() -> dict[str, Any]:
    """One event as a 3.0.1 VTN sends it: POST, targets as valuesMaps, no objectType in the
    descriptors."""
    return {
        "objectType": "EVENT",
        "operation": "POST",
        "object": {
            "id": "e301",
            "createdDateTime": "2026-08-10T16:00:00Z",
            "modificationDateTime": "2026-08-10T16:30:00Z",
            "programID": "p",
            "objectType": "EVENT",
            "priority": 3,
            "targets": [{"type": "VEN_NAME", "values": ["ven_0999"]}],
            "payloadDescriptors": PRICE_KWH + KW,
            "intervalPeriod": {"start": T0, "duration": "PT1H", "randomizeStart": "PT0S"},
            "intervals": [
                {
                    "id": 0,
                    "payloads": [
                        {"type": "PRICE", "values": [0.2]},
                        {"type": "IMPORT_CAPACITY_LIMIT", "values": [250]},
                    ],
                },
                {"id": 1, "payloads": [{"type": "SIMPLE", "values": [2]}]},
            ],
        },
    }


def v310_notification() -> dict[str, Any]:
    """The same event as a 3.1.0 VTN sends it: CREATE, targets as strings."""
    body = v301_notification()
    obj = body["object"]
    obj["targets"] = ["ven_0999"]
    obj["payloadDescriptors"] = [
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", **d} for d in obj["payloadDescriptors"]
    ]
    return {**body, "operation": "CREATE"}


@pytest.mark.parametrize("body", [v301_notification(), v310_notification()], ids=["3.0.1", "3.1.0"])
def test_3_0_1_and_3_1_0_notifications_are_read_alike(body: dict[str, Any]) -> None:
    evs = notification_to_events(body, NOW, SITE)
    assert evs[0] == {"id": "oadr:e301:*", "type": "cancel", "source": "openadr3"}
    (p,) = kinds(evs, "price")
    (c, s) = kinds(evs, "curtail")
    assert p["price"] == pytest.approx(200.0) and p["priority"] == -3
    assert c["limit_kw"] == 250 and (c["start"], c["end"]) == (at(0), at(1))
    assert s["level"] == 2 and (s["start"], s["end"]) == (at(1), at(2))
    gone = notification_to_events(
        {"objectType": "EVENT", "operation": "DELETE", "object": {"id": "e301"}}, NOW
    )
    assert gone == [{"id": "oadr:e301:*", "type": "cancel", "source": "openadr3"}]


# -- moved from test_signals_store.py: timing, cancels and errors ---------------------------------


def test_openadr_intervals_timing_and_payloads() -> None:
    evs = notification_to_events(
        note(
            {
                "priority": 2,
                "payloadDescriptors": PRICE_KWH,
                "intervalPeriod": {"start": "2026-08-10T17:00:00Z", "duration": "PT1H"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "PRICE", "values": [0.25]}]},
                    {"id": 1, "payloads": [{"type": "SIMPLE", "values": [2]}]},
                    {"id": 2, "payloads": [{"type": "ALERT_GRID_EMERGENCY", "values": []}]},
                    {"id": 3, "payloads": [{"type": "X_PRIVATE", "values": [1]}]},
                ],
            },
            op="POST",
        ),
        NOW,
    )
    assert evs[0] == {"id": "oadr:e1:*", "type": "cancel", "source": "openadr3"}
    price, simple, alert, private = evs[1:]
    assert price["type"] == "price" and price["price"] == pytest.approx(250.0)
    assert price["start"].startswith("2026-08-10T17:00") and price["end"].startswith(
        "2026-08-10T18:00"
    )
    assert simple["level"] == 2 and simple["start"].startswith("2026-08-10T18:00")
    assert alert["type"] == "alert" and price["priority"] == -2
    assert private["type"] == "notice" and private["payload_type"] == "X_PRIVATE"


def test_openadr_now_forever_delete_and_zero_length() -> None:
    base = note(
        {
            "id": "e2",
            "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"},
            "intervals": [
                {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1200]}]}
            ],
        }
    )
    ev = notification_to_events(base, NOW)[1]
    assert ev["start"] == NOW.isoformat() and "end" not in ev and ev["limit_kw"] == 1200
    gone = notification_to_events({**base, "operation": "DELETE"}, NOW)
    assert gone == [{"id": "oadr:e2:*", "type": "cancel", "source": "openadr3"}]
    zero = {
        **base,
        "object": {
            **base["object"],
            "intervalPeriod": {"start": "2026-08-10T17:00:00Z", "duration": "PT0S"},
        },
    }
    assert all(e["type"] == "cancel" for e in notification_to_events(zero, NOW))
    event_zero = {**base, "object": {**base["object"], "duration": "PT0S"}}  # 3.1.0
    assert all(e["type"] == "cancel" for e in notification_to_events(event_zero, NOW))
    assert notification_to_events({**base, "objectType": "PROGRAM"}, NOW) == []
    assert parse_iso_duration("PT1H30M", "d") == 5400 and parse_iso_duration("P9999Y", "d") is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"operation": "PATCH"}, "operation"),
        ({"object": {"id": "bad id!", "intervals": []}}, "object.id"),
        (
            {"object": {"id": "e", "intervalPeriod": {"start": "yesterday"}, "intervals": []}},
            "object.intervalPeriod.start",
        ),
        (
            {
                "object": {
                    "id": "e",
                    "intervalPeriod": {"start": T0, "duration": "PT1H"},
                    "intervals": [
                        {
                            "id": 0,
                            "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": ["lots"]}],
                        }
                    ],
                }
            },
            "object.intervals[0].payloads[0].values[0]",
        ),
        (
            {"object": {"id": "e", "targets": "ven_0999", "intervals": []}},
            "object.targets",
        ),
        (
            {
                "object": {
                    "id": "e",
                    "intervalPeriod": {"start": T0, "randomizeStart": "soon"},
                    "intervals": [],
                }
            },
            "object.intervalPeriod.randomizeStart",
        ),
    ],
)
def test_openadr_errors_name_the_field(patch: dict[str, object], field: str) -> None:
    body = {"objectType": "EVENT", "operation": "POST", "object": {"id": "e", "intervals": []}}
    with pytest.raises(OpenADRError) as exc:
        notification_to_events({**body, **patch}, NOW)
    assert exc.value.path == field


@pytest.mark.parametrize("kind", ["BANANA", "event", 5])
def test_an_object_type_the_spec_does_not_have_is_refused_by_name(kind: object) -> None:
    """The bad-input walk (session 23, L6): objectType "BANANA" was answered 200 accepted
    with no ids, as if it were a REPORT or a SUBSCRIPTION. The 3.0.1 and 3.1.0 schemas'
    objectTypes are PROGRAM, EVENT, REPORT, SUBSCRIPTION, VEN and RESOURCE."""
    body = {"objectType": kind, "operation": "CREATE", "object": {"id": "e", "intervals": []}}
    with pytest.raises(OpenADRError) as exc:
        notification_to_events(body, NOW)
    assert exc.value.path == "objectType"
    assert "PROGRAM, EVENT, REPORT, SUBSCRIPTION, VEN, RESOURCE" in str(exc.value)
    for fine in ("REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"):
        assert notification_to_events({**body, "objectType": fine}, NOW) == []


@pytest.mark.parametrize("kind", ["EVENT", "PROGRAM"])
@pytest.mark.parametrize("descriptors", ["x", {"payloadType": "IMPORT_CAPACITY_LIMIT"}, ["x"]])
def test_payload_descriptors_not_a_list_of_objects_are_refused(
    kind: str, descriptors: object
) -> None:
    """The bad-input walk (session 23, L6): an EVENT with `payloadDescriptors: "x"` was
    acted on as if it had none, its values read in the default units, and a PROGRAM's was
    kept as none for its events to default to. Descriptors carry the units (KW or W) and
    currency; the schema's is a list of descriptor objects, or null."""
    obj = {"id": "e", "intervals": [], "payloadDescriptors": descriptors}
    with pytest.raises(OpenADRError) as exc:
        read_notification({"objectType": kind, "operation": "CREATE", "object": obj}, NOW)
    assert exc.value.path == "object.payloadDescriptors", exc.value.path
    ok = {"objectType": kind, "operation": "CREATE", "object": {**obj, "payloadDescriptors": None}}
    read_notification(ok, NOW)  # null is the schema's "none"


def test_an_event_with_no_interval_period_anywhere_is_refused() -> None:
    """The aggregator's walk (session 24, D8): an event with no intervalPeriod at either
    level became a cap from the moment it came until cancelled. User Guide 7.4: "If an
    intervalPeriod is not present in the event, then one must be present in every
    interval"; without one the VEN cannot know when the event applies."""
    payload = {"type": "IMPORT_CAPACITY_LIMIT", "values": [45]}
    obj = {"id": "t-noip", "intervals": [{"id": 0, "payloads": [payload]}]}
    body = {"objectType": "EVENT", "operation": "CREATE", "object": obj}
    with pytest.raises(OpenADRError) as exc:
        notification_to_events(body, NOW)
    assert exc.value.path == "object.intervals[0].intervalPeriod", exc.value.path
    assert "User Guide 7.4" in str(exc.value)
    timed = {"start": "2026-12-03T12:00:00Z", "duration": "PT1H"}
    own = {**obj, "intervals": [{"id": 0, "intervalPeriod": timed, "payloads": [payload]}]}
    assert notification_to_events({**body, "object": own}, NOW)  # its own period: read


def test_an_openadr_time_without_an_offset_is_refused() -> None:
    """The aggregator's walk (session 24, D9): "2026-12-04T12:00:00" was read as UTC without
    a word; a VTN that meant the site's local time would be hours off. The schema's dateTime
    is RFC 3339, which needs an offset, and the simple format refuses the same string."""
    period = {"start": "2026-12-04T12:00:00", "duration": "PT1H"}
    payload = {"type": "IMPORT_CAPACITY_LIMIT", "values": [45]}
    obj = {
        "id": "t-naive",
        "intervalPeriod": period,
        "intervals": [{"id": 0, "payloads": [payload]}],
    }
    with pytest.raises(OpenADRError) as exc:
        notification_to_events({"objectType": "EVENT", "operation": "CREATE", "object": obj}, NOW)
    assert exc.value.path == "object.intervalPeriod.start", exc.value.path
    assert "no UTC offset" in str(exc.value)


def test_the_daemon_docs_table_names_every_payload_type() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "daemon.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([A-Z0-9_]+)` \| (yes|no) \|", text, re.M)
    }
    assert rows == {k: "yes" if h.acts else "no" for k, h in PAYLOAD_TYPES.items()}


# -- a program's payload descriptors are its events' defaults (User Guide 7.6) --------------------


def test_an_event_without_descriptors_takes_its_programs() -> None:
    programs = Programs()
    program = {"id": "p", "programName": "tou", "payloadDescriptors": PRICE_KWH}
    made = {"objectType": "PROGRAM", "operation": "CREATE", "object": program}
    assert read_notification(made, NOW, programs=programs).events == [] and len(programs) == 1
    obj = {
        "intervalPeriod": {"start": T0, "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.15]}]}],
    }
    (p,) = kinds(read_notification(note(obj), NOW, programs=programs).events, "price")
    assert p["price"] == pytest.approx(150.0)
    # the event's own descriptor wins, field by field
    own = {**obj, "payloadDescriptors": [{"payloadType": "PRICE", "units": "MWH"}]}
    (p,) = kinds(read_notification(note(own), NOW, programs=programs).events, "price")
    assert p["price"] == pytest.approx(0.15)
    # another program, or a deleted one, gives nothing: recorded, not guessed
    other = {**note(obj), "object": {**note(obj)["object"], "programID": "q"}}
    assert kinds(read_notification(other, NOW, programs=programs).events, "price") == []
    read_notification({**made, "operation": "DELETE"}, NOW, programs=programs)
    assert kinds(read_notification(note(obj), NOW, programs=programs).events, "price") == []


def test_an_interval_with_its_own_randomize_start_draws_again() -> None:
    obj = {
        "payloadDescriptors": KW,
        "intervalPeriod": {"start": T0, "duration": "PT1H", "randomizeStart": "PT10M"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300]}]},
            {
                "id": 1,
                "intervalPeriod": {"start": at(3), "randomizeStart": "PT2M"},
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [200]}],
            },
            {
                "id": 2,
                "intervalPeriod": {"start": at(5)},
                "payloads": [{"type": "SIMPLE", "values": [1]}],
            },
        ],
    }

    def draw(key: str, bound_s: float) -> float:
        return bound_s if key.endswith(":1") else -bound_s  # the interval's own, the event's

    caps = kinds(read_notification(note(obj), NOW, SITE, jitter=draw).events, "curtail")
    assert [c["start"] for c in caps] == [at(-1 / 6), at(3 + 1 / 30), at(5 + 1 / 30)]


def test_a_3_0_1_cancellation_at_the_beginning_of_time_0000_00_00() -> None:
    cancel = {
        "objectType": "EVENT",
        "operation": "PUT",
        "object": {
            "id": "e301",
            "programID": "p",
            "intervalPeriod": {"start": "0000-00-00", "duration": "PT0S"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        },
    }
    assert notification_to_events(cancel, NOW) == [
        {"id": "oadr:e301:*", "type": "cancel", "source": "openadr3"}
    ]


def test_an_event_built_by_a_third_party_client_library_is_read() -> None:
    """The openadr3 package (PyPI, Clark Communications' OpenADR 3 entity API) as a VTN's
    business logic would build an event: its raw models give the JSON the VTN sends."""
    raw = pytest.importorskip("openadr3.entities.raw")
    event = raw.RawEvent(
        id="lib-1",
        programID="p",
        priority=1,
        targets=["group1"],
        duration="PT6H",
        payloadDescriptors=[
            raw.RawEventPayloadDescriptor(
                objectType="EVENT_PAYLOAD_DESCRIPTOR",
                payloadType="PRICE",
                units="KWH",
                currency="USD",
            ),
            raw.RawEventPayloadDescriptor(
                objectType="EVENT_PAYLOAD_DESCRIPTOR",
                payloadType="IMPORT_CAPACITY_LIMIT",
                units="KW",
            ),
        ],
        intervalPeriod=raw.RawIntervalPeriod(start=T0, duration="PT2H"),
        intervals=[
            raw.RawInterval(
                id=0,
                payloads=[
                    raw.RawValuesMap(type="PRICE", values=[0.1, 0.3]),
                    raw.RawValuesMap(type="IMPORT_CAPACITY_LIMIT", values=[250]),
                ],
            ),
            raw.RawInterval(
                id=1,
                intervalPeriod=raw.RawIntervalPeriod(start="0001-01-01", duration="PT1H"),
                payloads=[raw.RawValuesMap(type="ALERT_FLEX_ALERT", values=["conserve"])],
            ),
        ],
    )
    body = {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": event.model_dump(by_alias=True, exclude_none=True),
    }
    r = read_notification(body, NOW, SITE)
    prices = [(e["start"], e["end"], round(e["price"], 6)) for e in kinds(r.events, "price")]
    assert prices[:3] == [(at(0), at(1), 100.0), (at(1), at(2), 300.0), (at(3), at(4), 100.0)]
    caps = [(e["start"], e["end"]) for e in kinds(r.events, "curtail")]
    assert caps == [(at(0), at(2)), (at(3), at(5))]  # looped over PT6H; the last cut at 6 h
    alerts = [(e["start"], e["end"]) for e in kinds(r.events, "alert")]
    assert alerts == [(at(2), at(3)), (at(5), at(6))]


def _cap_event(period: dict[str, Any]) -> dict[str, Any]:
    return note(
        {
            "payloadDescriptors": KW,
            "intervalPeriod": period,
            "intervals": [
                {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [70]}]}
            ],
        }
    )


def test_a_finite_window_from_the_beginning_of_time_is_over_not_now() -> None:
    """User Guide 7.3: '0001-01-01' at the event level is 'do it now' only "if the duration
    extends into the future"; 7.9 retires an event with "0001-01-01" and "PT0S", a window
    "at some theoretical time in the past". The bad-input walk (session 23) saw
    0001-01-01 with PT1H become a one-hour 70 kW cap from now."""
    for dur in ("PT1H", "PT0S"):
        evs = notification_to_events(_cap_event({"start": "0001-01-01", "duration": dur}), NOW)
        assert kinds(evs, "curtail") == [], dur
    forever = _cap_event({"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"})
    assert [e["limit_kw"] for e in kinds(notification_to_events(forever, NOW), "curtail")] == [70]


def test_a_negative_duration_is_refused_naming_the_field() -> None:
    """The bad-input walk (session 23): "-PT1H" was read as one hour ahead (abs)."""
    with pytest.raises(ValueError, match=r"object.intervalPeriod.duration: '-PT1H' is a negative"):
        notification_to_events(_cap_event({"start": T0, "duration": "-PT1H"}), NOW)
