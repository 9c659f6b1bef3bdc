"""Upkeep a reading found due (a LuxOS session to renew) runs off the sweep's path
(:mod:`adapters.fleet_upkeep`): a sweep ends when its readings are in, a command batch goes
before any upkeep, a failing upkeep is one log line, and a closing fleet cancels what is
queued. The LuxOS side (a reading asks, ``upkeep`` renews) is in test_luxos_sessions.py."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import (
    Applied,
    DeviceAdapter,
    DeviceInfo,
    DeviceUnreachable,
    ModeRequest,
    Telemetry,
)
from adapters.fleet import Fleet
from scheduler.service.metrics import metrics_registry, render_metrics
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import device_classes, site_text, stock_s19s


@dataclass
class _Kept(DeviceAdapter):
    """A device whose every reading asks for upkeep; its upkeep waits for ``gate``."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    applying: asyncio.Event | None = None
    upkept: list[float] = field(default_factory=list)
    fails: bool = False
    #: raised by each upkeep while set (a device fault, not a bug)
    error: Exception | None = None

    async def connect(self) -> DeviceInfo:
        self.info = DeviceInfo(self.device_id, "asic", self.address)
        return self.info

    async def read(self) -> Telemetry:
        self.upkeep_wanted = True
        return Telemetry(self.device_id, time.time(), "running", power_w=3000.0)

    async def apply(self, request: ModeRequest) -> Applied:
        if self.applying is not None:
            await self.applying.wait()
        return Applied(request, None)

    async def upkeep(self) -> None:
        self.upkeep_wanted = False
        await self.gate.wait()
        if self.fails:
            raise RuntimeError("upkeep broke")
        if self.error is not None:
            raise self.error
        self.upkept.append(time.monotonic())


async def _roomy(fleet: Fleet, ids: list[str] | None = None) -> dict[str, Telemetry]:
    """A sweep with room for deferred upkeep: the last whole one took no time of the 100 s
    since it began (:data:`adapters.fleet_upkeep.ROOM_SHARE`)."""
    fleet.upkeep._began, fleet.upkeep._took = time.monotonic() - 100.0, 0.0
    return await fleet.read_all(ids)


def test_a_sweep_ends_when_its_readings_are_in_not_when_its_upkeep_is_done() -> None:
    """Before, a LuxOS reading renewed its session inside the reading (a logoff and a
    logon), and the sweep lasted until every renewal was done."""

    async def go() -> tuple[int, int, int]:
        gate = asyncio.Event()
        devs = [_Kept(f"k/{i}", f"k{i}", gate=gate) for i in range(10)]
        fleet = Fleet(devs)
        await fleet.connect_all()
        got = await asyncio.wait_for(_roomy(fleet), 5.0)  # upkeep blocked: still ends
        waiting = fleet.upkeep.queued + sum(1 for d in devs if not d.upkept)
        gate.set()
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        done = sum(len(d.upkept) for d in devs)
        await fleet.close()
        return len(got), waiting, done

    read, waiting, done = asyncio.run(go())
    assert read == 10
    assert waiting >= 10  # none kept up yet when the sweep ended
    assert done == 10  # then each, once


def test_upkeep_waits_while_commands_are_in_flight() -> None:
    async def go() -> tuple[int, int]:
        applying = asyncio.Event()
        gate = asyncio.Event()
        gate.set()
        devs = [_Kept(f"k/{i}", f"k{i}", gate=gate, applying=applying) for i in range(4)]
        fleet = Fleet(devs)
        await fleet.connect_all()
        batch = asyncio.create_task(fleet.apply({"k/0": ModeRequest("sleep")}))
        await asyncio.sleep(0.01)  # the command is in flight
        await _roomy(fleet)  # readings wait while the command is answered, then go
        await asyncio.sleep(0.05)
        during = sum(len(d.upkept) for d in devs)
        applying.set()
        await batch
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        after = sum(len(d.upkept) for d in devs)
        await fleet.close()
        return during, after

    during, after = asyncio.run(go())
    assert (during, after) == (0, 4)


