"""The fleet's scheduling of device calls, on in-memory adapters: an adapter's bug stays its
own, readings yield to commands in flight, staging waits for them, reads and commands have
their own concurrency bounds, the garbage collector waits for a batch of commands."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from typing import Any, ClassVar

import pytest

from adapters.base import Applied, DeviceAdapter, Health, ModeRequest, Telemetry
from adapters.fleet import Fleet, Outcome, RetryPolicy
from tests.support.simfleet import run
from tests.support.wait import until


def test_an_adapter_bug_does_not_stop_the_fleet() -> None:
    class Broken(DeviceAdapter):
        async def connect(self) -> Any:
            return None

        async def read(self) -> Any:
            raise ZeroDivisionError("bug")

        async def apply(self, request: ModeRequest) -> Any:
            return {}["missing"]

    fleet = Fleet([Broken("b/0", "-")], retry=RetryPolicy(attempts=1))

    async def go() -> None:
        assert await fleet.read_all() == {}
        out = await fleet.apply({"b/0": ModeRequest("sleep"), "nope": ModeRequest("sleep")})
        assert not out[0].ok and "KeyError" in str(out[0].error)
        assert not out[1].ok and "unknown device" in str(out[1].error)

    run(go())


def test_a_library_choking_on_a_device_answer_is_one_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An adapter that lets a library's exception through (json's decoder on a garbled
    answer) reads the device as unreadable, in words, with no traceback (issue 16: "no
    tracebacks for device faults"; "unreadable: answers, cannot be parsed"); before, every
    change of its health logged one and it ended "unreachable"."""

    class Garbled(DeviceAdapter):
        async def connect(self) -> Any:
            return None

        async def read(self) -> Any:
            return json.loads("{garbled")

        async def apply(self, request: ModeRequest) -> Any:
            return json.loads("{garbled")

    fleet = Fleet([Garbled("g/0", "-")], retry=RetryPolicy(attempts=1))
    caplog.set_level(logging.WARNING, "gridsched.fleet")

    async def go() -> None:
        await fleet.connect_all()
        for _ in range(4):
            assert await fleet.read_all() == {}
        out = await fleet.apply({"g/0": ModeRequest("sleep")})
        assert not out[0].ok

    run(go())
    said = [r for r in caplog.records if "g/0" in r.getMessage()]
    assert said and not [r for r in said if r.exc_info], [r.getMessage() for r in said]
    st = fleet.status["g/0"]
    assert "JSONDecodeError" not in st.last_error, st
    assert st.health is Health.UNREADABLE, st  # it answers; the answer cannot be read


