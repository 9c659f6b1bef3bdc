"""Minimum on-time across plans, in the daemon: the plan after a wake keeps the woken
units awake until their class's ``min_on_s`` has passed (``DeviceModes.woke_at``,
``SiteState.awake_since``), and dispatch keeps the ones woken last awake, not any of the
class's. Devices in memory (``tests/support/memfleet.py``) on a fake clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapters.base import ModeRequest
from scheduler.planner.plan import Plan
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.devices import SLEEP, UNKNOWN
from tests.conftest import flat_series
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon, run_open
from tests.support.sitefile import device_classes, site_text, stock_s19s

CHEAP, DEAR = 20.0, 9_000.0  # 3 kW, 100 TH/s at 0.08 USD/TH/day: mining pays below ~111


def _site(min_on_s: float) -> str:
    return site_text(
        "dwell",
        daemon={"horizon": "2h", "step": "5min", "stage_ahead_s": 0, "confirm_after_s": 0},
        devices=device_classes({**stock_s19s(4), "min_on_s": min_on_s}),
    )


async def _plan_at(d: Daemon, clock: FakeClock, price: float) -> Plan:
    start = int(clock.time()) - 3600
    d.feeds.prices = flat_series([price] * 8, start_s=start, label="flat test prices")
    plan = await d.replan("test")
    assert plan is not None and plan.ok, None if plan is None else plan.notes
    await d.dispatch()
    return plan


def _awake(d: Daemon) -> list[str]:
    return sorted(i for i, m in d.devices.modes.items() if m != SLEEP)


def test_miners_woken_a_minute_ago_stay_awake_through_a_price_spike(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = memory_daemon(_site(900), tmp_path, clock, asleep=True)

    async def body() -> None:
        await _plan_at(d, clock, DEAR)
        assert _awake(d) == []
        clock.advance(3600)
        await _plan_at(d, clock, CHEAP)
        woken = _awake(d)
        assert len(woken) == 4
        clock.advance(60)
        plan = await _plan_at(d, clock, DEAR)
        assert _awake(d) == woken, "slept within min_on_s"
        assert any("min_on_s" in n and "4 units" in n for n in plan.notes), plan.notes
        clock.advance(900)  # min-on over: the spike puts them to sleep
        await _plan_at(d, clock, DEAR)
        assert _awake(d) == []

    run_open(d, body)


def test_without_min_on_the_spike_sleeps_them_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = memory_daemon(_site(0), tmp_path, clock, asleep=True)

    async def body() -> None:
        await _plan_at(d, clock, DEAR)
        clock.advance(3600)
        await _plan_at(d, clock, CHEAP)
        assert len(_awake(d)) == 4
        clock.advance(60)
        await _plan_at(d, clock, DEAR)
        assert _awake(d) == []

    run_open(d, body)


def test_dispatch_keeps_the_miners_woken_last_and_wakes_the_longest_asleep(
    tmp_path: Path,
) -> None:
    """The plan counts units; dispatch picks which. It kept the first devices by id in
    their mode and woke the first by id: with two miners woken a minute ago and two woken
    hours ago, a plan keeping two awake slept the two within their min-on. Now the ones
    woken last stay awake, and of those asleep the one asleep longest wakes first."""
    from scheduler.service.daemon.dispatch import assign

    ids = ["s19/0", "s19/1", "s19/2", "s19/3"]
    modes = dict.fromkeys(ids, "stock")
    since = {"s19/0": 0.0, "s19/1": 0.0, "s19/2": 9_000.0, "s19/3": 9_000.0}
    got = assign(ids, modes, {"stock": 2}, since=since)
    assert [i for i in ids if got[i] != SLEEP] == ["s19/2", "s19/3"]
    asleep = dict.fromkeys(ids, SLEEP)
    slept = {"s19/0": 9_000.0, "s19/1": 100.0, "s19/2": 5_000.0, "s19/3": 50.0}
    got = assign(ids, asleep, {"stock": 2}, since=slept)
    assert [i for i in ids if got[i] != SLEEP] == ["s19/1", "s19/3"]


def _min_off_site(min_off_s: float) -> str:
    return site_text(
        "dwell",
        daemon={"horizon": "2h", "step": "5min", "stage_ahead_s": 0, "confirm_after_s": 0},
        devices=device_classes({**stock_s19s(4), "min_off_s": min_off_s}),
    )


def test_min_off_survives_a_restart_of_the_daemon(tmp_path: Path) -> None:
    """When the daemon put each unit to sleep was kept in memory only: a daemon restarted a
    minute after a curtail (an upgrade during a DR event) woke every miner at the next
    cheap price, within its min-off. It is now kept in the state file."""
    clock = FakeClock()
    d, _ = memory_daemon(_min_off_site(900), tmp_path, clock)

    async def first() -> None:
        await _plan_at(d, clock, CHEAP)
        assert len(_awake(d)) == 4
        clock.advance(60)
        await _plan_at(d, clock, DEAR)
        assert _awake(d) == []

    run_open(d, first)
    clock.advance(60)
    again, _ = memory_daemon(_min_off_site(900), tmp_path, clock, asleep=True)

    async def second() -> None:
        plan = await _plan_at(again, clock, CHEAP)
        assert _awake(again) == [], "woken within min_off_s after a restart"
        assert any("min_off_s" in n and "4 units" in n for n in plan.notes), plan.notes
        clock.advance(900)
        await _plan_at(again, clock, CHEAP)
        assert len(_awake(again)) == 4

    run_open(again, second)


def test_min_on_survives_a_restart_of_the_daemon(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = memory_daemon(_site(900), tmp_path, clock, asleep=True)

    async def first() -> None:
        await _plan_at(d, clock, CHEAP)
        assert len(_awake(d)) == 4

    run_open(d, first)
    clock.advance(60)
    again, _ = memory_daemon(_site(900), tmp_path, clock)  # running, as left

    async def second() -> None:
        await _plan_at(again, clock, DEAR)
        assert len(_awake(again)) == 4, "slept within min_on_s after a restart"

    run_open(again, second)


def test_the_shutdown_posture_counts_as_a_sleep_for_the_next_run(tmp_path: Path) -> None:
    """The shutdown posture puts miners to sleep outside dispatch: the next run keeps them
    asleep until their min-off has passed from the shutdown."""
    import asyncio

    from models.config_daemon import Posture

    clock = FakeClock()
    d, _ = memory_daemon(_min_off_site(900), tmp_path, clock)

    async def first() -> None:
        await d.open()
        await _plan_at(d, clock, CHEAP)
        assert len(_awake(d)) == 4
        await d.stop(Posture.SLEEP_ALL)

    asyncio.run(first())
    clock.advance(60)
    again, _ = memory_daemon(_min_off_site(900), tmp_path, clock, asleep=True)

    async def second() -> None:
        await _plan_at(again, clock, CHEAP)
        assert _awake(again) == [], "woken within min_off_s of the shutdown"

    run_open(again, second)


def test_stored_dwell_rows_not_understood_are_left_out_and_a_refused_write_is_counted() -> None:
    import asyncio

    from scheduler.service.daemon.counters import Counters
    from scheduler.service.daemon.dwell import Dwell
    from scheduler.service.daemon.recorder import Recorder

    dwell = Dwell()
    rows = {
        "s19/0": {"state": "asleep", "at": 100.0},
        "s19/1": {"state": "awake", "at": 200.0},
        "s19/2": {"state": "dozing", "at": 1.0},
        "s19/3": {"state": "asleep", "at": "soon"},
        "gone/0": {"state": "asleep", "at": 5.0},  # not a device of this site
    }
    assert dwell.restore(rows, {"s19/0", "s19/1", "s19/2", "s19/3"}) == 2
    assert dwell.slept_at == {"s19/0": 100.0} and dwell.woke_at == {"s19/1": 200.0}
    assert dwell.changes() == {}  # restored is not changed

    class Refusing:
        async def put_device_dwell(self, changes: object) -> None:
            raise OSError(28, "No space left on device")

    counters = Counters()
    recorder = Recorder(Refusing(), counters)  # type: ignore[arg-type]
    dwell.slept("s19/1", 300.0)
    asyncio.run(recorder.dwell(dwell.changes()))
    assert counters.store_failures == 1 and "No space left" in (recorder.error or "")


def test_the_shed_order_takes_the_units_woken_longest_ago_first(tmp_path: Path) -> None:
    """A cap sheds the least valuable kW first; among equals (a class's miners in one mode)
    it took them by id, so a curtail's first sheds could be the units woken a minute ago,
    within their min-on, while others had run for hours. Equal value: longest awake first."""
    from scheduler.service.daemon.shedorder import shed_order

    clock = FakeClock()
    d, _ = memory_daemon(_site(900), tmp_path, clock)

    async def body() -> None:
        d.devices.dwell.woke("s19/0", clock.time())
        d.devices.dwell.woke("s19/1", clock.time() - 7200)
        order = [s.device_id for s in shed_order(d.devices)]
        assert order == ["s19/2", "s19/3", "s19/1", "s19/0"], order

    run_open(d, body)


def test_a_mode_change_that_lowers_the_count_keeps_the_unit_woken_last() -> None:
    """Walk 26, D2: both awake in turbo, the plan wants one in eco: the awake devices that
    must change mode took the places longest-woken first, so the one woken last (within its
    min-on) was the one put to sleep."""
    from scheduler.service.daemon.dispatch import assign

    got = assign(
        ["A", "B"], {"A": "turbo", "B": "turbo"}, {"eco": 1, "turbo": 0},
        since={"A": 1000.0, "B": 5000.0},
    )  # fmt: skip
    assert got == {"A": SLEEP, "B": "eco"}, got


def test_a_miner_whose_target_climbs_above_its_mode_is_drift_and_put_back(
    tmp_path: Path,
) -> None:
    """Walk 26, D3: LuxOS's ATM, turned on by an operator between two profile changes,
    climbed a miner set to eco (395MHz) to 595MHz (3.4 kW); status went on saying eco and
    nothing was logged: drift checked only sleep/run. A target read above the mode's power
    is drift: the mode read is taken, counted, and the next dispatch puts it back (a LuxOS
    change then caps ATM's ceiling at the profile set). Below it is a preset's rounding or
    ATM stepping down, not drift."""
    text = site_text(
        "drift",
        daemon={"horizon": "2h", "step": "5min", "stage_ahead_s": 0, "confirm_after_s": 0},
        devices=device_classes(
            {"name": "m", "kind": "asic", "count": 2, "modes": [
                {"name": "eco", "power_kw": 2.0, "hashrate_ths": 80.0},
                {"name": "full", "power_kw": 3.0, "hashrate_ths": 100.0}]}
        ),
    )  # fmt: skip
    clock = FakeClock()
    d, devs = memory_daemon(text, tmp_path, clock)

    async def body() -> None:
        await d.replan("test")
        plan = d.plans.plan
        assert plan is not None
        (cp,) = plan.classes
        cp.units_by_mode[:, :] = 0
        cp.units_by_mode[cp.modes.index("eco"), :] = 2
        await d.dispatch()
        await d.poll(dispatch=False)
        assert d.devices.modes["m/0"] == "eco" and devs["m/0"].target_w == 2000.0
        devs["m/1"].target_w = 1900.0  # a lower preset, or ATM stepping down: no drift
        devs["m/0"].target_w = 2344.0  # ATM climbed, nearer eco than full (walk 26b, N1)
        await d.poll(dispatch=False)
        assert d.devices.modes["m/0"] == "full" and d.devices.modes["m/1"] == "eco"
        assert d.status()["classes"]["m"]["drifted"] == {"power_target": 1}
        await d.dispatch()
        assert devs["m/0"].target_w == 2000.0 and d.devices.modes["m/0"] == "eco"
        await d.poll(dispatch=False)  # the put-back read back
        # above every mode (a factory setting higher than the class's top): no mode; sent one
        devs["m/0"].target_w = 3500.0
        await d.poll(dispatch=False)
        assert d.devices.modes["m/0"] == UNKNOWN
        await d.dispatch()
        assert devs["m/0"].target_w == 2000.0 and d.devices.modes["m/0"] == "eco"
        await d.poll(dispatch=False)
        assert d.status()["classes"]["m"]["drifted"] == {"power_target": 2}

    run_open(d, body)


def test_a_cap_that_stops_units_within_their_min_on_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Walk 26, D6: a curtail in force at once is shed by the fast path before any plan:
    the units it stopped within their min-on were said nowhere (the plan's note comes only
    for a cap ahead). The log says it, per class."""
    caplog.set_level(logging.WARNING, "gridsched.daemon")
    clock = FakeClock()
    d, _ = memory_daemon(_site(900), tmp_path, clock, asleep=True)

    async def body() -> None:
        await _plan_at(d, clock, CHEAP)
        assert len(_awake(d)) == 4
        clock.advance(60)
        await d.fast_path("a curtail at once")  # no cap: nothing to shed, nothing said
        assert not [r for r in caplog.records if "min_on_s" in r.getMessage()]
        out = await d.fleet.apply({i: ModeRequest("sleep") for i in _awake(d)})
        d.devices.commanded(out, {i: SLEEP for i in _awake(d)})
        (line,) = [r.getMessage() for r in caplog.records if "min_on_s" in r.getMessage()]
        assert "4 of s19" in line, line

    run_open(d, body)


def test_a_sleep_not_followed_is_no_wake_and_its_resend_is_not_within_min_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Walk 26c: miners that never stopped hashing (a sleep accepted and not followed) were
    taken, at the unconfirmed verdict, as woken then: the re-sent sleep was said to stop
    them "before their min_on_s has passed"."""
    caplog.set_level(logging.WARNING, "gridsched.daemon")
    clock = FakeClock()
    d, devs = memory_daemon(_site(900), tmp_path, clock)

    async def body() -> None:
        await d.poll(dispatch=False)
        devs["s19/0"].follows = False
        out = await d.fleet.apply({"s19/0": ModeRequest("sleep")})
        d.devices.commanded(out, {"s19/0": SLEEP})
        t = d.fleet.status["s19/0"].telemetry
        assert t is not None
        d.devices.adopt("s19/0", t, "did not follow: unconfirmed")  # the verdict's path
        assert "s19/0" not in d.devices.woke_at and "s19/0" not in d.devices.slept_at
        clock.advance(60)
        out = await d.fleet.apply({"s19/0": ModeRequest("sleep")})
        d.devices.commanded(out, {"s19/0": SLEEP})
        assert not [r for r in caplog.records if "min_on_s" in r.getMessage()]

    run_open(d, body)
