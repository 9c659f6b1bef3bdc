"""Issue 21: every consumer of site power takes each device's newest reading, whichever read
it, the telemetry sweep or the command's own read-back. At 30,000 miners a poll takes
minutes: a curtail confirmed by read-back must show in ``/v1/status`` (import, compliance),
in ``/metrics`` and in the fast path's load before the next poll, not up to ``poll_s``
after. Rule 2 holds: a device that cannot be read counts at its last known power, and a
reading from before a command is no confirmation of it. Devices in memory, no sweep after
the first (the test never polls again)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import AdapterError, ModeRequest, Telemetry
from models.signals import EventType, GridEvent
from scheduler.service.daemon import Daemon
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.sitefile import site_text
from tests.support.wait import until

SITE = site_text("newest reading")

FULL_KW = 8 * 3.0 + 2 * 0.7  # every miner and GPU at its top mode, PUE 1, no base load


def _cap(d: Daemon, limit_kw: float) -> GridEvent:
    start = datetime.fromtimestamp(d.clock.time(), UTC)
    return GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h",
                     limit_kw=limit_kw)  # fmt: skip


def _metric(d: Daemon, line_start: str) -> float:
    text = d.metrics_snapshot.render()[0].decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics")


async def _shed(d: Daemon, limit_kw: float) -> list[str]:
    """Store a curtail (the fast path not run by the intake) and run the fast path; the
    devices it told."""
    shed = d.shedder.request
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
    await d.accept([_cap(d, limit_kw)], "test", None, "{}")
    d.shedder.request = shed  # type: ignore[method-assign]
    return [o.device_id for o in await d.fast_path("test") if o.ok]


def test_status_shows_a_curtail_read_back_before_the_next_poll(tmp_path: Path) -> None:
    """Every sleep confirmed by its read-back, no poll since: ``/v1/status`` shows the lower
    import and the cap met, ``/metrics`` the same power, and the fast path's load is the
    read-back's (it sheds nothing more)."""
    d, devices = memory_daemon(SITE, tmp_path)
    gate = asyncio.Event()  # the read-backs' readings wait for it

    def held(dev: MemoryDevice) -> None:
        inner = dev.read

        async def read() -> Telemetry:
            await gate.wait()
            return await inner()

        dev.read = read  # type: ignore[method-assign]

    async def go() -> None:
        await d.open()
        try:
            for dev in devices.values():
                dev.readback_after_s = lambda: 0.05  # type: ignore[method-assign]
                held(dev)
            polls = d.poller.polls
            assert d.status()["import_kw"] == pytest.approx(FULL_KW)
            d.clock.advance(1)  # type: ignore[attr-defined]  # the readings after the command
            told = await _shed(d, 20.0)
            assert told and all(devices[i].state == "sleeping" for i in told)
            # accepted, not yet read back: what is reported is still the readings'
            assert d.status()["compliance"]["state"] == "not_met"
            gate.set()
            await until(lambda: not d.fleet.pending, timeout_s=30, what="every read-back")
            assert d.poller.polls == polls  # no poll read them
            left_kw = sum(dev.mode_w for dev in devices.values()) / 1000.0
            assert left_kw <= 20.0
            st = d.status()
            assert st["import_kw"] == pytest.approx(left_kw)
            assert st["compliance"]["state"] == "met", st["compliance"]
            assert st["compliance"]["devices_unread"] == 0
            assert _metric(d, 'gridsched_site_power_watts{kind="import"}') == pytest.approx(
                left_kw * 1000
            )
            assert d.measured(expect=True)["import_kw"] == pytest.approx(left_kw)
            assert await d.fast_path("again") == []  # nothing left to shed
        finally:
            await d.close()

    asyncio.run(go())


def test_a_device_the_poll_missed_counts_as_read_once_read_back(tmp_path: Path) -> None:
    """A miner whose reading failed in the poll is estimated (at its last power); read back
    since, it counts at that reading, read."""
    d, devices = memory_daemon(SITE, tmp_path)
    dev = devices["old/0"]
    fail = {"on": False}
    inner = dev.read

    async def read() -> Telemetry:
        if fail["on"]:
            raise AdapterError(dev.device_id, "no answer")
        return await inner()

    dev.read = read  # type: ignore[method-assign]

    async def go() -> None:
        await d.open()
        try:
            fail["on"] = True
            await d.poll(dispatch=False)
            assert d.status()["compliance"]["devices_unread"] == 1
            fail["on"] = False
            dev.readback_after_s = lambda: 0.05  # type: ignore[method-assign]
            d.clock.advance(1)  # type: ignore[attr-defined]
            outs = await d.fleet.apply({"old/0": ModeRequest("sleep")})
            d.devices.commanded(outs, {"old/0": "sleep"})
            await until(lambda: not d.fleet.pending, timeout_s=30, what="the read-back")
            c = d.status()["compliance"]
            assert c["devices_unread"] == 0
            assert d.status()["import_kw"] == pytest.approx(FULL_KW - 3.0)
        finally:
            await d.close()

    asyncio.run(go())