class _Timed(DeviceAdapter):
    """An in-memory device that takes its time and logs when each call starts and ends."""

    log: ClassVar[list[tuple[str, str, float]]] = []

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        self.log.append(("read", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.05)
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        self.log.append(("apply", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.3)
        self.log.append(("applied", self.device_id, time.perf_counter()))
        return Applied(request, None)

    async def stage(self, request: ModeRequest) -> Any:
        self.log.append(("stage", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.01)
        return Applied(request, request.power_w) if self.device_id < "t/4" else None


@pytest.mark.parametrize("yield_max_s", [30.0, 0.05])  # far past, well inside 0.3 s
def test_readings_wait_while_commands_are_in_flight(yield_max_s: float) -> None:
    _Timed.log = []
    fleet = Fleet(
        [_Timed(f"t/{i}", "-") for i in range(8)], concurrency=2, read_yield_max_s=yield_max_s
    )

    async def go() -> None:
        sweep = asyncio.create_task(fleet.read_all())
        await until(lambda: sum(w == "read" for w, _, _ in _Timed.log) >= 2)  # two are out
        out = await fleet.apply({"t/7": ModeRequest("sleep")})
        assert out[0].ok
        assert len(await sweep) == 8  # the sweep still completes

    run(go())
    began = next(t for what, _, t in _Timed.log if what == "apply")
    ended = next(t for what, _, t in _Timed.log if what == "applied")
    during = [i for what, i, t in _Timed.log if what == "read" and began < t < ended]
    if yield_max_s > 0.3:
        assert during == []  # nothing new went out while the curtail was in flight
    else:
        assert during  # but a long batch does not starve telemetry


def test_staging_waits_for_commands_and_reports_only_what_it_staged() -> None:
    _Timed.log = []
    fleet = Fleet([_Timed(f"t/{i}", "-") for i in range(8)], concurrency=2)
    for st in fleet.status.values():
        st.connected = True
    fleet.status["t/6"].connected = False  # unreachable devices are not staged
    fleet.status["t/5"].health = Health.DEGRADED

    async def go() -> list[Outcome]:
        curtail = asyncio.create_task(fleet.apply({"t/7": ModeRequest("sleep")}))
        await until(lambda: any(w == "apply" for w, _, _ in _Timed.log))  # in flight
        out = await fleet.stage({i: ModeRequest("run", 3000.0) for i in fleet.by_id})
        assert (await curtail)[0].ok
        return out

    out = run(go())
    assert sorted(o.device_id for o in out) == ["t/0", "t/1", "t/2", "t/3"]
    assert all(o.ok and o.applied and o.applied.target_w == 3000.0 for o in out)
    ended = next(t for what, _, t in _Timed.log if what == "applied")
    staged = [(i, t) for what, i, t in _Timed.log if what == "stage"]
    assert "t/6" not in {i for i, _ in staged} and len(staged) == 7
    assert all(t > ended for _, t in staged)  # none went out while the curtail was in flight
    # t/5 staged nothing and was not heard from: its health stands.
    assert fleet.status["t/5"].health is Health.DEGRADED


class _Counting(DeviceAdapter):
    now: ClassVar[dict[str, int]] = {"read": 0, "apply": 0}
    most: ClassVar[dict[str, int]] = {"read": 0, "apply": 0}

    async def connect(self) -> Any:
        return None

    async def _hold(self, op: str) -> None:
        self.now[op] += 1
        self.most[op] = max(self.most[op], self.now[op])
        await asyncio.sleep(0.01)
        self.now[op] -= 1

    async def read(self) -> Any:
        await self._hold("read")
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        await self._hold("apply")
        return Applied(request, None)


def test_readings_and_commands_have_their_own_bounds() -> None:
    _Counting.most = {"read": 0, "apply": 0}
    fleet = Fleet([_Counting(f"c/{i}", "-") for i in range(40)], concurrency=12, read_concurrency=5)

    async def go() -> None:
        assert len(await fleet.read_all()) == 40
        out = await fleet.apply({f"c/{i}": ModeRequest("sleep") for i in range(40)})
        assert all(o.ok for o in out)

    run(go())
    assert _Counting.most == {"read": 5, "apply": 12}


class _Ordered(DeviceAdapter):
    started: ClassVar[list[str]] = []

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        self.started.append(self.device_id)
        await asyncio.sleep(0.002 * (int(self.device_id.split("/")[1]) % 3))  # out of step
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        return Applied(request, None)


def test_a_sweep_reads_in_the_order_asked_and_answers_in_it() -> None:
    """The readings' workers take the devices in order, whichever answers first."""
    _Ordered.started = []
    ids = [f"o/{i}" for i in range(30)]
    fleet = Fleet([_Ordered(i, "-") for i in ids], read_concurrency=4)
    order = ids[::-1]
    got = run(fleet.read_all(order))
    assert _Ordered.started == order
    assert list(got) == order and all(got[i].device_id == i for i in order)


class _SeesCollector(DeviceAdapter):
    """Records whether the garbage collector was on while its command ran."""

    seen: ClassVar[list[bool]] = []
    delay_s: ClassVar[float] = 0.01

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        self.seen.append(gc.isenabled())
        await asyncio.sleep(self.delay_s)
        self.seen.append(gc.isenabled())
        return Applied(request, None)


def test_the_collector_waits_for_a_batch_of_commands_and_no_longer() -> None:
    # The hold's bound is far off while the batches must finish inside it (a loaded host
    # can take a second over 21 commands of 10 ms), and short for the one stuck batch.
    fleet = Fleet([_SeesCollector(f"g/{i}", "-") for i in range(20)], gc_hold_max_s=30.0)
    everyone = {i: ModeRequest("sleep") for i in fleet.by_id}
    assert gc.isenabled()

    async def go() -> None:
        _SeesCollector.seen, _SeesCollector.delay_s = [], 0.01
        two = await asyncio.gather(fleet.apply(everyone), fleet.apply({"g/0": ModeRequest("run")}))
        assert all(o.ok for batch in two for o in batch)
        assert _SeesCollector.seen and not any(_SeesCollector.seen)  # off throughout
        assert gc.isenabled()  # and back once the last batch ended
        # A batch stuck on slow devices gets the collector back after gc_hold_max_s.
        _SeesCollector.seen, _SeesCollector.delay_s = [], 0.5
        fleet._gc.max_s = 0.2
        await fleet.apply(everyone)
        fleet._gc.max_s = 30.0
        assert _SeesCollector.seen[:20] == [False] * 20 and all(_SeesCollector.seen[20:])
        assert gc.isenabled()
        # A collector the application turned off stays off.
        gc.disable()
        try:
            _SeesCollector.delay_s = 0.01
            await fleet.apply(everyone)
            assert not gc.isenabled()
        finally:
            gc.enable()

    run(go())
