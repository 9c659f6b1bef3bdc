"""The daemon's dispatch in process, against simulated miners over real TCP: the shedding
order it precomputes, and power coming back in ramp-limited batches after an event."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from adapters.base import ModeRequest
from models.market import demo_prices
from models.signals import EventType, GridEvent
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.shedding import mining_order
from scheduler.planner.timegrid import uniform_grid
from scheduler.service.api import create_app
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.devices import mode_kw
from scheduler.service.daemon.fastpath import shed_order
from tests.support.daemon import daemon_of, free_loopback_base, running
from tests.support.wait import until
from tests.support.webhook import signed_headers

SITE = """
[site]
name = "dispatch test"
interconnect_kw = 500
pue = 1.0
base_load_kw = 0
ramp_up_kw_per_min = {ramp}

[prices]
format = "demo"

[mining]
hashprice_usd_per_ths_day = 0.08

[daemon]
horizon = "2h"
step = "5min"

[[devices]]
name = "old"
kind = "asic"
model = "S19j Pro"
count = 6
[devices.adapter]
kind = "sim"
sim_base = "{old}"
sim_sleep_s = 0.2
sim_wake_s = 0.4
timeout_s = 10

[[devices]]
name = "new"
kind = "asic"
model = "S21"
count = 6
[devices.adapter]
kind = "sim"
sim_base = "{new}"
sim_sleep_s = 0.2
sim_wake_s = 0.4
timeout_s = 10
"""


def _site(ramp_kw_per_min: float) -> str:
    """The site's text, its two miner classes on loopback /24s no other run holds."""
    old = free_loopback_base()
    new = next(b for b in iter(free_loopback_base, None) if b != old)
    return SITE.format(ramp=ramp_kw_per_min, old=old, new=new)


def _daemon(tmp_path: Path, ramp_kw_per_min: float) -> Daemon:
    return _daemon_of(tmp_path, _site(ramp_kw_per_min))


_daemon_of = daemon_of


def _awake(d: Daemon) -> int:
    return sum(1 for m in d.devices.modes.values() if m != SLEEP)


def _awake_kw(d: Daemon) -> float:
    """IT power of the awake devices at their modes' figures."""
    return sum(mode_kw(d.devices.class_of(i), m) for i, m in d.devices.modes.items() if m != SLEEP)


async def fast_path_done(d: Daemon) -> None:
    await until(lambda: not d.shedder.running, what="the fast path done")


async def curtail(d: Daemon, limit_kw: float, event_id: str = "dr") -> None:
    """Accept a curtail in force from now for an hour; return once the fast path is done."""
    now = datetime.now(UTC)
    ev = GridEvent(id=event_id, type=EventType.CURTAIL, start=now, duration="1h", limit_kw=limit_kw)
    await d.accept([ev], "test", None, "{}")
    await fast_path_done(d)


def test_fast_path_order_is_the_planners_shedding_order(tmp_path: Path) -> None:
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        async with running(d):
            assert _awake(d) == 12  # the simulators start mining
            order = shed_order(d.devices)
        classes = [d.fleet.status[s.device_id].group for s in order]
        # Least TH/s per kW first: every S19j Pro before any S21 ...
        assert classes == ["old"] * 6 + ["new"] * 6
        # ... the same ranking the policies and the backtest shed by.
        t0 = int(time.time()) // 300 * 300
        grid = uniform_grid(t0, 3600, 300)
        inp = assemble_inputs(d.config, grid, demo_prices(t0, t0 + 3600, "UTC"))
        ranked = [inp.class_names[inp.cm_class[k]] for k in mining_order(inp)]
        assert ranked.index("old") < ranked.index("new")
        assert all(s.request.action == "sleep" and s.saves_kw > 0 for s in order)

    asyncio.run(go())


def test_power_comes_back_in_ramp_limited_batches(tmp_path: Path) -> None:
    ramp = 12.0  # kW per minute: three or four miners' worth, a quarter of the fleet
    d = _daemon(tmp_path, ramp)

    async def go() -> None:
        async with running(d):
            await curtail(d, 0.0)
            assert _awake(d) == 0  # the fast path put every miner to sleep
            await d.replan("during the event")
            assert _awake(d) == 0

            await d.accept([GridEvent(id="dr", type=EventType.CANCEL)], "test", None, "{}")
            d.dispatcher.last_dispatch = (
                time.monotonic() - 120
            )  # the bucket has had two minutes to fill
            await d.replan("event over")
            first = _awake(d)
            kw = [
                d.devices.classes[d.fleet.status[i].group].mode(m).power_kw  # type: ignore[union-attr]
                for i, m in d.devices.modes.items()
                if m != SLEEP
            ]
            # at most a minute's worth of wake-ups at once, and always some progress
            assert 0 < first < 12
            assert sum(kw) <= ramp + 1e-6
            again = await d.dispatch()
            assert [o for o in again if o.request.action != "sleep"] == []  # no tokens left
            d.dispatcher.last_dispatch = time.monotonic() - 60
            await d.dispatch()
            assert first < _awake(d) <= 2 * first + 1  # the next minute's batch
            rows = [body for *_, body, _h in d.store.records(0, time.time() + 1, ("commands",))]
            assert any(b.get("deferred_by_ramp_or_cap", 0) > 0 for b in rows)

    asyncio.run(go())