def test_a_device_that_cannot_be_read_back_counts_at_its_last_power(tmp_path: Path) -> None:
    """Told to sleep, it accepts, then no reading answers: it counts at its last reading
    (mining, 3 kW), never at the sleep it was told, nor at 0 kW."""
    d, devices = memory_daemon(SITE, tmp_path)
    dev = devices["old/0"]
    inner = dev.read
    fail = {"on": False}

    async def read() -> Telemetry:
        if fail["on"]:
            raise AdapterError(dev.device_id, "no answer")
        return await inner()

    dev.read = read  # type: ignore[method-assign]

    async def go() -> None:
        await d.open()
        try:
            fail["on"] = True
            dev.readback_after_s = lambda: 0.05  # type: ignore[method-assign]
            reads_before = d.fleet.status["old/0"].failures
            d.clock.advance(1)  # type: ignore[attr-defined]
            outs = await d.fleet.apply({"old/0": ModeRequest("sleep")})
            d.devices.commanded(outs, {"old/0": "sleep"})
            await until(lambda: d.fleet.status["old/0"].failures > reads_before,
                        timeout_s=30, what="a failed read-back")  # fmt: skip
            assert d.status()["import_kw"] == pytest.approx(FULL_KW)
            assert d.power.device("old/0", False).kw == pytest.approx(3.0)
        finally:
            fail["on"] = False
            await d.close()

    asyncio.run(go())


def test_a_fleet_workers_reading_is_heard_as_it_comes() -> None:
    """With ``fleet_workers``, read-backs are made in the workers; their readings reach the
    daemon's process in a worker's news (``Sync``), and are heard there, once each: not
    again when a later frame carries the same reading."""
    from adapters.fleet_shards import ShardedFleet
    from adapters.fleet_wire import Sync
    from adapters.outcomes import DeviceStatus
    from models.devices import DeviceClass, Mode
    from tests.support.clock import FakeClock
    from tests.support.memfleet import MemoryDevice

    dc = DeviceClass(name="m", kind="asic", count=1,
                     modes=[Mode(name="stock", power_kw=3.0, hashrate_ths=100)])  # fmt: skip
    clock = FakeClock()
    fleet = ShardedFleet([MemoryDevice("m/0", "mem", clock=clock, dc=dc)], workers=1)
    heard: list[Telemetry] = []
    fleet.on_reading = heard.append

    def news(at: float) -> Sync:
        t = Telemetry("m/0", at, "sleeping", power_w=250.0)
        return Sync(statuses=[DeviceStatus("m/0", "m", telemetry=t)])

    fleet._take(0, news(clock.time()))
    fleet._take(0, news(clock.time()))  # the same reading again (a copy, as unpickled)
    assert [t.at for t in heard] == [clock.time()]
    fleet._take(0, news(clock.time() + 1))
    assert [t.at for t in heard] == [clock.time(), clock.time() + 1]


def test_two_reads_crossing_leave_the_newer_reading() -> None:
    """A sweep's reading and a read-back's of one device cross: the older one, answered
    last, does not replace the newer as the device's reading (nor in site power)."""
    from adapters.fleet import Fleet
    from models.devices import DeviceClass, Mode
    from tests.support.clock import FakeClock

    dc = DeviceClass(name="m", kind="asic", count=1,
                     modes=[Mode(name="stock", power_kw=3.0, hashrate_ths=100)])  # fmt: skip
    clock = FakeClock()
    dev = MemoryDevice("m/0", "mem", clock=clock, dc=dc, target_w=3000.0)
    heard: list[Telemetry] = []
    fleet = Fleet([dev], clock=clock.time, on_reading=heard.append)
    inner = dev.read
    gate = asyncio.Event()
    calls = {"n": 0}

    async def read() -> Telemetry:
        t = await inner()  # stamped when asked
        calls["n"] += 1
        if calls["n"] == 1:
            await gate.wait()  # the first is answered last
        return t

    dev.read = read  # type: ignore[method-assign]

    async def go() -> None:
        try:
            first = asyncio.create_task(fleet.read_all())
            await until(lambda: calls["n"] == 1, timeout_s=10)
            clock.advance(1)
            await fleet.read_all()
            gate.set()
            await first
            t = fleet.status["m/0"].telemetry
            assert t is not None and t.at == clock.time()
            assert [x.at for x in heard] == [clock.time()]
        finally:
            await fleet.close()

    asyncio.run(go())
