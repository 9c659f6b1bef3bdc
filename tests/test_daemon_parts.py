"""The daemon's decisions without sockets and with a clock the test moves: what the fast
path sheds, what dispatch wakes within the ramp limit, when the site goes to the fail-safe
cap and back, and what a failed solve leaves in force. Devices are in memory
(tests/support/memfleet.py); the store is a real SQLite file, the planner the real one."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Health, ModeRequest
from models.signals import EventType, GridEvent
from scheduler.planner.solvers import SolverError
from scheduler.service.daemon import SLEEP, Daemon, ramp_batch
from scheduler.service.daemon.fastpath import ShedStep, choose
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.memfleet import run_open as _run
from tests.support.sitefile import DAEMON, site_text
from tests.support.wait import until


def _daemon(
    tmp_path: Path,
    clock: FakeClock,
    asleep: bool = False,
    hashprice: float = 0.05,
    site_extra: dict[str, Any] | None = None,
    daemon_extra: dict[str, Any] | None = None,
    pue: float = 1.0,
    posture: str = "sleep_miners",
    confirm_after_s: float = 0.0,
    committed: float = 1500.0,
    inference_extra: dict[str, Any] | None = None,
) -> tuple[Daemon, dict[str, MemoryDevice]]:
    text = site_text(
        "parts",
        pue=pue,
        site={"base_load_kw": 0, **(site_extra or {})},
        hashprice=hashprice,
        inference={
            "committed_tokens_s": committed,
            "committed_usd_per_mtok": 0.6,
            **(inference_extra or {}),
        },
        daemon={
            **DAEMON,
            "confirm_after_s": confirm_after_s,
            "failsafe_cap_kw": 4,
            "failsafe_posture": posture,
            **(daemon_extra or {}),
        },
    )
    return memory_daemon(text, tmp_path, clock, asleep)


async def _settled(d: Daemon) -> None:
    """Until the background fast path and re-plans asked so far have run."""
    await until(
        lambda: not d.shedder.running and not d.planning.pending and not d.tasks.running,
        step_s=0.005,
        what="background work finished",
    )


def _curtail(clock: FakeClock, limit_kw: float, id: str = "dr") -> GridEvent:
    start = datetime.fromtimestamp(clock.time(), UTC)
    return GridEvent(id=id, type=EventType.CURTAIL, start=start, duration="1h", limit_kw=limit_kw)


def _running(devices: dict[str, MemoryDevice], prefix: str) -> int:
    return sum(1 for i, dev in devices.items() if i.startswith(prefix) and dev.state == "running")


def test_a_curtail_sheds_the_least_valuable_kw_and_keeps_committed_inference(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # the shed alone

    async def body() -> None:
        assert d.measured()["import_kw"] == pytest.approx(25.4)  # 8 x 3 kW + 2 x 0.7 kW
        await d.accept([_curtail(clock, 14.0)], "test", None, "{}")
        await _settled(d)
        # 11.4 kW to shed: the four least efficient miners (12 kW), nothing else
        assert _running(devices, "old/") == 0 and _running(devices, "new/") == 4
        assert all(dev.told == [] for i, dev in devices.items() if not i.startswith("old/"))
        await d.poll(dispatch=False)  # read back: the miners are asleep
        assert not d.fleet.pending and d.plans.hold
        await d.accept([_curtail(clock, 0.0, "deeper")], "test", None, "{}")
        await _settled(d)
        # every miner; one GPU down to its low mode (1,600 tokens/s >= 1,500 committed);
        # the other stays at full: lower would break the commitment
        assert _running(devices, "old/") + _running(devices, "new/") == 0
        assert sorted(dev.target_w for i, dev in devices.items() if i.startswith("gpu/")) == [
            350.0,
            700.0,
        ]
        assert d.status()["compliance"]["state"] != "met"  # 1.05 kW above a 0 kW cap: said

    _run(d, body)


def test_choose_counts_unread_devices_as_told_but_not_as_saved() -> None:
    order = [
        ShedStep("a", ModeRequest("sleep"), SLEEP, 3.0),
        ShedStep("b", ModeRequest("sleep"), SLEEP, 3.0),
        ShedStep("c", ModeRequest("sleep"), SLEEP, 3.0),
    ]
    # 4 kW to shed, "a" cannot be read: it is told, and two readable miners are still needed
    chosen = choose(order, 4.0, {"a"}, tokens=0.0, floor=0.0, above={})
    assert set(chosen) == {"a", "b", "c"}
    chosen = choose(order, 2.0, set(), tokens=0.0, floor=0.0, above={"a": 1.0})
    assert set(chosen) == {"a"}


def test_wake_ups_come_in_batches_within_the_ramp_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    d, devices = _daemon(
        tmp_path, clock, asleep=True, hashprice=1.0, site_extra={"ramp_up_kw_per_min": 6}
    )

    async def body() -> None:
        plan = await d.replan("test")  # mining pays at 1 USD/TH/day: every miner wanted
        assert plan is not None and d.dispatcher.targets(clock.time())
        assert _running(devices, "old/") + _running(devices, "new/") == 0  # no time elapsed
        assert _running(devices, "gpu/") == 0  # not even a 0.7 kW GPU: the bucket is empty
        clock.advance(60)  # a minute fills the bucket: 6 kW; smallest steps first
        await d.dispatch()
        assert _running(devices, "gpu/") == 2  # 1.4 kW
        assert _running(devices, "old/") + _running(devices, "new/") == 1  # 3 kW; 1.6 left
        clock.advance(30)  # 1.6 + 3 kW: one more miner
        await d.dispatch()
        assert _running(devices, "old/") + _running(devices, "new/") == 2
        clock.advance(600)  # the bucket holds at most a minute's worth: two more, not all
        await d.dispatch()
        assert _running(devices, "old/") + _running(devices, "new/") == 4

    _run(d, body)


def test_a_silent_price_feed_brings_the_failsafe_cap_and_its_return_ends_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    start = int(clock.time()) - 86400
    rows = "".join(
        f"{datetime.fromtimestamp(start + h * 3600, UTC).isoformat()},30\n" for h in range(96)
    )
    (tmp_path / "p.csv").write_text("interval_start_utc,price\n" + rows)
    feed = {"kind": "file", "path": "p.csv", "column": "price", "silent_after_s": 600}
    d, devices = _daemon(tmp_path, clock, daemon_extra={"price_feed": feed})
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        await d.feeds.refresh_prices()
        await d.poll(dispatch=False)
        assert d.failsafe.state is None
        (tmp_path / "p.csv").unlink()  # the feed stops answering
        clock.advance(300)
        await d.feeds.refresh_prices()
        await d.poll(dispatch=False)
        assert d.failsafe.state is None and d.feeds.price_error  # within its limit
        clock.advance(301)
        await d.poll(dispatch=False)
        await _settled(d)
        assert d.failsafe.state is not None and "price feed silent" in d.failsafe.state
        assert d.cap_now()[0] == 4.0
        # 4 kW cap: every miner asleep; the GPUs keep the committed 1,500 tokens/s
        assert _running(devices, "old/") + _running(devices, "new/") == 0
        assert _running(devices, "gpu/") == 2
        (tmp_path / "p.csv").write_text("interval_start_utc,price\n" + rows)
        await d.feeds.refresh_prices()
        await d.poll(dispatch=False)
        assert d.failsafe.state is None and d.cap_now()[0] == 100.0
        said = [r[3]["reason"] for r in d.store.records(0, 1e12, ("failsafe",))]
        assert len(said) == 2 and "price feed silent" in said[0] and said[1] is None

    _run(d, body)


def test_a_price_feed_that_never_answered_is_silent_from_the_start(tmp_path: Path) -> None:
    """The docs walk (session 23): a price feed that had never answered did not count as
    silent (no good refresh to count from), so the daemon planned on the fallback prices
    (the demo's synthetic curve) for good, never in the fail-safe; and nothing said which
    prices the plan used."""
    clock = FakeClock()
    feed = {"kind": "file", "path": "missing.csv", "column": "price", "silent_after_s": 600}
    d, _ = _daemon(tmp_path, clock, daemon_extra={"price_feed": feed})

    async def body() -> None:
        await d.feeds.refresh_prices()
        assert d.feeds.prices is None and d.feeds.price_error
        plan = await d.replan("test")
        assert plan is not None
        assert any("no price read from the feed yet" in n for n in plan.notes), plan.notes
        d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]
        await d.poll(dispatch=False)
        assert d.failsafe.state is None  # within its limit from the start
        clock.advance(601)
        await d.feeds.refresh_prices()
        await d.poll(dispatch=False)
        await _settled(d)
        state = d.failsafe.state
        assert state is not None and "price feed silent" in state and "never" in state, state
        assert d.cap_now()[0] == 4.0

    _run(d, body)


def test_a_failing_feed_is_logged_once_per_change_not_at_every_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The docs walk (session 23): the same price feed warning at every refresh (every
    5 s there). One line when it fails, one when the error changes, one when it answers."""
    clock = FakeClock()
    feed = {"kind": "file", "path": "p.csv", "column": "price"}
    d, _ = _daemon(tmp_path, clock, daemon_extra={"price_feed": feed})
    start = int(clock.time()) - 86400
    rows = "".join(
        f"{datetime.fromtimestamp(start + h * 3600, UTC).isoformat()},30\n" for h in range(96)
    )

    async def body() -> None:
        for _ in range(3):
            await d.feeds.refresh_prices()
        (tmp_path / "p.csv").mkdir()  # another error
        await d.feeds.refresh_prices()
        await d.feeds.refresh_prices()
        (tmp_path / "p.csv").rmdir()
        (tmp_path / "p.csv").write_text("interval_start_utc,price\n" + rows)
        await d.feeds.refresh_prices()
        await d.feeds.refresh_prices()

    caplog.set_level(logging.INFO, "gridsched")
    _run(d, body)
    said = [r.getMessage() for r in caplog.records if "price feed" in r.getMessage()]
    assert len(said) == 3, said
    assert "not found" in said[0] and "directory" in said[1], said
    assert "answers again" in said[2], said


def test_a_failed_solve_keeps_the_last_good_plan_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock, hashprice=1.0)

    def broken(*a: Any, **k: Any) -> Any:
        raise SolverError("HiGHS: out of memory")

    async def body() -> None:
        good = await d.replan("test")
        assert good is not None and _running(devices, "old/") == 4
        monkeypatch.setattr(d.planning.planner, "plan", broken)
        assert await d.replan("test") is None
        assert d.plan is good and _running(devices, "old/") == 4  # nothing changed
        assert "last re-plan failed" in (d.health_problem() or "")
        assert d.failsafe.reason(clock.time()) is None  # the good plan still covers now
        clock.advance(3 * 3600)  # past the plan's end
        await d.poll()
        await _settled(d)
        assert "no good plan covers now" in (d.failsafe.state or "")
        # the fail-safe posture: miners asleep, committed inference served
        assert _running(devices, "old/") + _running(devices, "new/") == 0
        assert _running(devices, "gpu/") == 2

    _run(d, body)


