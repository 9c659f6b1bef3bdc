"""The fleet's last-resort bound on an adapter call (adapters/fleet_bound.py): a hung call is
cancelled as a timeout, never before its bound; a cancel from outside stays a cancel; the
calls of one burst share a timer."""

from __future__ import annotations

import asyncio
import math

import pytest

from adapters.fleet_bound import GRAIN, CallBound


async def _bounded(bound: CallBound, bound_s: float, aw: asyncio.Future[None]) -> str:
    token = bound.enter(bound_s)
    try:
        try:
            await aw
        finally:
            late = bound.leave(token)
    except asyncio.CancelledError:
        return "timeout" if late else "cancelled"
    return "answered"


def test_a_hung_call_ends_as_a_timeout_never_before_its_bound() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()
        t0 = loop.time()
        got = await _bounded(bound, 0.05, loop.create_future())
        assert got == "timeout"
        assert loop.time() - t0 >= 0.05  # never early (the loop's own clock)
        assert asyncio.current_task() is not None
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_bound_of_zero_ends_at_once_and_an_infinite_one_never() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()
        assert await _bounded(bound, 0.0, loop.create_future()) == "timeout"
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, None)
        assert await _bounded(bound, math.inf, fut) == "answered"

    asyncio.run(main())


def test_a_call_that_answers_in_time_is_not_cancelled_later() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, None)
        assert await _bounded(bound, 0.05, fut) == "answered"
        await asyncio.sleep(0.1)  # past the bound: the shared timer fires and finds none

    asyncio.run(main())


def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()

        async def call() -> None:
            token = bound.enter(10.0)
            try:
                await loop.create_future()
            finally:
                assert not bound.leave(token)

        task = asyncio.ensure_future(call())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_outside_cancel_in_the_same_turn_as_the_bound_stays_a_cancel() -> None:
    """The bound and a caller both cancel the task before it runs again: the caller's cancel
    wins (as with asyncio.timeout), the bound's own request is withdrawn."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()
        armed: list[float] = []
        call_at = loop.call_at

        def capture(when: float, *args: object) -> asyncio.TimerHandle:
            armed.append(when)
            return call_at(when, *args)  # type: ignore[arg-type]

        loop.call_at = capture  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.ensure_future(_bounded(bound, 0.01, loop.create_future()))
            await asyncio.sleep(0)
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
        assert len(armed) == 1
        loop.call_at(armed[0], task.cancel)  # due in the same turn as the bound's timer
        assert await task == "cancelled"

    asyncio.run(main())


def test_the_calls_of_one_burst_share_a_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        bound = CallBound()
        armed: list[float] = []
        call_at = loop.call_at

        def counting(when: float, *args: object) -> asyncio.TimerHandle:
            armed.append(when)
            return call_at(when, *args)  # type: ignore[arg-type]

        loop.call_at = counting  # type: ignore[method-assign,assignment]
        try:
            gate = loop.create_future()
            calls = [asyncio.ensure_future(_bounded(bound, 10.0, gate)) for _ in range(256)]
            before = loop.time()
            await asyncio.sleep(0)  # every call enters its bound in this turn
            span_s = loop.time() - before
            gate.set_result(None)
            assert set(await asyncio.gather(*calls)) == {"answered"}
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
        # 256 calls started in one turn: one timer per grain (10 ms here) the turn spanned,
        # one or two on an idle host; a busy host can stretch the turn over more grains (CI
        # run BC: three). Never one timer per call.
        assert 1 <= len(armed) <= 2 + int(span_s / (10.0 * GRAIN)), (len(armed), span_s)
        assert len(armed) < len(calls) // 8, len(armed)
        assert all(at - loop.time() <= 10.0 * (1 + GRAIN) for at in armed)

    asyncio.run(main())


def test_a_fleet_command_cancelled_from_outside_is_cancelled_not_failed() -> None:
    """Through the fleet: a caller cancelling a batch (the daemon stopping) gets its
    CancelledError, no failed Outcome and no timeout in the device's health."""
    from adapters.base import Applied, DeviceAdapter, DeviceInfo, Health, ModeRequest, Telemetry
    from adapters.fleet import Fleet

    class Hangs(DeviceAdapter):
        async def connect(self) -> DeviceInfo:
            return DeviceInfo(self.device_id, "asic", self.address)

        async def read(self) -> Telemetry:
            raise AssertionError("not read")

        async def apply(self, request: ModeRequest) -> Applied:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    async def main() -> None:
        outs: list[object] = []
        fleet = Fleet([Hangs("m1", "127.0.0.1")], op_timeout_s=10.0, on_outcome=outs.append)
        fleet.status["m1"].health = Health.OK
        task = asyncio.ensure_future(fleet.apply({"m1": ModeRequest("sleep")}))
        for _ in range(10):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert outs == []
        assert fleet.status["m1"].health is Health.OK
        await fleet.close()

    asyncio.run(main())