def test_a_failing_upkeep_is_one_log_line_and_the_fleet_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> int:
        gate = asyncio.Event()
        gate.set()
        bad = _Kept("k/bad", "kb", gate=gate, fails=True)
        good = _Kept("k/good", "kg", gate=gate)
        fleet = Fleet([bad, good])
        await fleet.connect_all()
        await _roomy(fleet)
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        got = len(await _roomy(fleet))  # and the next sweep asks again
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await fleet.close()
        return got + len(good.upkept)

    with caplog.at_level(logging.WARNING, logger="gridsched.fleet"):
        assert asyncio.run(go()) == 4
    lines = [r for r in caplog.records if "upkeep failed" in r.getMessage()]
    assert len(lines) == 2 and "k/bad" in lines[0].getMessage()
    assert "RuntimeError" in lines[0].getMessage()


def test_a_device_whose_upkeep_fails_is_counted_each_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A LuxOS renewal the miner did not answer is a device fault, not a bug: counted each
    time (``gridsched_fleet_upkeeps_total{result="failed"}``), one log line until it
    succeeds again, and that said too. Before, a failed renewal was dropped unseen."""

    async def go() -> tuple[int, int]:
        gate = asyncio.Event()
        gate.set()
        dev = _Kept("k/0", "k0", gate=gate, error=DeviceUnreachable("k/0", "logon: no answer"))
        fleet = Fleet([dev])
        await fleet.connect_all()
        for _ in range(3):
            await _roomy(fleet)
            await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        dev.error = None
        await _roomy(fleet)
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await fleet.close()
        return fleet.upkeep.failed, fleet.upkeep.done

    with caplog.at_level(logging.INFO, logger="gridsched.fleet"):
        assert asyncio.run(go()) == (3, 1)
    said = [r.getMessage() for r in caplog.records if "upkeep" in r.getMessage()]
    assert len(said) == 2, said
    assert "k/0: upkeep failed" in said[0] and "logon: no answer" in said[0]
    assert not any(r.exc_info for r in caplog.records)  # a fault: no traceback
    assert said[1] == "k/0: upkeep done again"


def test_a_device_fault_after_a_bug_in_upkeep_is_still_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by review: a first failure that was a bug put the device among those already
    said, so its later device faults were never logged."""

    async def go() -> None:
        gate = asyncio.Event()
        gate.set()
        dev = _Kept("k/0", "k0", gate=gate, fails=True)
        fleet = Fleet([dev])
        await fleet.connect_all()
        await _roomy(fleet)
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        dev.fails, dev.error = False, DeviceUnreachable("k/0", "logon: no answer")
        await _roomy(fleet)
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await fleet.close()

    with caplog.at_level(logging.WARNING, logger="gridsched.fleet"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records if "upkeep failed" in r.getMessage()]
    assert len(said) == 2 and "RuntimeError" in said[0] and "logon: no answer" in said[1]


def test_a_closing_fleet_cancels_the_upkeep_it_has_queued() -> None:
    async def go() -> list[float]:
        gate = asyncio.Event()  # never set: every upkeep would wait for ever
        dev = _Kept("k/0", "k0", gate=gate)
        fleet = Fleet([dev])
        await fleet.connect_all()
        await _roomy(fleet)
        await asyncio.wait_for(fleet.close(), 5.0)
        return dev.upkept

    assert asyncio.run(go()) == []


def test_many_readings_of_one_device_queue_one_upkeep() -> None:
    async def go() -> int:
        gate = asyncio.Event()
        dev = _Kept("k/0", "k0", gate=gate)
        other = _Kept("k/1", "k1", gate=gate)
        fleet = Fleet([dev, other], concurrency=1)
        await fleet.connect_all()
        for _ in range(5):
            await _roomy(fleet)
        gate.set()
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await fleet.close()
        return fleet.upkeep.done

    # one upkeep per device at a time: the readings made while it ran asked for nothing more
    assert asyncio.run(go()) == 2


SITE = site_text(
    "upkeep",
    devices=device_classes(stock_s19s(2)),
)


