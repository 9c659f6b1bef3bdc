"""Issue 21: after a shed the daemon no longer reads the whole fleet again
(``[daemon] confirm_after_s`` did, so that status and verdicts came before the next poll).
Each accepted command is read back on its own, and its reading counts at once
(tests/test_newest_reading.py): the re-poll re-read every device, at 30,000 miners a sweep
of minutes competing with the read-backs, for nothing. What it still gave, a fresh site
meter figure, is kept: with a meter, ``confirm_after_s`` after a shed reads the meter (one
Modbus read) and nothing else. Devices in memory; the meter a real pymodbus server."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import Telemetry
from models.signals import EventType, GridEvent
from scheduler.service.daemon import Daemon
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.sitefile import DAEMON, site_text
from tests.support.wait import until
from tests.test_meter import sunspec_meter


def _site(meter_port: int | None = None) -> str:
    """The site; with ``meter_port``, its meter a SunSpec one on 127.0.0.1 at that port."""
    meter = (
        None if meter_port is None else {"host": "127.0.0.1", "port": meter_port, "timeout_s": 10}
    )
    return site_text(
        "no re-poll",
        site={"meter": meter},
        daemon={**DAEMON, "poll_s": 3600, "confirm_after_s": 0.05},
    )


def _counted(devices: dict[str, MemoryDevice]) -> Counter[str]:
    reads: Counter[str] = Counter()
    for dev in devices.values():
        inner = dev.read

        async def read(dev: MemoryDevice = dev, inner: object = inner) -> Telemetry:
            reads[dev.device_id] += 1
            got: Telemetry = await inner()  # type: ignore[operator]
            return got

        dev.read = read  # type: ignore[method-assign]
        # read back after confirm_after_s: a re-poll would have come first
        dev.readback_after_s = lambda: 0.3  # type: ignore[method-assign]
    return reads


async def _shed(d: Daemon, limit_kw: float) -> list[str]:
    start = datetime.fromtimestamp(d.clock.time(), UTC)
    ev = GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h",
                   limit_kw=limit_kw)  # fmt: skip
    shed = d.shedder.request
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
    await d.accept([ev], "test", None, "{}")
    d.shedder.request = shed  # type: ignore[method-assign]
    return [o.device_id for o in await d.fast_path("test") if o.ok]


def test_a_shed_reads_back_what_it_told_and_nothing_else(tmp_path: Path) -> None:
    d, devices = memory_daemon(_site(), tmp_path)
    reads = _counted(devices)

    async def go() -> None:
        await d.open()
        try:
            polls, before = d.poller.polls, Counter(reads)
            d.clock.advance(1)  # type: ignore[attr-defined]
            told = await _shed(d, 20.0)
            assert told
            await until(lambda: not d.fleet.pending, timeout_s=30, what="the read-backs")
            assert d.status()["compliance"]["state"] == "met"
            assert d.poller.polls == polls
            again = {i for i in devices if reads[i] > before[i]}
            assert again == set(told)  # the devices told, read back; no other read again
        finally:
            await d.close()

    asyncio.run(go())


def test_with_a_meter_a_shed_reads_the_meter_again(tmp_path: Path) -> None:
    """The meter stays the authority for import: ``confirm_after_s`` after a shed it is read
    again, so that status shows the site's import before the next poll; the fleet is not
    swept again."""

    async def go() -> None:
        async with sunspec_meter(254, 2) as srv:  # 25,400 W
            text = _site(srv.port)
            d, devices = memory_daemon(text, tmp_path)
            reads = _counted(devices)
            await d.open()
            try:
                assert d.status()["import_kw"] == pytest.approx(25.4)
                polls, before = d.poller.polls, Counter(reads)
                d.clock.advance(1)  # type: ignore[attr-defined]
                srv.set_w(194, 2)  # what the meter will show once the shed is in
                told = await _shed(d, 20.0)
                await until(lambda: d.status()["import_kw"] == pytest.approx(19.4),
                            timeout_s=30, what="the meter read again")  # fmt: skip
                c = d.status()["compliance"]
                assert c["source"] == "meter" and c["state"] == "met"
                await until(lambda: not d.fleet.pending, timeout_s=30, what="the read-backs")
                assert d.poller.polls == polls
                assert {i for i in devices if reads[i] > before[i]} == set(told)
            finally:
                await d.close()

    asyncio.run(go())