def test_the_dispatcher_wakes_miners_as_fast_as_the_plans_ramp_and_no_faster(
    tmp_path: Path,
) -> None:
    """Issue 21: wakes follow the site's ramp limit in batches the plan and the dispatcher
    agree on. 1.2 kW/min: the plan wakes at most 6 kW (two 3 kW miners) per 5-minute step;
    the dispatcher, polled every 15 s, fills its bucket at the same rate and spends it as
    it fills, so it is never ahead of the plan, at most one miner behind at the end of a
    step (the plan's step is a level from its start, the bucket a rate), and never wakes
    more than a minute's worth, or one miner, within a minute."""
    clock = FakeClock()
    d, devices = _daemon(
        tmp_path, clock, asleep=True, hashprice=1.0, site_extra={"ramp_up_kw_per_min": 1.2}
    )
    for i, dev in devices.items():
        if i.startswith("gpu/"):  # serving already: only the miners wake
            dev.state = "running"

    def awake() -> int:
        return _running(devices, "old/") + _running(devices, "new/")

    async def body() -> None:
        await d.poll(dispatch=False)
        plan = await d.replan("test")
        assert plan is not None
        wanted = [
            sum(n for cp in plan.classes if cp.name != "gpu" for n in cp.units_at(k).values())
            for k in range(5)
        ]
        assert wanted[0] <= 2 and wanted == sorted(wanted) and wanted[4] > wanted[0]
        assert all(b - a <= 2 for a, b in itertools.pairwise(wanted))
        woken_at: list[float] = []
        last_k: int | None = None
        for _ in range(5 * 20):  # five steps, a poll every 15 s
            k = d.plans.index(clock.time())
            assert k is not None
            before = awake()
            await d.poll()
            woken_at += [clock.time()] * (awake() - before)
            assert awake() <= wanted[k]  # never ahead of the plan
            if last_k is not None and k != last_k:  # at the end of a step: its count
                assert awake() >= wanted[last_k] - 1, (wanted, woken_at)  # within a miner
            last_k = k
            clock.advance(15)
        assert awake() == wanted[4]
        # the bucket: within any minute at most a minute's worth (1.2 kW) or one 3 kW miner
        for t in woken_at:
            assert sum(1 for u in woken_at if t <= u < t + 60) <= 1

    _run(d, body)


