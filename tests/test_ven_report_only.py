"""Report-only events (User Guide 7.5) and the reports' metric, against the VTN double
(every request checked against the OpenADR 3.1.0 definition):

- "'report-only' event with BL-determined intervals": intervals with times but empty
  payloads; the reports cover those intervals, by their ids;
- "'report-only' event with implied intervals": no intervals, an event-level
  ``intervalPeriod`` whose duration is the length of each implied interval, counted by the
  descriptor's ``startInterval``/``numIntervals`` (or the event's ``duration``);
- with the same honesty rules as every report: an interval read for less than half its
  length is ``MISSING``, one read from the devices (no meter) ``ESTIMATED``;
- ``gridsched_openadr_ven_reports_total{state}`` (sent, given_up: born at 0) and
  ``gridsched_openadr_ven_reports_pending``, so that a report given up can be alerted on.

Skipped when ../shared/openadr3 is absent."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service import metrics_families  # noqa: E402
from scheduler.service.openadr import notification_to_events  # noqa: E402
from scheduler.service.ven_reports import plan_reports  # noqa: E402
from tests.support.venlife import record_span, run_until  # noqa: E402
from tests.test_ven import SITE, bl, iso, make_program, run, until  # noqa: E402
from tests.test_ven_reports_restart import ReportVtn, new_ven, values  # noqa: E402
from tests.vtn_double import VtnDouble  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


def report_only(pid: str, start: datetime, period: str, **extra: Any) -> dict[str, Any]:
    return {"programID": pid, "eventName": "report-only",
            "intervalPeriod": {"start": iso(start), "duration": period}, **extra}  # fmt: skip


async def sent_after(
    vtn: VtnDouble, t0: float, span_s: int, kw: float, verified: bool, sent: int
) -> dict[str, Any]:
    """A VEN given import samples of ``kw`` over ``span_s`` seconds from ``t0``, run until
    it has sent ``sent`` reports (10 s at most): its status then."""
    ven = new_ven(vtn)
    record_span(ven, t0, span_s, kw, verified)
    return await run_until(ven, lambda: ven.status()["reports_sent"] == sent, 10)


def by_type(vtn: VtnDouble) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in vtn.objects["report"].values():
        out.setdefault(r["payloadDescriptors"][0]["payloadType"], []).append(r)
    for reports in out.values():
        reports.sort(key=lambda r: r["resources"][0]["intervals"][0]["intervalPeriod"]["start"])
    return out


def test_bl_determined_intervals_with_empty_payloads_are_reported() -> None:
    """D7: two timed intervals with ``payloads: []`` and a USAGE descriptor were accepted
    but never reported ("the event has no intervals with times to report on")."""
    vtn = VtnDouble().start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        start = datetime.now(UTC) - timedelta(minutes=25)
        ev = report_only(pid, start, "PT10M", reportDescriptors=[{"payloadType": "USAGE"}])
        ev["intervals"] = [{"id": 7, "payloads": []}, {"id": 9, "payloads": []}]
        r = client.create_event(ev)
        assert r.status_code == 201, r.text
        eid = r.json()["id"]

        # interval 7 read from the meter; 9 never
        st = run(sent_after(vtn, start.timestamp(), 10 * 60, 600.0, verified=True, sent=1))
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations
    (report,) = vtn.objects["report"].values()
    assert report["eventID"] == eid
    got = values(report)
    assert list(got) == [7, 9], "the event's own interval ids"
    assert got[7] == {"USAGE": pytest.approx(100.0, rel=0.01), "DATA_QUALITY": "OK"}
    assert got[9] == {"DATA_QUALITY": "MISSING"}  # unread: no value, never 0
    (res,) = report["resources"]
    assert res["intervals"][1]["intervalPeriod"]["start"].startswith(
        iso(start + timedelta(minutes=10))[:19]
    )
    assert not [line for line in st["not_reported"] if "no intervals" in line], st


def test_implied_intervals_are_counted_from_the_event_interval_period() -> None:
    """D7, 'report-only' event with implied intervals: no ``intervals``, an event-level
    period of 5 minutes. DEMAND asks for two implied intervals, one report each
    (``frequency`` 1); USAGE names no count, and the event's ``duration`` (15 minutes) gives
    three."""
    vtn = VtnDouble().start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        start = datetime.now(UTC) - timedelta(minutes=16)
        asked = [
            {"payloadType": "DEMAND", "startInterval": 1, "numIntervals": 2, "frequency": 1},
            {"payloadType": "USAGE", "units": "WH"},
        ]
        ev = report_only(pid, start, "PT5M", reportDescriptors=asked, duration="PT15M")
        r = client.create_event(ev)
        assert r.status_code == 201, r.text

        # the devices' figure (no meter), 11 minutes
        st = run(sent_after(vtn, start.timestamp(), 11 * 60, 60.0, verified=False, sent=3))
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations
    reports = by_type(vtn)
    first, second = reports["DEMAND"]
    assert values(first) == {1: {"DEMAND": pytest.approx(60.0), "DATA_QUALITY": "ESTIMATED"}}
    assert values(second) == {2: {"DATA_QUALITY": "MISSING"}}  # under 2 of its 5 minutes read
    (iv,) = first["resources"][0]["intervals"]
    assert iv["intervalPeriod"]["duration"] == "PT300S"
    assert iv["intervalPeriod"]["start"].startswith(iso(start + timedelta(minutes=5))[:19])
    (usage,) = reports["USAGE"]
    got = values(usage)
    assert list(got) == [0, 1, 2]
    assert got[0] == {"USAGE": pytest.approx(5000.0, rel=0.01), "DATA_QUALITY": "ESTIMATED"}
    assert got[2] == {"DATA_QUALITY": "MISSING"}
    assert usage["payloadDescriptors"][0]["readingType"] == "ESTIMATED"
    assert st["reports_pending"] == 0


def test_report_only_timing_the_ven_cannot_honour_is_said() -> None:
    """Implied intervals of no end (``P9999Y``) have no interval to report historically;
    one not over yet is pending, not sent; forecasts stay unsent, said as before."""
    now = datetime.now(UTC)
    body = {"programID": "p", "id": "e1", "modificationDateTime": iso(now),
            "intervalPeriod": {"start": iso(now), "duration": "P9999Y"},
            "reportDescriptors": [{"payloadType": "USAGE"}]}  # fmt: skip
    planned = plan_reports(body, [], now.timestamp())
    assert planned.jobs == []
    (why,) = planned.not_reported
    assert "no end" in why, why
    body["intervalPeriod"] = {"start": iso(now), "duration": "PT1H"}
    body["reportDescriptors"] = [
        {"payloadType": "USAGE", "numIntervals": 3},
        {"payloadType": "DEMAND", "historical": False},
    ]
    planned = plan_reports(body, [], now.timestamp())
    (job,) = planned.jobs
    assert [w.interval_id for w in job.windows] == [0, 1, 2]
    assert job.due_at == pytest.approx(now.timestamp() + 3 * 3600, abs=1)
    assert any("forecasts" in line for line in planned.not_reported)
    # neither intervals nor a period: "VEN-determined intervals", said, not sent
    del body["intervalPeriod"]
    planned = plan_reports(body, [], now.timestamp())
    assert planned.jobs == []
    assert any("VEN-determined" in line for line in planned.not_reported), planned
    # intervals that carry payloads are no report-only event: their windows come from what
    # the daemon made of them, as before
    body["intervalPeriod"] = {"start": iso(now), "duration": "PT1H"}
    body["intervals"] = [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.1]}]}]
    assert plan_reports(body, [], now.timestamp()).jobs == []


def test_bl_intervals_are_cut_at_the_event_duration() -> None:
    """The 3.1.0 event ``duration`` cuts the intervals at the first start plus it, as it
    cuts a cap's; an interval starting after it is not reported on."""
    start = datetime.now(UTC) - timedelta(hours=1)
    body = {"programID": "p", "id": "e2", "duration": "PT15M",
            "intervalPeriod": {"start": iso(start), "duration": "PT10M"},
            "intervals": [{"id": k, "payloads": []} for k in range(3)],
            "reportDescriptors": [{"payloadType": "USAGE", "frequency": 1}]}  # fmt: skip
    jobs = plan_reports(body, [], time.time()).jobs
    got = [(w.interval_id, w.start - start.timestamp(), w.end - w.start) for j in jobs
           for w in j.windows]  # fmt: skip
    assert got == [(0, pytest.approx(0), pytest.approx(600)),
                   (1, pytest.approx(600), pytest.approx(300))]  # fmt: skip


