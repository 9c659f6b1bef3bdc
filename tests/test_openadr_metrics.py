"""A cap on some device classes (an OpenADR DISPATCH_SETPOINT for a resource covering them) on
/metrics, read from the real exposition: the cap, those classes' power at the meter, and
whether they meet it (met, not_met, unverified), as /v1/status says it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scheduler.service.metrics import metrics_registry, render_metrics
from scheduler.service.ven_daemon import deliverer
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import site_text

SITE = site_text(
    "class caps on metrics",
    pue=None,
    hashprice=None,
    daemon={"horizon": "2h", "step": "5min"},
    sections={
        "openadr": {
            "ven_name": "ven-classes",
            "resources": [{"name": "miners", "classes": ["old", "new"]}],
        }
    },
)


def setpoint(kw: float) -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "sp",
            "programID": "p",
            "targets": ["miners"],
            "intervalPeriod": {"start": start, "duration": "PT1H"},
            "payloadDescriptors": [{"payloadType": "DISPATCH_SETPOINT", "units": "KW"}],
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [kw]}]}],
        },
    }


def scrape(d: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render_metrics(metrics_registry(d))[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("gridsched_class_cap")
    }


def test_class_cap_gauges_follow_status(tmp_path: Path) -> None:
    # the notification is read at the wall clock's now: the daemon's clock starts there
    d, devices = memory_daemon(SITE, tmp_path, FakeClock(time.time()))
    got: dict[str, Any] = {}

    async def go() -> None:
        await d.open()
        try:
            got["none"] = scrape(d)
            await deliverer(d)(setpoint(10.0))  # 8 miners x 3 kW: far above 10 kW
            got["status"] = d.status()["class_caps"]
            got["capped"] = scrape(d)
            for dev in devices.values():  # the fast path's work, done by hand here
                if dev.dc is not None and dev.dc.name in ("old", "new"):
                    dev.state = "sleeping"
            await d.poll(dispatch=False)
            got["met"] = scrape(d)
            for i in [i for i in d.power.fresh if i.startswith(("old/", "new/"))]:
                d.power.fresh.discard(i)  # miners not read: not shown under the cap
            got["unverified"] = scrape(d)
            got["status_unverified"] = d.status()["class_caps"]
        finally:
            await d.close()

    asyncio.run(go())
    assert got["none"] == {}  # no class cap: no series
    (cap,) = got["status"]
    label = (("classes", "new,old"),)
    capped = got["capped"]
    assert capped[("gridsched_class_cap_watts", label)] == 10_000.0
    assert capped[("gridsched_class_cap_power_watts", label)] == cap["power_kw"] * 1000
    state = {
        s: capped[("gridsched_class_cap_compliance", (("classes", "new,old"), ("state", s)))]
        for s in ("met", "not_met", "unverified")
    }
    assert state == {"met": 0.0, "not_met": 1.0, "unverified": 0.0} and cap["state"] == "not_met"
    met = got["met"]
    assert met[("gridsched_class_cap_power_watts", label)] < 10_000.0
    assert met[("gridsched_class_cap_compliance", (*label, ("state", "met")))] == 1.0
    (later,) = got["status_unverified"]
    assert later["state"] == "unverified", later
    key = ("gridsched_class_cap_compliance", (*label, ("state", "unverified")))
    assert got["unverified"][key] == 1.0