def test_a_second_curtail_does_not_shed_the_same_kw_twice(tmp_path: Path) -> None:
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        async with running(d):
            full = _awake_kw(d)
            await curtail(d, full - 8.0, "first")
            after_first = _awake_kw(d)
            assert full - 8.0 - 3.6 < after_first <= full - 8.0  # a miner is about 3-3.6 kW
            # No poll in between: the readings still show the full load, the miners still
            # ramp down. The second curtail sheds only what the first did not.
            await curtail(d, full - 16.0, "second")
            assert full - 16.0 - 3.6 < _awake_kw(d) <= full - 16.0
            # the load it decides on: the commanded modes (plus the sleeping miners' idle
            # draw); what it reports (metrics, status, audit) stays the readings
            assert _awake_kw(d) <= d.measured(expect=True)["import_kw"] <= _awake_kw(d) + 0.5
            assert d.measured()["import_kw"] >= full - 0.5

    asyncio.run(go())


def test_a_shed_is_read_back_before_the_next_poll(tmp_path: Path) -> None:
    """After the fast path each miner told is read back on its own (the next poll is an
    hour away, and the fleet is not swept again): measured import, and so status and
    metrics, follow the shed as the read-backs come, and the audit trail has their
    verdicts."""
    text = _site(1000.0).replace('step = "5min"', 'step = "5min"\npoll_s = 3600')
    d = _daemon_of(tmp_path, text)

    async def go() -> None:
        async with running(d):
            for dev in d.fleet.by_id.values():  # the simulated miners sleep in 0.2 s
                dev.readback_after_s = lambda: 0.3  # type: ignore[method-assign]
            full = d.measured()["import_kw"]
            cap = full - 10.0
            polls = d.poller.polls
            await curtail(d, cap)

            def verdicts() -> int:
                rows = [r[3] for r in d.store.records(0, 4e9, ("commands",))]
                return sum(len(r["outcomes"]) for r in rows if r["why"] == "read-back")

            await until(
                lambda: not d.fleet.pending and d.measured()["import_kw"] <= cap and verdicts(),
                what="the shed read back and recorded",
            )
            assert d.status()["compliance"]["state"] == "met"
            assert d.poller.polls == polls

    asyncio.run(go())


def test_miners_still_ramping_up_are_shed_at_their_modes_power(tmp_path: Path) -> None:
    """Readings taken while miners ramp up show less than their mode draws a few seconds
    later: the fast path sheds for the mode's power, not the lagging reading (a 0 kW
    curtail once left the last five of 999 miners running until the re-plan)."""
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        async with running(d):
            full = _awake_kw(d)
            ramping = [i for i in d.power.readings if d.fleet.status[i].group == "new"]
            for i in ramping:  # read mid-ramp, at 60 % of their profile
                t = d.power.readings[i]
                d.power.readings[i] = dataclasses.replace(t, power_w=0.6 * (t.power_w or 0.0))
            d.power.invalidate()
            assert d.measured()["import_kw"] < full - 8.0  # the readings fit under the cap
            await curtail(d, full - 8.0)
            assert full - 8.0 - 3.6 < _awake_kw(d) <= full - 8.0  # what they ramp to does not
            # and with every miner reading low, a 0 kW cap still sheds every one of them
            await curtail(d, 0.0, "all")
            assert _awake(d) == 0

    asyncio.run(go())


def test_the_fast_path_sheds_while_the_signal_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _daemon(tmp_path, 1000.0)
    seen: dict[str, int] = {}

    async def go() -> None:
        async with running(d):
            real = d.store.add_signals

            async def slow_disk(*args: Any, **kwargs: Any) -> Any:
                # An fsync behind a busy disk: the write is held until the shed is done, so
                # a fast path that waited for the write never sheds (the wait times out).
                with contextlib.suppress(AssertionError):
                    await until(lambda: _awake(d) == 0, what="the shed during the write")
                seen["awake when written"] = _awake(d)
                return await real(*args, **kwargs)

            monkeypatch.setattr(d.store, "add_signals", slow_disk)
            now = datetime.now(UTC)
            ev = GridEvent(id="dr", type=EventType.CURTAIL, start=now, duration="1h", limit_kw=0)
            stored, _ids = await d.accept([ev], "test", None, "{}")
            assert stored and seen["awake when written"] == 0  # shed before the write ended
            assert "dr" in {e.id for e in d.active_events()}

    asyncio.run(go())