def test_a_bucket_filled_in_sips_wakes_on_the_sip_that_fills_it() -> None:
    """Ten 15-second sips of 1.2 kW/min are 3 kW, though they sum to a hair under 3.0 in
    floating point: the 3 kW miner wakes on the tenth call, not a poll later."""
    tokens, woken = 0.0, []
    for call in range(1, 13):
        picked, tokens, _ = ramp_batch([(3.0, "m", "stock")], tokens, 1.2, 0.25, 100.0)
        if picked:
            woken.append(call)
            break
    assert woken == [10]


def test_reading_gaps_count_ramping_devices_below_and_hungry_ones_above(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock, pue=1.25)  # the gap at the meter
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        devices["gpu/1"].state = "sleeping"  # read first: asleep, no gap, and walk on
        devices["old/0"].target_w = 2000.0  # still ramping: reads 1 kW under its mode
        devices["old/1"].target_w = 2500.0  # and 0.5 kW under
        devices["new/0"].target_w = 3400.0  # draws 0.4 kW over it
        devices["gpu/0"].state = "sleeping"  # asleep: no gap
        await d.poll(dispatch=False)
        d.devices.modes.update({"old/0": "stock", "new/0": "stock", "gpu/0": SLEEP})
        d.devices.modes.update({"old/1": "stock", "gpu/1": SLEEP})
        d.power.readings = {"gpu/1": d.power.readings.pop("gpu/1"), **d.power.readings}
        below, above = d.shedder.reading_gaps()
        assert below == pytest.approx(1.25 * 1.5)
        assert above == {"new/0": pytest.approx(1.25 * 0.4)}
        del d.devices.modes["old/1"]  # a reading without a mode: no gap counted
        below, _ = d.shedder.reading_gaps()
        assert below == pytest.approx(1.25 * 1.0)
        d.devices.modes["old/1"] = "stock"
        devices["old/0"].follows = False
        await d.fleet.apply({"old/0": ModeRequest("run", 3000.0)})
        assert d.devices.awaiting("old/0") == "stock"  # not yet read back: at its mode
        below, _ = d.shedder.reading_gaps()
        assert below == pytest.approx(1.25 * 0.5)  # old/1 alone

    _run(d, body)


