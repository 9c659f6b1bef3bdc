"""An OpenADR 3 notification through the daemon's API: what is acted on caps the site, what is
not is stored, audited, shown in status and counted, and nothing is dropped."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.site import parse_site
from scheduler.audit.store import Store
from scheduler.service.api import create_app
from scheduler.service.daemon import Daemon
from scheduler.service.metrics import metrics_registry
from scheduler.service.openadr import PAYLOAD_TYPES

TOKEN = "oadr-daemon-test"
SITE = """
[site]
name = "openadr test"
interconnect_kw = 500

[prices]
format = "demo"

[tariff]
dr_levels_kw = {"1" = 300, "3" = 50}

[daemon]
horizon = "2h"
step = "5min"

[openadr]
ven_name = "ven_0999"
targets = ["group1"]

[[openadr.resources]]
name = "meter"

[[openadr.resources]]
name = "miners"
classes = ["s19"]

[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 6
"""


def _daemon(tmp_path: Path) -> Daemon:
    config = parse_site(tomllib.loads(SITE), "test", str(tmp_path))
    return Daemon(config, tmp_path / "gridsched.db")


def _event(targets: list[str] | None) -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "evt-7",
            "programID": "p",
            "targets": targets,
            "intervalPeriod": {"start": start, "duration": "PT1H"},
            "payloadDescriptors": [
                {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"},
                {"payloadType": "DISPATCH_SETPOINT", "units": "KW"},
            ],
            "intervals": [
                {
                    "id": 0,
                    "payloads": [
                        {"type": "IMPORT_CAPACITY_LIMIT", "values": [120]},
                        {"type": "DISPATCH_SETPOINT", "values": [40]},
                        {"type": "GHG", "values": [410.0]},
                        {"type": "X_UTILITY_PRIVATE", "values": [1]},
                    ],
                }
            ],
        },
    }


async def _post(d: Daemon, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(d))
    async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
        return await c.post(
            "/openadr3/notifications", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )


def _sample(d: Daemon, payload_type: str, acted: str) -> float | None:
    labels = {"type": payload_type, "acted": acted}
    return metrics_registry(d).get_sample_value("gridsched_openadr_payloads_total", labels)


def test_payloads_not_acted_on_are_stored_audited_shown_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDSCHED_OPENADR_TOKENS", TOKEN)
    d = _daemon(tmp_path)

    async def go() -> None:
        d.store.start()
        try:
            r = await _post(d, _event(None))
            assert r.status_code == 202, r.text
            cap, _ = d.cap_now(time.time())
            assert cap == 40  # the meter's setpoint is below the import limit
            caps = [
                (e.payload_type, e.limit_kw, e.classes) for e in d.active_events() if e.limit_kw
            ]
            # the miners' setpoint caps the s19 class only, not the site's import
            assert sorted(caps, key=str) == [
                ("DISPATCH_SETPOINT", 40, ("s19",)),
                ("DISPATCH_SETPOINT", 40, None),
                ("IMPORT_CAPACITY_LIMIT", 120, None),
            ]
            shown = d.status()["openadr_not_acted"]
            why = {n["payload_type"]: n["detail"] for n in shown["notices"]}
            assert set(why) == {"GHG", "X_UTILITY_PRIVATE"}
            assert shown["count"] == 2
            assert _sample(d, "private", "false") == 1  # a private name is not a label
            assert _sample(d, "GHG", "false") == 1
            assert _sample(d, "IMPORT_CAPACITY_LIMIT", "true") == 1
            assert _sample(d, "DISPATCH_SETPOINT", "true") == 2
            assert _sample(d, "DISPATCH_SETPOINT", "false") is None
            # an event for another VEN is recorded, not enforced
            r = await _post(d, _event(["ven_0998"]))
            assert r.status_code == 202, r.text
            assert d.cap_now(time.time())[0] == 500
            assert _sample(d, "IMPORT_CAPACITY_LIMIT", "false") == 1
        finally:
            for t in list(d.tasks.running):
                t.cancel()
            d.store.close()

    asyncio.run(go())
    assert Store(tmp_path / "gridsched.db").verify().ok
    con = sqlite3.connect(tmp_path / "gridsched.db")
    logged = [json.loads(p) for (p,) in con.execute("SELECT payload FROM log WHERE kind='signal'")]
    notices = [e for rec in logged for e in rec["events"] if e["type"] == "notice"]
    assert {e["payload_type"] for e in notices} == {
        "GHG",
        "DISPATCH_SETPOINT",
        "IMPORT_CAPACITY_LIMIT",
        "X_UTILITY_PRIVATE",
    }
    assert any("ven_0998" in e["detail"] for e in notices)


def test_a_program_notification_gives_its_events_their_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDSCHED_OPENADR_TOKENS", TOKEN)
    d = _daemon(tmp_path)
    program = {
        "objectType": "PROGRAM",
        "operation": "CREATE",
        "object": {
            "id": "p",
            "programName": "tou",
            "payloadDescriptors": [{"payloadType": "PRICE", "units": "KWH", "currency": "USD"}],
        },
    }
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    event = {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "evt-8",
            "programID": "p",
            "intervalPeriod": {"start": start, "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.09]}]}],
        },
    }

    async def go() -> None:
        d.store.start()
        try:
            assert (await _post(d, program)).status_code == 200  # nothing to store
            assert (await _post(d, event)).status_code == 202
            prices = [e.price for e in d.active_events() if e.payload_type == "PRICE"]
            assert prices == [pytest.approx(90.0)]
            assert _sample(d, "PRICE", "true") == 1
        finally:
            for t in list(d.tasks.running):
                t.cancel()
            d.store.close()

    asyncio.run(go())


def test_the_ven_counts_payloads_by_metric_label_as_the_webhook_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event the VEN fetched (polling, MQTT) takes ``ven_daemon.deliverer``: each payload
    is counted under ``PayloadOutcome.label``, so a VTN's private type names are one label,
    ``private``, and the label set stays the enumerations' (it used to be ``payload_type``)."""
    from scheduler.service.ven_daemon import deliverer

    d = _daemon(tmp_path)
    body = _event(None)
    intervals = body["object"]["intervals"]
    intervals[0]["payloads"] += [
        {"type": "X_OTHER_PRIVATE", "values": [2]},
        {"type": "ALERT_FLEX_ALERT", "values": ["conserve"]},
    ]

    async def go() -> None:
        d.store.start()
        try:
            await deliverer(d)(body)
            assert {e.payload_type for e in d.active_events()} >= {"IMPORT_CAPACITY_LIMIT"}
        finally:
            for t in list(d.tasks.running):
                t.cancel()
            d.store.close()

    asyncio.run(go())
    assert _sample(d, "private", "false") == 2  # X_UTILITY_PRIVATE and X_OTHER_PRIVATE
    assert _sample(d, "X_UTILITY_PRIVATE", "false") is None
    assert _sample(d, "X_OTHER_PRIVATE", "false") is None
    assert _sample(d, "GHG", "false") == 1
    assert _sample(d, "ALERT_FLEX_ALERT", "true") == 1
    assert _sample(d, "DISPATCH_SETPOINT", "true") == 2  # the meter's and the miners' caps
    labels = {
        s.labels["type"]
        for m in metrics_registry(d).collect()
        if m.name == "gridsched_openadr_payloads"
        for s in m.samples
    }
    assert labels <= {*PAYLOAD_TYPES, "reportDescriptors", "private"}