def test_a_signal_the_disk_refuses_is_answered_503_and_not_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "whsec_" + base64.b64encode(b"dispatch-test-secret").decode()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", secret)
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        async with running(d):

            async def full_disk(*args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(0.05)
                raise sqlite3.OperationalError("database or disk is full")

            monkeypatch.setattr(d.store, "add_signals", full_disk)
            app = create_app(d)
            body = json.dumps(
                {"id": "dr", "type": "curtail", "start": "2020-01-01T00:00:00Z", "limit_kw": 0}
            ).encode()
            headers = signed_headers(secret, "msg-1", body)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
                r = await c.post("/v1/signals", content=body, headers=headers)
            assert r.status_code == 503, r.text
            assert "disk is full" in r.json()["error"] and "send it again" in r.json()["error"]
            assert "dr" not in {e.id for e in d.active_events()}  # not accepted, not in force
            assert d.counters.signals[("simple", "not_stored")] == 1  # what the alert watches

    asyncio.run(go())


def test_a_replan_one_step_later_is_warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Billed peaks sit on fixed slots, so the horizon moving by a step keeps the matrix
    even with a coincident-peak window inside it, and the daemon re-solves warm."""
    now = datetime.now(UTC)
    window = (
        "\n[[tariff.coincident_peaks]]\n"
        'name = "4CP"\n'
        f'start = "{(now.hour + 1) % 24:02d}:00:00"\n'
        f'end = "{(now.hour + 1) % 24:02d}:59:00"\n'
        "weekdays_only = false\n"
        "usd_per_kw = 10.0\n"
        "[tariff]\ndemand_charge_usd_per_kw_month = 5.0\n"
    )
    text = _site(1000.0).replace("[daemon]", window + "\n[daemon]", 1)
    text = text.replace('horizon = "2h"', 'horizon = "4h"', 1)
    d = _daemon_of(tmp_path, text)

    async def go() -> None:
        async with running(d):
            first = await d.replan("first")
            assert first is not None and not first.warm
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 300.0)  # the next 5-min step
            second = await d.replan("next step")
            assert second is not None and second.warm
            assert second.starts_s[0] == first.starts_s[1]

    asyncio.run(go())


def test_dispatch_runs_at_each_step_boundary(tmp_path: Path) -> None:
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        d._start_jobs()
        try:
            job = d.scheduler.get_job("step")
            assert job.func.__wrapped__ == d.dispatch  # through Tasks.job
            assert job.trigger.interval.total_seconds() == 300  # the plan's 5-minute step
            at = job.next_run_time.timestamp()
            assert 0 < at - time.time() <= 300.1
            assert abs((at - 0.05) % 300) < 1e-3 or abs((at - 0.05) % 300 - 300) < 1e-3
        finally:
            d.scheduler.shutdown(wait=False)
            d.store.close()

    asyncio.run(go())


def test_a_miner_that_wakes_by_itself_during_an_event_is_put_back_to_sleep(
    tmp_path: Path,
) -> None:
    d = _daemon(tmp_path, 1000.0)

    async def go() -> None:
        async with running(d):
            await curtail(d, 0.0)

            async def confirmed() -> bool:  # the simulated miners sleep in 0.2 s
                await d.poll(dispatch=False)
                return not d.fleet.pending

            await until(confirmed, what="every sleep confirmed by a reading")
            assert _awake(d) == 0
            miner = d.built.simulators[0].miners[0]
            miner.wake()  # a reboot brings it back mining, against its command

            def mining() -> bool:  # its phase advances as its power is computed
                return miner.power_and_hashrate()[1] > 0 and miner.state.phase == "mining"

            await until(mining, what="mining again")
            await d.poll(dispatch=False)
            await fast_path_done(d)
            assert miner.state.phase == "sleeping"  # shed again, without waiting for a plan
            assert _awake(d) == 0

    asyncio.run(go())


def test_the_hashprice_feed_re_plans_and_a_bad_reading_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    feed = tmp_path / "hashprice.json"
    feed.write_text('{"data": {"hashprice": 55.0}}')  # USD per PH/s per day
    text = _site(1000.0) + (
        '\n[daemon.hashprice_feed]\nkind = "file"\npath = "hashprice.json"\n'
        'format = "json"\nkey = "data.hashprice"\nper = "PH"\n'
    )
    d = _daemon_of(tmp_path, text)

    async def go() -> None:
        async with running(d):
            assert d.status()["hashprice"]["usd_per_ths_day"] == 0.08  # [mining], before
            await d.feeds.refresh_hashprice()
            assert d.feeds.hashprice == pytest.approx(0.055)
            plan = await d.replan("test")
            assert plan is not None and np.allclose(plan.hashprice, 0.055)
            feed.write_text('{"data": {"hashprice": 55000}}')  # a unit slip upstream
            await d.feeds.refresh_hashprice()
            st = d.status()["hashprice"]
            assert st["usd_per_ths_day"] == pytest.approx(0.055) and "outside" in st["error"]
            feed.write_text('{"data": {"hashprice": 61.0}}')
            await d.feeds.refresh_hashprice()
            assert d.feeds.hashprice == pytest.approx(0.061) and d.feeds.hashprice_error is None
            assert d.planning.pending  # a change asks for a plan

    asyncio.run(go())


def test_sleeping_miners_take_their_next_wake_ahead_and_wake_in_one_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mining pays at every hour: at 0.08 the demo prices' evening peak (about 19:00 UTC)
    # kept the S19j Pros asleep after the event, and nothing was woken
    mines = _site(1000.0).replace(
        "hashprice_usd_per_ths_day = 0.08", "hashprice_usd_per_ths_day = 1.0"
    )
    d = _daemon_of(tmp_path, mines)

    async def go() -> None:
        async with running(d):
            miners = {m.host: m for sim in d.built.simulators for m in sim.miners}
            sim_of = {i: miners[dev.address] for i, dev in d.fleet.by_id.items()}
            start = datetime.now(UTC)
            ev = GridEvent(
                id="dr", type=EventType.CURTAIL, start=start, duration="20min", limit_kw=0.0
            )
            await d.accept([ev], "test", None, "{}")
            await fast_path_done(d)
            await d.replan("during the event")
            assert _awake(d) == 0
            assert d.dispatcher.stage_requests(time.time()) == {}  # nobody read asleep yet
            await until(  # the simulated miners sleep in 0.2 s
                lambda: all(m.power_and_hashrate()[0] < 100 for m in sim_of.values()),
                what="every miner asleep",
            )
            await d.poll()  # reads them asleep and stages their wakes
            await until(lambda: not d.dispatcher.staging, what="staging done")
            want = d.dispatcher.stage_requests(time.time())
            assert want and all(r.action == "run" for r in want.values())
            rows = [
                o
                for *_, body, _h in d.store.records(0, time.time() + 1, ("commands",))
                if body["why"] == "stage"
                for o in body["outcomes"]
            ]
            assert {o["device"] for o in rows} <= set(want) and rows
            assert all(o["ok"] for o in rows)
            for o in rows:
                sim = sim_of[o["device"]]
                assert sim.state.phase == "sleeping"  # a profile does not wake a LuxOS miner
                assert sim.preset(sim.state.profile).watts == o["applied_w"]

            # The event ends: dispatch wakes them, each with the wake alone.
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 1500.0)
            seen = {i: m.commands_seen for i, m in sim_of.items()}
            set_w = {i: m.preset(m.state.profile).watts for i, m in sim_of.items()}
            d.dispatcher.last_dispatch = time.monotonic() - 120
            out = await d.dispatch()
            woke = [o for o in out if o.ok and o.request.action == "run"]
            staged = {o["device"] for o in rows}
            assert staged & {o.device_id for o in woke}
            for o in woke:
                sent = sim_of[o.device_id].commands_seen - seen[o.device_id]
                # one command (the wake) where the profile was staged or already the
                # target's; two (profile, then wake) for a miner at another profile
                assert o.applied is not None
                ready = o.device_id in staged or set_w[o.device_id] == o.applied.target_w
                assert sent == (1 if ready else 2), (o.device_id, set_w[o.device_id], o.applied)

    asyncio.run(go())


def test_a_staging_failure_is_logged_and_the_next_poll_stages_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d = _daemon(tmp_path, 1000.0)

    async def broken(requests: Any) -> Any:
        raise RuntimeError("store gone")

    monkeypatch.setattr(
        d.dispatcher, "stage_requests", lambda now: {next(iter(d.fleet.by_id)): ModeRequest("run")}
    )
    monkeypatch.setattr(d.fleet, "stage", broken)
    d.dispatcher.staging = True  # as _poll sets it before spawning
    assert asyncio.run(d.dispatcher.stage_ahead()) == []
    assert not d.dispatcher.staging
    assert "staging the coming wakes failed" in caplog.text and "store gone" in caplog.text
