"""Readings wait while a command batch is in flight and answered, however long it takes,
and go once it stops being answered (:meth:`adapters.fleet_slots.Slots.yield_to_controls`).

Before, readings waited at most ``read_yield_max_s`` (2 s) whatever the batch did: a curtail
of 30,000 LuxOS miners, about 10 s of the controller's core, shared its CPU with the
sweep's readings and the read-backs from its third second on
(docs/performance.md, "30,000 miners")."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from adapters.base import Applied, DeviceAdapter, ModeRequest, Telemetry
from adapters.fleet import Fleet
from tests.support.simfleet import run
from tests.support.wait import until


class _Logged(DeviceAdapter):
    """In memory: a reading takes 10 ms, a command ``apply_s`` (the device ``slow/`` 0.6 s),
    each call's start and end logged."""

    log: ClassVar[list[tuple[str, str, float]]] = []
    apply_s: ClassVar[float] = 0.02

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        self.log.append(("read", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.01)
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        self.log.append(("apply", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.6 if self.device_id.startswith("slow/") else self.apply_s)
        self.log.append(("applied", self.device_id, time.perf_counter()))
        return Applied(request, None)


def _reads_between(first: str, last: str) -> list[str]:
    log = _Logged.log
    began = min(t for what, _, t in log if what == first)
    ended = max(t for what, _, t in log if what == last)
    return [i for what, i, t in log if what == "read" and began < t < ended]


def test_readings_wait_for_a_batch_that_is_answered_however_long() -> None:
    """40 commands, two at a time, 20 ms each: a batch of about 0.4 s, four times
    ``read_yield_max_s``, answered every 10-20 ms. No reading goes out meanwhile."""
    _Logged.log = []
    devs = [_Logged(f"d/{i}", "-") for i in range(40)]
    fleet = Fleet(devs, concurrency=2, read_yield_max_s=0.1)

    async def go() -> None:
        sweep = asyncio.create_task(fleet.read_all())
        await until(lambda: any(w == "read" for w, _, _ in _Logged.log))  # the sweep is out
        out = await fleet.apply({d.device_id: ModeRequest("sleep") for d in devs})
        assert all(o.ok for o in out)
        assert len(await sweep) == 40  # and the sweep completes after it

    run(go())
    assert _reads_between("apply", "applied") == []


def test_readings_go_once_a_batch_stops_being_answered() -> None:
    """A batch whose last command hangs (0.6 s, the others answered within 20 ms): once nothing
    has been answered for ``read_yield_max_s`` (0.1 s) the readings go, as a batch stuck on
    dead devices and retries must not starve telemetry."""
    _Logged.log = []
    devs = [_Logged(f"d/{i}", "-") for i in range(80)] + [_Logged("slow/0", "-")]
    fleet = Fleet(devs, concurrency=4, read_yield_max_s=0.1)

    async def go() -> None:
        sweep = asyncio.create_task(fleet.read_all([d.device_id for d in devs[:80]]))
        await until(lambda: any(w == "read" for w, _, _ in _Logged.log))  # 0.2 s of them
        batch = [d.device_id for d in devs[:8]] + ["slow/0"]
        out = await fleet.apply(dict.fromkeys(batch, ModeRequest("sleep")))
        assert all(o.ok for o in out)
        await sweep

    run(go())
    log = _Logged.log
    slow_began = next(t for what, i, t in log if what == "apply" and i == "slow/0")
    slow_ended = next(t for what, i, t in log if what == "applied" and i == "slow/0")
    quick_ended = max(t for what, i, t in log if what == "applied" and i != "slow/0")
    during = [t for what, _, t in log if what == "read" and slow_began < t < slow_ended]
    assert during, "telemetry starved by a stuck batch"
    assert min(during) >= quick_ended + 0.09  # only after 0.1 s without an answer
