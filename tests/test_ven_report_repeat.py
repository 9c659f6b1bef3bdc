"""Report streams: a report descriptor's ``repeat`` (OpenADR 3.1.0 User Guide 7.5, "Report on
a subset of intervals at a regular period", "Looping intervals", and the report-only event
with "a continuous stream of reports based on default event intervalPeriod. repeat = -1").

Before, every descriptor with ``repeat`` other than 1 was reported once, and said in the
VEN's ``not_reported`` as "repeat N sent once": the User Guide's own periodic example got
one report of three, and a stream asked for indefinitely stopped after its first.

Skipped when ../shared/openadr3 is absent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.openadr import notification_to_events  # noqa: E402
from scheduler.service.ven_report_windows import STREAM_AHEAD_S  # noqa: E402
from scheduler.service.ven_reports import plan_reports  # noqa: E402
from tests.test_ven import iso  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


def _event(start: datetime, n: int, **extra: Any) -> dict[str, Any]:
    """An event of ``n`` one-hour price intervals from ``start``."""
    return {
        "id": "e1", "programID": "p", "modificationDateTime": iso(start),
        "objectType": "EVENT", "intervalPeriod": {"start": iso(start), "duration": "PT1H"},
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE",
                                "units": "KWH", "currency": "USD"}],
        "intervals": [{"id": k, "payloads": [{"type": "PRICE", "values": [0.1 + k / 100]}]}
                      for k in range(n)],
        **extra,
    }  # fmt: skip


def _simple(event: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    body = {"objectType": "EVENT", "operation": "POST", "object": event}
    return notification_to_events(body, now)


def _starts(jobs: list[Any], t0: datetime) -> list[list[float]]:
    """Each report's windows, as hours after ``t0``."""
    return [[(w.start - t0.timestamp()) / 3600 for w in j.windows] for j in jobs]


def test_the_user_guides_periodic_example_gives_three_reports() -> None:
    """User Guide 7.5: startInterval 1, numIntervals 2, frequency 2, repeat 3: "3 reports,
    one generated after every 2 intervals". Before: one report, on intervals 1 and 2."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    d = {"payloadType": "USAGE", "startInterval": 1, "numIntervals": 2, "frequency": 2,
         "repeat": 3}  # fmt: skip
    ev = _event(t0, 8, reportDescriptors=[d])
    planned = plan_reports(ev, _simple(ev, t0), t0.timestamp())
    assert _starts(planned.jobs, t0) == [[1, 2], [3, 4], [5, 6]]
    assert [j.due_at - t0.timestamp() for j in planned.jobs] == [3 * 3600, 5 * 3600, 7 * 3600]
    assert len({j.key for j in planned.jobs}) == 3
    assert not any("sent once" in line for line in planned.not_reported), planned.not_reported
    # more reports asked for than the event has intervals: those it has, and said
    ev["reportDescriptors"] = [{**d, "repeat": 5}]
    planned = plan_reports(ev, _simple(ev, t0), t0.timestamp())
    assert _starts(planned.jobs, t0) == [[1, 2], [3, 4], [5, 6], [7]]
    assert any("repeat 5" in line and "4 reports" in line for line in planned.not_reported)


def test_a_looping_event_is_reported_on_each_pass() -> None:
    """User Guide 7.5 "Looping intervals": an event whose ``duration`` loops its intervals
    (P9999Y: indefinitely), with repeat -1, is reported after each pass ("report n").
    Before: the first pass only (the repetitions' windows were left out)."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    ev = _event(t0, 3, duration="P9999Y",
                reportDescriptors=[{"payloadType": "USAGE", "repeat": -1}])  # fmt: skip
    planned = plan_reports(ev, _simple(ev, t0), t0.timestamp())
    starts = _starts(planned.jobs, t0)
    # one report per 3-hour pass, as far ahead as streams are planned
    assert starts[:3] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]], starts[:4]
    assert len(starts) == STREAM_AHEAD_S // (3 * 3600), len(starts)
    assert planned.more_after is not None
    # planned again later (the reporter extends a stream): the same reports keep their keys,
    # and the next ones follow on
    later = t0 + timedelta(hours=7)
    again = plan_reports(ev, _simple(ev, later), later.timestamp())
    first = {j.key: _starts([j], t0)[0] for j in planned.jobs}
    for j in again.jobs:
        if j.key in first:
            assert _starts([j], t0)[0] == first[j.key], j.key
    assert max(max(s) for s in _starts(again.jobs, t0)) > max(max(s) for s in starts)