def test_the_upkeep_backlog_is_a_metric(tmp_path: Path) -> None:
    """``gridsched_fleet_upkeep_queued``: a backlog that does not drain between polls means
    LuxOS sessions age and commands log on first (docs/daemon.md)."""
    d, _ = memory_daemon(SITE, tmp_path)
    registry = metrics_registry(d)

    def sample(name: str, result: str | None = None) -> float:
        body, _ = render_metrics(registry)
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and s.labels.get("result") == result:
                    return float(s.value)
        raise AssertionError(f"no {name} {result or ''} in /metrics")

    def gauge() -> float:
        return sample("gridsched_fleet_upkeep_queued")

    async def go() -> tuple[float, ...]:
        await d.open()
        try:
            idle = gauge()
            gate = asyncio.Event()
            for i in range(3):
                dev = _Kept(f"k/{i}", f"k{i}", gate=gate)
                dev.upkeep_wanted = True
                dev.error = DeviceUnreachable(dev.device_id, "no answer") if i == 0 else None
                d.fleet.upkeep.add(dev)
            queued = gauge()
            gate.set()
            await asyncio.wait_for(d.fleet.upkeep.idle(), 5.0)
            done = sample("gridsched_fleet_upkeeps_total", "done")
            failed = sample("gridsched_fleet_upkeeps_total", "failed")
            return idle, queued, gauge(), done, failed
        finally:
            await d.close()

    assert asyncio.run(go()) == (0.0, 3.0, 0.0, 2.0, 1.0)


def test_upkeep_that_falls_behind_is_made_by_the_readings_again() -> None:
    """A sweep that begins with the last sweep's upkeep not done: the controller's core is
    all in use (30,000 LuxOS miners on one core), and deferred renewals would come late
    enough for sessions to go stale, every command then logging on first (a 30,000-miner
    curtail took twice its CPU). That sweep's readings make their own upkeep, as before."""

    async def go() -> tuple[bool, int, bool, int]:
        gate = asyncio.Event()
        devs = [_Kept(f"k/{i}", f"k{i}", gate=gate) for i in range(10)]
        fleet = Fleet(devs)
        fleet.upkeep._concurrency = 1  # one at a time: it cannot keep up
        await fleet.connect_all()
        await _roomy(fleet)  # ten queued, one running (held at the gate)
        gate.set()  # from now on an upkeep is quick; the queue is still there
        await _roomy(fleet)  # room, but the last sweep's upkeep is not done
        behind, inline = fleet.upkeep.behind, fleet.upkeep.inline
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await _roomy(fleet)  # caught up: deferred again
        caught_up, again = not fleet.upkeep.behind, fleet.upkeep.inline
        await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
        await fleet.close()
        return behind, inline, caught_up, again

    behind, inline, caught_up, again = asyncio.run(go())
    assert behind and inline >= 8  # those whose queued upkeep had not begun
    assert caught_up and again == inline


def test_upkeep_is_deferred_only_where_sweeps_leave_room_for_it() -> None:
    """No room: the first whole sweep (nothing to judge by), and a sweep after one that took
    more than ROOM_SHARE of the time between the two starts (30,000 miners on one core:
    sweeps back to back). Room: a sweep after one that took a small share of it."""

    async def go() -> list[tuple[bool, int]]:
        gate = asyncio.Event()
        gate.set()
        devs = [_Kept(f"k/{i}", f"k{i}", gate=gate) for i in range(4)]
        fleet = Fleet(devs)
        await fleet.connect_all()
        seen = []
        for began_ago, took in ((None, None), (1.0, 0.9), (1.0, 0.2)):
            if began_ago is not None:
                fleet.upkeep._began = time.monotonic() - began_ago
                fleet.upkeep._took = took
            before = fleet.upkeep.inline
            await fleet.read_all()
            await asyncio.wait_for(fleet.upkeep.idle(), 5.0)
            seen.append((fleet.upkeep.behind, fleet.upkeep.inline - before))
        await fleet.close()
        return seen

    assert asyncio.run(go()) == [(True, 4), (True, 4), (False, 0)]
