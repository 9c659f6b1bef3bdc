"""The billing peak (the demand charge's kW) is the billing period's, not the process's: kept
in the state file per period (a calendar month in the site's time zone), restored at a
restart, begun again at 0 when a new month begins while the daemon runs, and the planner
floors only the period it is in with it (the next month in a plan's horizon starts at 0).
The daemon's clock is moved by hand (``FakeClock``); the state file is a real SQLite file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import Metric

from scheduler.audit.store import Store
from scheduler.planner.inputs import SiteState, assemble_inputs
from scheduler.planner.timegrid import uniform_grid
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.billing import BillingPeak
from scheduler.service.metrics import DaemonCollector
from tests.conftest import flat_series, make_site
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon, run_open
from tests.support.sitefile import site_text

CHICAGO = "America/Chicago"


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _daemon(
    tmp_path: Path, clock: FakeClock, tariff: dict[str, Any] | None = None
) -> tuple[Daemon, dict[str, MemoryDevice]]:
    text = site_text(
        "billing",
        site={"base_load_kw": 0, "timezone": CHICAGO},
        sections={"tariff": {"demand_charge_usd_per_kw_month": 10.0, **(tariff or {})}},
    )
    return memory_daemon(text, tmp_path, clock)


def _sleep_miners(devices: dict[str, MemoryDevice], n: int) -> None:
    """``n`` miners asleep: the site draws less than with every device running."""
    for dev in [d for i, d in sorted(devices.items()) if not i.startswith("gpu")][:n]:
        dev.state = "sleeping"


def _metric(d: Daemon, name: str) -> float:
    fams: list[Metric] = list(DaemonCollector(d).collect())
    (value,) = [s.value for f in fams for s in f.samples if s.name == name]
    return float(value)


def _peak(d: Daemon) -> float:
    """The billing peak as the planner is given it, checked against /metrics."""
    kw = d.planning.state(d.clock.time()).billing_peak_kw
    assert kw is not None
    assert _metric(d, "gridsched_site_billing_peak_watts") == kw * 1000
    return kw


def test_a_restart_keeps_the_billing_periods_peak(tmp_path: Path) -> None:
    clock = FakeClock(_utc("2026-08-10T12:00:00"))
    d, devices = _daemon(tmp_path, clock)
    seen: dict[str, float] = {}

    async def full() -> None:
        seen["import"] = d.measured()["import_kw"]
        seen["peak"] = _peak(d)

    run_open(d, full)
    assert seen["peak"] == seen["import"] > 20.0  # every device running: 25.4 kW

    clock.advance(3600.0)  # an hour later, the same month: restarted with half the miners
    d, devices = _daemon(tmp_path, clock)
    _sleep_miners(devices, 4)

    async def after() -> None:
        assert d.measured()["import_kw"] < seen["import"] - 10.0
        assert _peak(d) == seen["import"]  # the month's, not this process's
        st = d.status()["billing_peak"]
        assert st["period"] == "2026-08"
        assert st["start"] == "2026-08-01T00:00:00-05:00"  # local midnight in Chicago
        assert st["peak_kw"] == seen["import"]

    run_open(d, after)


def test_a_new_billing_period_begins_at_zero_while_the_daemon_runs(tmp_path: Path) -> None:
    # 20:00 in Chicago on 31 August
    clock = FakeClock(_utc("2026-09-01T01:00:00"))
    d, devices = _daemon(tmp_path, clock)
    seen: dict[str, float] = {}

    async def body() -> None:
        full = d.measured()["import_kw"]
        assert _peak(d) == full
        _sleep_miners(devices, 4)
        clock.advance(3 * 3600.0)  # 23:00 in Chicago, still August (September in UTC)
        await d.poll(dispatch=False)
        assert d.measured()["import_kw"] < full - 10.0
        assert _peak(d) == full
        clock.advance(2 * 3600.0)  # 01:00 on 1 September in Chicago: a new month
        assert _peak(d) == 0.0  # nothing read in it yet: nothing billed yet
        await d.poll(dispatch=False)
        seen["low"] = d.measured()["import_kw"]
        assert _peak(d) == seen["low"]
        assert d.status()["billing_peak"]["period"] == "2026-09"
        assert _metric(d, "gridsched_site_billing_period_start_seconds") == _utc(
            "2026-09-01T05:00:00"
        )

    run_open(d, body)
    clock.advance(600.0)  # restarted in the new month, every device running again
    d, devices = _daemon(tmp_path, clock)
    _sleep_miners(devices, 8)

    async def later() -> None:
        assert d.measured()["import_kw"] < seen["low"]
        assert _peak(d) == seen["low"]  # September's, not August's

    run_open(d, later)


def test_billing_peak_so_far_counts_in_the_first_period_only(tmp_path: Path) -> None:
    """``[tariff] billing_peak_so_far_kw`` is the peak of the month the daemon starts in
    with a new state file; a month after one the state file holds begins at 0."""
    clock = FakeClock(_utc("2026-08-31T12:00:00"))
    tariff = {"billing_peak_so_far_kw": 100.0}
    d, _ = _daemon(tmp_path, clock, tariff)

    async def first() -> None:
        assert _peak(d) == 100.0
        clock.advance(86400.0)  # 1 September
        await d.poll(dispatch=False)
        assert _peak(d) == d.measured()["import_kw"] < 100.0

    run_open(d, first)
    d, _ = _daemon(tmp_path, clock, tariff)  # restarted in September: the file knows August

    async def again() -> None:
        assert _peak(d) < 100.0

    run_open(d, again)


def test_the_state_file_keeps_each_periods_peak(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)

    async def put() -> None:
        await store.put_billing_peak("2026-08", _utc("2026-08-01T05:00:00"), 71.4)
        await store.put_billing_peak("2026-08", _utc("2026-08-01T05:00:00"), 72.5)
        await store.put_billing_peak("2026-09", _utc("2026-09-01T05:00:00"), 3.0)

    asyncio.run(put())
    store.close()
    again = Store(path)
    try:
        assert again.billing_peaks() == {"2026-08": 72.5, "2026-09": 3.0}
    finally:
        again.close()


def test_a_horizon_into_the_next_month_floors_only_this_months_peak() -> None:
    site = make_site(
        site={"timezone": "UTC"},
        tariff={"demand_charge_usd_per_kw_month": 10.0, "billing_peak_so_far_kw": 0.0},
    )
    start = int(_utc("2026-08-31T22:00:00"))
    grid = uniform_grid(start, 4 * 3600, 3600)
    inp = assemble_inputs(
        site, grid, flat_series([10.0] * 4, start_s=start), None, SiteState(billing_peak_kw=70.0)
    )
    floors = {g.name: g.floor_kw for g in inp.peaks if g.kind == "demand-charge"}
    assert floors == {"demand-charge 2026-08": 70.0, "demand-charge 2026-09": 0.0}


def test_a_peak_the_state_file_refused_counts_and_is_written_at_the_next_poll() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.rows: dict[str, float] = {}
            self.fail = True

        async def put_billing_peak(self, period: str, start_at: float, peak_kw: float) -> None:
            if self.fail:
                raise OSError("disk full")
            self.rows[period] = peak_kw

    store = Flaky()
    failed: list[int] = []  # the daemon's gridsched_store_write_failures_total counts each
    peak = BillingPeak(ZoneInfo(CHICAGO), 0.0, {}, store, on_failure=lambda: failed.append(1))
    now = _utc("2026-08-10T12:00:00")
    asyncio.run(peak.observe(40.0, now))
    assert peak.peak_kw(now) == 40.0 and store.rows == {}
    assert peak.status(now)["error"] == "disk full"
    assert failed == [1]
    store.fail = False
    asyncio.run(peak.observe(30.0, now + 15))  # lower: the held peak is what is written
    assert store.rows == {"2026-08": 40.0} and peak.status(now)["error"] is None