def test_a_report_only_event_streams_a_report_per_interval() -> None:
    """User Guide 7.5: a report-only event (no intervals) "requests a continuous stream of
    reports based on default event intervalPeriod. repeat = -1". frequency 1: a report
    after each implied interval. Before: one report, on implied interval 0."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=90)
    ev = {"id": "ro", "programID": "p", "modificationDateTime": iso(t0),
          "intervalPeriod": {"start": iso(t0), "duration": "PT1H"},
          "reportDescriptors": [{"payloadType": "DEMAND", "frequency": 1, "numIntervals": 1,
                                 "repeat": -1}]}  # fmt: skip
    planned = plan_reports(ev, [], t0.timestamp() + 5400)
    starts = _starts(planned.jobs, t0)
    assert starts[:3] == [[0], [1], [2]], starts[:3]
    # 0 and 1, then those due within a day of now (1.5 h in): to 25 h
    assert len(starts) == 1 + STREAM_AHEAD_S // 3600, len(starts)
    assert planned.more_after is not None
    # a finite repeat: that many
    ev["reportDescriptors"][0]["repeat"] = 4
    planned = plan_reports(ev, [], t0.timestamp() + 5400)
    assert _starts(planned.jobs, t0) == [[0], [1], [2], [3]]
    assert planned.more_after is None


def test_repeat_one_is_as_before() -> None:
    """The default (repeat 1): frequency splits the chosen intervals (User Guide 7.5: "an
    event includes 10 intervals and wants 5 reports, one for each set of 2 intervals")."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    ev = _event(t0, 4, reportDescriptors=[{"payloadType": "USAGE", "frequency": 2}])
    planned = plan_reports(ev, _simple(ev, t0), t0.timestamp())
    assert _starts(planned.jobs, t0) == [[0, 1], [2, 3]]
    assert planned.more_after is None


@pytest.mark.parametrize("repeat", [0, -2])
def test_a_repeat_that_means_nothing_is_said(repeat: int) -> None:
    """repeat 0 or below -1 is no count the definition gives: said, not guessed at."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    ev = _event(t0, 2, reportDescriptors=[{"payloadType": "USAGE", "repeat": repeat}])
    planned = plan_reports(ev, _simple(ev, t0), t0.timestamp())
    assert planned.jobs == []
    assert any(f"repeat {repeat}" in line for line in planned.not_reported)


def test_the_reporter_extends_a_stream_and_lets_go_of_old_reports() -> None:
    """A stream is planned a day ahead; the reporter plans it again as that runs out, so
    the reports go on for as long as the event does, and the reports settled more than
    ``STREAM_LOOKBACK_S`` ago leave its memory (a 5-minute stream is 288 a day)."""
    from types import SimpleNamespace

    from models.site import OpenADR
    from scheduler.service.ven_report_windows import STREAM_LOOKBACK_S
    from scheduler.service.ven_reporter import Reporter
    from scheduler.service.ven_reports import ImportSample

    t0 = datetime.now(UTC).replace(microsecond=0)
    ev = {"id": "ro", "programID": "p", "modificationDateTime": iso(t0),
          "intervalPeriod": {"start": iso(t0), "duration": "PT1H"},
          "reportDescriptors": [{"payloadType": "USAGE", "frequency": 1,
                                 "repeat": -1}]}  # fmt: skip
    status: dict[str, Any] = {"not_reported": []}
    rep = Reporter(
        SimpleNamespace(), OpenADR(ven_name="v"), status, None,  # type: ignore[arg-type]
        interpret=lambda body: [], measure=lambda: ImportSample(1.0, True),
    )  # fmt: skip
    body = {"objectType": "EVENT", "operation": "POST", "object": ev}
    rep.plan(body, t0.timestamp())
    first = len(rep.jobs)
    assert first == 24 and "ro" in rep.streams, (first, rep.streams)
    (_, at) = rep.streams["ro"]
    rep.extend(at - 1)  # not yet
    assert len(rep.jobs) == first
    rep.extend(at)
    assert len(rep.jobs) > first, len(rep.jobs)
    last = max(j.due_at for j in rep.jobs.values())
    assert last >= at + 86400 / 2 - 1
    # three days on, with the first day's reports sent: those leave; the stream goes on
    for j in rep.jobs.values():
        if j.due_at <= t0.timestamp() + 86400:
            j.sent = True
    later = t0.timestamp() + 3 * 86400
    rep.extend(later)
    assert all(j.due_at >= later - STREAM_LOOKBACK_S - 3600 or not j.sent
               for j in rep.jobs.values())  # fmt: skip
    assert max(j.due_at for j in rep.jobs.values()) > later
    # deleted: the stream ends
    rep.forget("ro")
    assert "ro" not in rep.streams


def test_a_ven_sends_each_report_of_a_stream_to_the_vtn() -> None:
    """End to end, against the VTN double (every request checked against the 3.1.0
    definition): a report-only event of 10-minute implied intervals asks for a report
    after each, three times; the VEN, read over the last 35 minutes, sends all three."""
    from tests.test_ven import bl, make_program, run
    from tests.test_ven_report_only import report_only, sent_after
    from tests.test_ven_reports_restart import values
    from tests.vtn_double import VtnDouble

    vtn = VtnDouble().start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        start = datetime.now(UTC) - timedelta(minutes=35)
        d = {"payloadType": "DEMAND", "frequency": 1, "repeat": 3}
        r = client.create_event(report_only(pid, start, "PT10M", reportDescriptors=[d]))
        assert r.status_code == 201, r.text
        st = run(sent_after(vtn, start.timestamp(), 35 * 60, 400.0, verified=True, sent=3))
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations
    reports = sorted(
        vtn.objects["report"].values(),
        key=lambda r: r["resources"][0]["intervals"][0]["intervalPeriod"]["start"],
    )
    assert [list(values(r)) for r in reports] == [[0], [1], [2]]
    assert all(values(r)[k]["DEMAND"] == pytest.approx(400.0) for k, r in enumerate(reports))
    assert len({r["reportName"] for r in reports}) == 3
    assert not [line for line in st["not_reported"] if "repeat" in line], st["not_reported"]