def test_the_failsafe_posture_serves_the_commitment_with_the_fewest_gpus_raised(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock)
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]  # posture alone
    for i in ("gpu/0", "gpu/1"):
        devices[i].target_w = 350.0  # both low: 1,200 < 1,500 tok/s committed

    async def body() -> None:
        assert d.devices.serving_tokens() == 1200.0
        out = await d.shedder.safe_posture("test")
        told = {o.device_id: o.request for o in out}
        # one GPU raised to full (1,600 >= 1,500); every miner asleep (sleep_miners)
        assert told.pop("gpu/0") == ModeRequest("run", 700.0)
        assert set(told) == {f"{c}/{i}" for c in ("old", "new") for i in range(4)}
        assert all(r == ModeRequest("sleep") for r in told.values())
        assert d.devices.modes["gpu/1"] == "low" and d.devices.modes["gpu/0"] == "full"
        rows = [r[3] for r in d.store.records(0, 1e12, ("commands",))]
        assert rows[-1]["why"] == "fail-safe" and rows[-1]["reason"] == "test"
        assert await d.shedder.safe_posture("again") == []  # nothing left to change

    _run(d, body)


def test_the_hold_posture_leaves_miners_and_serves_the_commitment(tmp_path: Path) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock, posture="hold")
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        devices["gpu/0"].state = "sleeping"
        devices["gpu/1"].state = "sleeping"
        await d.poll(dispatch=False)
        out = await d.shedder.safe_posture("test")
        assert {o.device_id for o in out} == {"gpu/0", "gpu/1"}  # 2,000 >= 1,500: both

    _run(d, body)


