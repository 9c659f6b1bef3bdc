"""Reports beyond USAGE and DEMAND, against the VTN double (every request validated against
the OpenADR 3.1.0 definition): what this site measures is reported as the descriptor asks
(DEMAND's PEAK, READING's instantaneous import), with its data quality; what it cannot
measure is answered as not available (every interval ``MISSING``, no value), logged once,
never invented. Skipped when ../shared/openadr3 is absent."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.openadr import notification_to_events  # noqa: E402
from scheduler.service.ven import Ven  # noqa: E402
from scheduler.service.ven_reports import ImportSample  # noqa: E402
from tests.test_ven import (  # noqa: E402
    SITE,
    Sink,
    bl,
    config,
    make_program,
    report_event,
    run,
    until,
)
from tests.vtn_double import VtnDouble  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


def by_interval(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    (res,) = report["resources"]
    return {
        iv["id"]: {p["type"]: p["values"][0] for p in iv["payloads"]} for iv in res["intervals"]
    }


def test_measured_as_asked_and_the_rest_answered_not_available(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vtn = VtnDouble().start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        asked = [
            {"payloadType": "DEMAND", "readingType": "PEAK", "units": "KW"},
            {"payloadType": "READING", "units": "KW"},
            {"payloadType": "BASELINE", "units": "KWH"},
            {"payloadType": "OPERATING_STATE"},
        ]
        ev = report_event(pid, 25, asked[0])
        ev["reportDescriptors"] = asked
        eid = client.create_event(ev).json()["id"]
        again = report_event(pid, 25, {"payloadType": "BASELINE"})  # a second ask: logged once
        client.create_event(again)

        async def go() -> Ven:
            ven = Ven(config(vtn), Sink(),
                      interpret=lambda b: notification_to_events(b, datetime.now(UTC), SITE),
                      measure=lambda: ImportSample(None, False))  # fmt: skip
            # a sample holds until the next: the last of interval 0 reaches half a second
            # into interval 1, where every value is higher (its peak is its own)
            t0 = datetime.fromisoformat(ev["intervalPeriod"]["start"]).timestamp() + 0.5
            for s in range(0, 20 * 60, 10):  # interval 0 from the meter, 1 from the devices
                kw = 900.0 if s == 300 else 600.0 if s < 600 else 700.0 + s / 100
                ven.record(t0 + s, kw, verified=s < 600)
            await ven.start()  # both intervals are over: every report is due at once
            await until(lambda: ven.status()["reports_sent"] == 5)
            await ven.stop()
            return ven

        with caplog.at_level(logging.WARNING, "scheduler.service"):
            ven = run(go())
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations
    reports = {
        (r["eventID"], r["payloadDescriptors"][0]["payloadType"]): r
        for r in vtn.objects["report"].values()
    }
    peak = reports[(eid, "DEMAND")]
    assert peak["payloadDescriptors"][0]["readingType"] == "PEAK"
    got = by_interval(peak)
    assert got[0] == {"DEMAND": 900.0, "DATA_QUALITY": "OK"}  # the highest sample, not the mean
    assert got[1]["DATA_QUALITY"] == "ESTIMATED"
    assert got[1]["DEMAND"] == pytest.approx(700.0 + 1190 / 100)
    reading = by_interval(reports[(eid, "READING")])
    assert reading[1]["READING"] == pytest.approx(700.0 + 1190 / 100)  # the last sample
    assert reading[0] == {"READING": 600.0, "DATA_QUALITY": "OK"}
    for kind in ("BASELINE", "OPERATING_STATE"):
        na = reports[(eid, kind)]
        assert "readingType" not in na["payloadDescriptors"][0]
        for payloads in by_interval(na).values():
            assert payloads == {"DATA_QUALITY": "MISSING"}, kind  # said, not invented
    lines = ven.status()["not_reported"]
    assert any("BASELINE" in line and "not available" in line for line in lines)
    assert any("OPERATING_STATE" in line for line in lines)
    warned = [r for r in caplog.records if "BASELINE" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