def test_an_event_for_another_ven_is_not_reported_on() -> None:
    """An event whose ``targets`` name neither this VEN nor its resources is not this
    site's to report on: with a cap (the daemon makes a notice of it, whose times gave the
    report its windows) or report-only, it is said, not reported."""
    now = datetime.now(UTC)
    for payloads in ([{"type": "IMPORT_CAPACITY_LIMIT", "values": [5.0]}], []):
        ev = {"programID": "p", "id": "e3", "targets": ["someone-else"],
              "intervalPeriod": {"start": iso(now - timedelta(hours=1)), "duration": "PT10M"},
              "intervals": [{"id": 0, "payloads": payloads}],
              "reportDescriptors": [{"payloadType": "USAGE"}]}  # fmt: skip
        made = notification_to_events(
            {"objectType": "EVENT", "operation": "CREATE", "object": ev}, now, SITE
        )
        planned = plan_reports(ev, made, now.timestamp(), SITE)
        assert planned.jobs == [], payloads
        (why,) = planned.not_reported
        assert "someone-else" in why and "not reported" in why, why
        ev["targets"] = [SITE.ven_name]
        assert len(plan_reports(ev, made, now.timestamp(), SITE).jobs) == 1, payloads


def series(d: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in metrics_families.ven(d)
        for s in fam.samples
    }


def test_reports_metric_counts_given_up_from_zero() -> None:
    """A report the VTN refuses is given up: the counter ``state="given_up"`` goes from 0
    (exported before any report) to 1, so that ``increase()`` sees it."""
    vtn = ReportVtn()
    vtn.start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        start = datetime.now(UTC) + timedelta(seconds=1)
        ev = report_only(pid, start, "PT1S", reportDescriptors=[{"payloadType": "USAGE"}])
        client.create_event(ev)
        vtn.report_status = 400

        async def go() -> list[dict[Any, float]]:
            ven = new_ven(vtn, sample_s=0.02)
            d = SimpleNamespace(ven=ven)
            before = series(d)
            await ven.start()
            await until(lambda: len(ven.jobs()) == 1, 10)
            planned = series(d)
            await until(lambda: ven.status()["reports_given_up"] == 1, 10)
            after = series(d)
            await ven.stop()
            return [before, planned, after]

        t = time.time()
        before, planned, after = run(go())
        assert time.time() - t < 10
    finally:
        vtn.close()
    total = "gridsched_openadr_ven_reports_total"
    pending = ("gridsched_openadr_ven_reports_pending", ())
    assert before[(total, (("state", "given_up"),))] == 0
    assert before[(total, (("state", "sent"),))] == 0
    assert before[pending] == 0
    assert planned[pending] == 1
    assert after[(total, (("state", "given_up"),))] == 1
    assert after[(total, (("state", "sent"),))] == 0
    assert after[pending] == 0
