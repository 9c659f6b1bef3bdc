"""The fast path on a run of events, each lowering the cap a little: what it counts as the
site's load when an event comes in the middle of a poll. Devices in memory
(tests/support/memfleet.py), the clock the test's; the store a real SQLite file."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Telemetry
from models.signals import EventType, GridEvent
from scheduler.service.daemon import Daemon
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon, run_open
from tests.support.sitefile import site_text
from tests.support.wait import until

SITE = site_text(
    "events",
    site={"base_load_kw": 0},
    hashprice=0.05,
    inference={"committed_tokens_s": 1500, "committed_usd_per_mtok": 0.6},
)


def _curtail(clock: FakeClock, limit_kw: float, id: str) -> GridEvent:
    start = datetime.fromtimestamp(clock.time(), UTC)
    return GridEvent(id=id, type=EventType.CURTAIL, start=start, duration="1h", limit_kw=limit_kw)


def _asleep(devices: dict[str, MemoryDevice]) -> set[str]:
    return {i for i, dev in devices.items() if dev.state == "sleeping"}


async def _shed_settled(d: Daemon) -> None:
    await until(lambda: not d.shedder.running, what="the fast path to finish")


def test_an_event_during_a_poll_does_not_count_devices_read_asleep_at_their_old_reading(
    tmp_path: Path,
) -> None:
    """A poll settles each command as its device's reading comes in, but the site's load
    takes the poll's readings only once every device has answered. In between, a miner
    read asleep is no longer awaiting its read-back, so it counted at its reading from the
    poll before: asleep, yet at full power. An event in that window saw load that was not
    there and slept more miners than its cap needed."""
    clock = FakeClock()
    d, devices = memory_daemon(SITE, tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # the shed alone
    gate = asyncio.Event()
    held = devices["gpu/1"]
    read = held.read

    async def slow_read() -> Telemetry:  # the last device of the poll answers late
        await gate.wait()
        return await read()

    async def body() -> None:
        # 25.4 kW (8 miners x 3 kW, 2 GPUs x 0.7 kW); 3.4 kW over 22 kW: two miners
        await d.accept([_curtail(clock, 22.0, "first")], "test", None, "{}")
        await _shed_settled(d)
        assert _asleep(devices) == {"old/0", "old/1"}
        held.read = slow_read  # type: ignore[method-assign]
        clock.advance(1.0)
        poll = asyncio.create_task(d.poll(dispatch=False))
        # every miner has answered (their sleep read back); the poll waits on gpu/1
        await until(lambda: not d.fleet.pending, what="the sleeps read back")
        assert not poll.done()
        now = clock.time()
        assert d.power.measured(now, expect=True)["import_kw"] == pytest.approx(19.4)
        # 0.4 kW over 19 kW: one more miner, not three
        await d.accept([_curtail(clock, 19.0, "second")], "test", None, "{}")
        await _shed_settled(d)
        assert _asleep(devices) == {"old/0", "old/1", "old/2"}
        gate.set()
        await poll
        # old/2 was read before its command: it counts at its new mode until read again
        assert d.power.measured(clock.time(), expect=True)["import_kw"] == pytest.approx(16.4)
        assert d.measured()["import_kw"] == pytest.approx(19.4)  # what the poll read

    run_open(d, body)


def test_a_plan_solved_before_an_event_does_not_wake_what_its_fast_path_slept(
    tmp_path: Path,
) -> None:
    """A re-plan that began before an event and ends after the event's fast path was made
    without its cap. Adopting it must not hand dispatch the old plan's wakes: dispatch's
    headroom counts miners still ramping up at their readings, so it woke the miners the
    fast path had just slept to make room for those ramps, over the new cap."""
    clock = FakeClock()
    d, devices = memory_daemon(
        SITE.replace("hashprice_usd_per_ths_day = 0.05", "hashprice_usd_per_ths_day = 1.0"),
        tmp_path,
        clock,
    )
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # one re-plan
    for i in ("new/0", "new/1", "new/2", "new/3"):
        devices[i].target_w = 1000.0  # ramping up: each reads 1 kW on its way to 3 kW
    solve = d.planning.planner.plan
    entered, release = threading.Event(), threading.Event()

    def slow_plan(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return solve(*args, **kwargs)

    d.planning.planner.plan = slow_plan  # type: ignore[method-assign]

    async def body() -> None:
        await d.poll(dispatch=False)
        replan = asyncio.create_task(d.replan("before the event"))
        await until(entered.is_set, what="the solve to start")
        # 17.4 kW read, 25.4 kW at the miners' modes: 6 kW over 19.4 kW, two miners
        await d.accept([_curtail(clock, 19.4, "during-solve")], "test", None, "{}")
        await _shed_settled(d)
        assert _asleep(devices) == {"old/0", "old/1"}
        clock.advance(60.0)
        release.set()
        assert await replan is not None
        await d.dispatch()
        assert _asleep(devices) == {"old/0", "old/1"} and d.plans.hold
        # the plan made with the event dispatches, within the cap (less its margin)
        d.planning.planner.plan = solve  # type: ignore[method-assign]
        assert await d.replan("after the event") is not None
        assert not d.plans.hold and {"old/0", "old/1"} <= _asleep(devices)

    run_open(d, body)


def test_a_shed_by_the_poll_re_plans_so_that_a_cap_starting_later_is_enforced(
    tmp_path: Path,
) -> None:
    """Field audit (session 20), no. 1: the poll's fast path (a miner slept for a curtail
    back to hashing on its own) put dispatch on hold, which only a new plan releases, and
    asked for none. A second cap starting later was then not enforced until the scheduled
    re-plan: 53.7 kW under a 20 kW cap for 3.6 minutes, no command sent."""
    clock = FakeClock()
    d, devices = memory_daemon(SITE, tmp_path, clock)

    async def planned(after: int) -> None:
        """A plan adopted since generation ``after`` (its dispatch done), dispatch free."""
        await until(
            lambda: (
                d.plans.generation > after
                and not d.plans.hold
                and not d.planning._lock.locked()
                and not d.dispatcher._lock.locked()
            ),
            what="a new plan",
        )

    async def body() -> None:
        assert await d.replan("start") is not None
        gen = d.plans.generation
        await d.accept([_curtail(clock, 22.0, "first")], "test", None, "{}")
        await _shed_settled(d)
        await planned(gen)
        later = GridEvent(
            id="later",
            type=EventType.CURTAIL,
            start=datetime.fromtimestamp(clock.time() + 600, UTC),
            duration="1h",
            limit_kw=10.0,
        )
        gen = d.plans.generation
        await d.accept([later], "test", None, "{}")
        await planned(gen)
        slept = sorted(i for i in _asleep(devices) if not i.startswith("gpu"))
        assert slept
        for i in slept:
            devices[i].state = "running"  # rebooted into mining during the event: 24 kW
        clock.advance(30.0)
        gen = d.plans.generation
        await d.poll(dispatch=False)  # (its dispatch might put them back first: a race)
        await _shed_settled(d)
        assert d.counters.fast_path_s.count >= 2
        await planned(gen)  # the shed re-plans: dispatch is not held until the schedule's
        clock.advance(600.0)
        await d.poll()  # the plan's step for the new cap is dispatched
        await _shed_settled(d)
        assert d.power.measured(clock.time(), expect=True)["import_kw"] <= 10.0

    run_open(d, body)


def test_an_alert_without_a_figure_caps_the_fast_path_where_it_caps_the_plan(
    tmp_path: Path,
) -> None:
    """An alert with no limit_kw or level, on a site without a DR level 3, caps import at
    the protected load: base load and committed inference. The planner counted both; the
    fast path counted the base load alone (0 kW here) and shed for a cap that committed
    inference can never meet."""
    from scheduler.planner.objectives import offered_modes

    clock = FakeClock()
    d, _ = memory_daemon(SITE, tmp_path, clock)
    offered, _ = offered_modes(d.config)
    best = min(m.power_kw / tok for offer in offered for m, tok in offer if tok > 0)
    protected = d.config.site.pue * 1500 * best  # base load 0

    async def body() -> None:
        start = datetime.fromtimestamp(clock.time(), UTC)
        alert = GridEvent(id="alert", type=EventType.ALERT, start=start, duration="1h")
        await d.accept([alert], "test", None, "{}")
        assert protected > 0
        assert d.cap_now()[0] == pytest.approx(protected)

    run_open(d, body)