def test_a_shed_is_recorded_with_its_reason_load_cap_and_events_and_timed(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, _ = _daemon(tmp_path, clock, daemon_extra={"poll_s": 15})
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        assert await d.fast_path("nothing to do") == []  # 25.4 kW under 100 kW
        shed = d.shedder.request
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        await d.accept([_curtail(clock, 20.0)], "test", None, "{}")  # stored, not shed
        d.shedder.request = shed  # type: ignore[method-assign]
        out = await d.fast_path("test shed")
        assert [o.device_id for o in out] == ["old/0", "old/1"]  # 25.4 - 20 = 5.4: two
        rows = [r[3] for r in d.store.records(0, 1e12, ("commands",))]
        assert rows[-1]["why"] == "fast-path" and rows[-1]["reason"] == "test shed"
        assert rows[-1]["load_kw"] == 25.4 and rows[-1]["cap_kw"] == 20.0
        assert rows[-1]["events"] == ["dr"]
        assert d.counters.fast_path_s.count == 1 and d.plans.hold

    _run(d, body)


def test_fast_path_requests_coalesce_into_one_more_run(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = _daemon(tmp_path, clock)
    runs: list[str] = []
    gate = asyncio.Event()

    async def shed(reason: str) -> list[Any]:
        runs.append(reason)
        await gate.wait()
        return []

    d.shedder.shed = shed  # type: ignore[method-assign]

    async def body() -> None:
        d.request_fast_path("first")
        await asyncio.sleep(0)
        d.request_fast_path("second")
        d.request_fast_path("third")  # replaces the second: one more run, the latest reason
        assert d.shedder.running and d.shedder.again == "third"
        gate.set()
        await _settled(d)
        assert runs == ["first", "third"] and not d.shedder.running

    _run(d, body)


def test_a_miner_that_accepts_a_curtail_and_keeps_mining_is_caught_and_covered(
    tmp_path: Path,
) -> None:
    """Issue 16/23: "accepted" is not "done". A miner that answers OK and keeps hashing is
    counted at its reading once a reading past its firmware's time to show the change
    still shows it mining (not at the mode it was told; before session 21, only once its
    confirmation deadline passed), the next miner in the order is shed to cover it at
    that poll, and at its deadline it is marked unconfirmed and the read-back verdict is
    recorded (dispatch then sends it the plan's mode again)."""
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # the shed alone
    devices["old/0"].follows = False

    async def body() -> None:
        await d.accept([_curtail(clock, 20.0)], "test", None, "{}")  # 5.4 kW: two old
        await _settled(d)
        assert _running(devices, "old/") == 3  # old/1 asleep; old/0 said yes, kept mining
        assert d.measured(expect=True)["import_kw"] == pytest.approx(19.4)  # believed
        clock.advance(5)
        await d.poll(dispatch=False)
        await _settled(d)
        assert d.fleet.status["old/1"].health is Health.OK  # read back asleep: confirmed
        # old/0 read mining 5 s after its sleep went out (its firmware shows a change
        # within 1 s): counted at its reading, and the next miner covers it at once
        assert "old/0" in d.fleet.pending  # its verdict waits for its deadline
        assert devices["old/2"].state == "sleeping"
        assert d.measured(expect=True)["import_kw"] == pytest.approx(19.4)
        clock.advance(30)  # past its deadline (30 s)
        await d.poll(dispatch=False)
        await _settled(d)
        assert d.fleet.status["old/0"].health is Health.UNCONFIRMED
        assert [r.action for r in devices["old/0"].told] == ["sleep"]
        assert _running(devices, "old/") == 2 and _running(devices, "new/") == 4
        verdicts = [
            row
            for r in d.store.records(0, 1e12, ("commands",))
            if r[3]["why"] == "read-back"
            for row in r[3]["outcomes"]
        ]
        kinds = {(v["device"], v["kind"]) for v in verdicts}
        assert ("old/1", "confirmed") in kinds and ("old/0", "unconfirmed") in kinds
        assert d.power.device("old/0", expect=False).kw == pytest.approx(3.0)

    _run(d, body)


def _told(out: list[Any]) -> dict[str, ModeRequest]:
    return {o.device_id: o.request for o in out}


def test_the_failsafe_posture_raises_gpus_by_what_each_adds(tmp_path: Path) -> None:
    """Each GPU adds what its best mode serves beyond its mode now (all of it asleep);
    GPUs are raised in order until the commitment is met, exactly met counting as met;
    one already at its best adds nothing and is not told."""

    async def case(committed: float, modes: dict[str, str]) -> dict[str, ModeRequest]:
        d, devices = _daemon(tmp_path / str(committed), clock=FakeClock(), committed=committed)
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        for i, mode in modes.items():
            if mode == SLEEP:
                devices[i].state = "sleeping"
            else:
                devices[i].target_w = 700.0 if mode == "full" else 350.0
        await d.open()
        try:
            told = _told(await d.shedder.safe_posture("test"))
        finally:
            await d.close()
        return {i: r for i, r in told.items() if i.startswith("gpu/")}

    async def body() -> None:
        full = ModeRequest("run", 700.0)
        both_asleep = {"gpu/0": SLEEP, "gpu/1": SLEEP}
        assert await case(1000.0, both_asleep) == {"gpu/0": full}  # 1,000 met exactly
        assert await case(1000.5, both_asleep) == {"gpu/0": full, "gpu/1": full}
        both_low = {"gpu/0": "low", "gpu/1": "low"}
        assert await case(1900.0, both_low) == {"gpu/0": full, "gpu/1": full}  # +400 each
        assert await case(1500.0, both_low) == {"gpu/0": full}
        one_full = {"gpu/0": "full", "gpu/1": "low"}
        assert await case(2500.0, one_full) == {"gpu/1": full}

    asyncio.run(body())


def test_the_failsafe_posture_skips_unreachable_devices_and_sleeps_miners_never_read(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, _devices = _daemon(tmp_path, clock)
    asked: list[str] = []
    d.shedder.request = asked.append  # type: ignore[method-assign,assignment]

    async def body() -> None:
        d.fleet.status["gpu/0"].health = Health.UNREACHABLE  # first in order: skipped
        del d.devices.modes["old/3"]  # answers, never read into a mode: may be mining
        told = _told(await d.shedder.safe_posture("test"))
        assert "gpu/0" not in told
        assert told["old/3"] == ModeRequest("sleep")
        assert {i for i in told if i.startswith(("old/", "new/"))} == {
            f"{c}/{i}" for c in ("old", "new") for i in range(4)
        }
        assert asked == ["fail-safe: test"]  # then the fast path to the fail-safe cap

    _run(d, body)


def test_the_fast_path_sheds_only_beyond_the_cap_and_counts_commands_not_yet_read(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, _devices = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        await d.accept([_curtail(clock, 25.4, "at-load")], "test", None, "{}")
        assert await d.fast_path("exactly at the cap") == []  # 25.4 kW: met, nothing shed
        await d.accept([_curtail(clock, 24.9, "half-kw")], "test", None, "{}")
        assert [o.device_id for o in await d.fast_path("0.5 kW over")] == ["old/0"]
        # a second, lower cap before any reading: old/0 already counts as asleep
        await d.accept([_curtail(clock, 19.0, "lower")], "test", None, "{}")
        assert [o.device_id for o in await d.fast_path("lower")] == ["old/1", "old/2"]

    _run(d, body)


def test_a_miner_still_ramping_counts_at_its_mode_when_the_fast_path_sheds(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]
    devices["new/3"].target_w = 1000.0  # waking: reads 1 kW and will draw 3 kW

    async def body() -> None:
        d.devices.modes["new/3"] = "stock"
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        await d.accept([_curtail(clock, 22.0)], "test", None, "{}")
        # read 23.4 kW (1.4 over), 25.4 kW once new/3 is up (3.4 over): two miners, not one
        assert [o.device_id for o in await d.fast_path("ramping")] == ["old/0", "old/1"]

    _run(d, body)


def test_the_committed_floor_follows_the_hourly_profile_at_the_clocks_hour(
    tmp_path: Path,
) -> None:
    profile = [0.5] * 12 + [1.0] * 12  # half the commitment in the site's morning hours
    clock = FakeClock(1_786_363_200.0 - 6 * 3600)  # 06:00 UTC
    d, _devices = _daemon(
        tmp_path, clock, committed=2000.0, inference_extra={"hourly_profile": profile}
    )
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        assert d.devices.committed_tokens_s(clock.time()) == 1000.0
        await d.accept([_curtail(clock, 0.0)], "test", None, "{}")
        out = _told(await d.fast_path("deep"))
        # 1,000 tok/s committed now: both GPUs down to low (1,200), one then asleep? no:
        # asleep from low loses 600, leaving 600 < 1,000; so both low, none asleep
        assert {i: r for i, r in out.items() if i.startswith("gpu/")} == {
            "gpu/0": ModeRequest("run", 350.0),
            "gpu/1": ModeRequest("run", 350.0),
        }

    _run(d, body)


def test_background_work_fails_under_its_own_name(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = _daemon(tmp_path, clock, daemon_extra={"poll_s": 15}, confirm_after_s=0.05)

    async def broken(*a: Any, **k: Any) -> Any:
        raise OSError("fleet gone")

    async def body() -> None:
        d.power.meter = object()  # type: ignore[assignment]  # read again after a shed
        shed = d.shedder.shed
        d.shedder.shed = broken  # type: ignore[method-assign]
        d.request_fast_path("x")
        await _settled(d)
        assert d.counters.task_failures == {"fast-path": 1} and not d.shedder.running
        d.request_fast_path("once")  # a single request runs once
        await _settled(d)
        assert d.counters.task_failures == {"fast-path": 2}
        d.shedder.shed = shed  # type: ignore[method-assign]
        d.power.read_meter = broken  # type: ignore[method-assign]
        d.shedder._meter_soon()
        d.shedder._meter_soon()  # one meter read at a time
        await _settled(d)
        assert d.counters.task_failures == {"fast-path": 2, "meter": 1}
        d.shedder._meter_soon()  # the next shed may ask again
        await _settled(d)
        assert d.counters.task_failures == {"fast-path": 2, "meter": 2}
        d.power.meter = None  # closed with the daemon

    _run(d, body)


def test_no_meter_read_after_a_shed_unless_confirm_after_is_between_zero_and_the_poll(
    tmp_path: Path,
) -> None:
    for confirm_s in (0.0, 15.0, 0.05):
        clock = FakeClock()
        d, _ = _daemon(
            tmp_path / str(confirm_s),
            clock,
            daemon_extra={"poll_s": 15},
            confirm_after_s=confirm_s,
        )

        async def body(d: Daemon = d, confirm_s: float = confirm_s) -> None:
            if confirm_s == 0.05:
                assert d.power.meter is None  # 0.05 s is in range, but there is no meter
            d.shedder._meter_soon()
            assert not d.tasks.running

        _run(d, body)


def test_a_cap_on_some_classes_sheds_only_them_at_once(tmp_path: Path) -> None:
    """Issue 19: an event that names device classes caps their power at the meter; the
    fast path sheds inside those classes (by the same order, within the committed floor)
    even while the site's import is far under its own cap, and leaves the rest alone."""
    clock = FakeClock()
    d, _ = _daemon(tmp_path, clock, pue=1.25)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    def capped(limit_kw: float, classes: tuple[str, ...], id: str) -> GridEvent:
        start = datetime.fromtimestamp(clock.time(), UTC)
        return GridEvent(
            id=id,
            type=EventType.CURTAIL,
            start=start,
            duration="1h",
            limit_kw=limit_kw,
            classes=classes,
        )

    async def body() -> None:
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        await d.accept([capped(8.0, ("old",), "old-cap")], "test", None, "{}")
        # old: 4 x 3 kW x 1.25 = 15 kW at the meter, cap 8: two miners (7.5 kW) shed
        out = _told(await d.fast_path("class cap"))
        assert set(out) == {"old/0", "old/1"}
        assert d.cap_now()[0] == 100.0  # the site's own cap is untouched
        (old_cap,) = d.status()["class_caps"]
        assert old_cap["classes"] == ["old"] and old_cap["cap_kw"] == 8.0
        # not read since the shed: the old miners count at their last reading, above the cap
        assert old_cap["state"] == "not_met" and old_cap["power_kw"] == pytest.approx(15.0)
        await d.poll(dispatch=False)  # read back: two asleep, 2 x 3 kW x 1.25 = 7.5 kW
        (old_cap,) = d.status()["class_caps"]
        assert old_cap["state"] == "met" and old_cap["power_kw"] == pytest.approx(7.5)
        await d.accept([capped(0.0, ("gpu",), "gpu-cap")], "test", None, "{}")
        out = _told(await d.fast_path("gpu cap"))
        # the GPUs go as low as the 1,500 tok/s commitment allows: one down, none asleep
        assert out == {"gpu/0": ModeRequest("run", 350.0)}

    _run(d, body)


def test_class_caps_that_cannot_be_computed_are_said_and_the_site_cap_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 3: a part that fails says so. If the caps on classes cannot be computed (a bug:
    the intake refuses unknown classes), none is enforced, the site's own cap still is, and
    /v1/status says why."""
    from scheduler.service.daemon import signals as signals_module

    clock = FakeClock()
    d, _ = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    def broken(*a: Any, **k: Any) -> Any:
        raise ValueError("no such class")

    async def body() -> None:
        d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
        start = datetime.fromtimestamp(clock.time(), UTC)
        on_old = GridEvent(
            id="old-cap",
            type=EventType.CURTAIL,
            start=start,
            duration="1h",
            limit_kw=1.0,
            classes=("old",),
        )
        await d.accept([on_old, _curtail(clock, 20.0)], "test", None, "{}")
        monkeypatch.setattr(signals_module, "class_caps_at", broken)
        out = _told(await d.fast_path("site cap"))
        assert set(out) == {"old/0", "old/1"}  # the site's 20 kW cap: 5.4 kW, two miners
        st = d.status()
        assert st["class_caps"] == [] and st["class_cap_error"] == "ValueError: no such class"
        monkeypatch.undo()
        assert d.status()["class_cap_error"] is None

    _run(d, body)


def test_stopping_while_a_poll_runs_logs_no_job_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At site scale a poll is always running, so every stop cancelled one: APScheduler
    logged its CancelledError as a job that raised, with a traceback, and the daemon
    counted a task failure. A job cut short by the daemon's own stop is not a failure."""
    d, _ = _daemon(tmp_path, FakeClock())
    polling = asyncio.Event()

    async def body() -> None:
        await d.start()
        assert d.scheduler is not None

        async def poll(dispatch: bool = True) -> None:
            polling.set()
            await asyncio.Event().wait()  # a sweep of thousands of devices, still going

        d.poller.poll = poll  # type: ignore[method-assign]
        d.scheduler.get_job("poll").modify(next_run_time=datetime.now(UTC))
        await asyncio.wait_for(polling.wait(), 10)
        caplog.clear()
        await d.stop()

    asyncio.run(body())
    errors = [r for r in caplog.records if r.levelno >= 40]
    assert errors == [], [r.getMessage() for r in errors]
    assert not d.counters.task_failures.get("poll")  # exported at 0 since session 24


def test_reading_gaps_walk_on_past_a_gpu_in_a_mode_of_no_class(tmp_path: Path) -> None:
    """A GPU at a limit no mode has (UNKNOWN, an operator's ``nvidia-smi -pl``) has no
    mode to lag: it adds no gap, and the devices read after it still count theirs."""
    from scheduler.service.daemon.devices import UNKNOWN

    clock = FakeClock()
    d, devices = _daemon(tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]

    async def body() -> None:
        devices["old/0"].target_w = 2000.0  # still ramping: reads 1 kW under its mode
        await d.poll(dispatch=False)
        d.devices.modes.update({"old/0": "stock", "gpu/1": UNKNOWN})
        d.power.readings = {"gpu/1": d.power.readings.pop("gpu/1"), **d.power.readings}
        below, _ = d.shedder.reading_gaps()
        assert below == pytest.approx(d.config.site.pue * 1.0)

    _run(d, body)


def test_a_scheduled_run_skipped_for_a_slow_one_is_said_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SRE's walk (session 24, N5): a price feed whose timeout equals its refresh_s made
    APScheduler log 'Execution of job "Feeds.refresh_prices (trigger: interval[0:00:30],
    next run at: ...)" skipped: maximum number of running instances reached (1)'. The
    daemon says it in its own words, once per job and run skipped, and APScheduler's
    line is left out."""
    from types import SimpleNamespace

    from scheduler.service.daemon.counters import Counters, Tasks, quiet_apscheduler_skips

    tasks = Tasks(Counters())
    aps = logging.getLogger("apscheduler.scheduler")
    quiet_apscheduler_skips()
    with caplog.at_level(logging.WARNING):
        aps.warning('Execution of job "%s" skipped: maximum number of running instances '
                    "reached (%d)", "Feeds.refresh_prices (trigger: interval)", 1)  # fmt: skip
        tasks.job_skipped(SimpleNamespace(job_id="prices"))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "prices: its last run is still going at its next time (slower than its period): "
        "this run skipped"
    ], said
