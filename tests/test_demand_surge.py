"""The issue's goal, counted in poll periods: a demand surge seen in the serving metrics
re-plans and reaches the GPUs within 2 poll periods.

The daemon runs in process on a test clock with its devices in memory; the engine is a
vLLM-shaped metrics page on loopback (tests/test_serving.py). Each part of the bound is
checked so that the test fails if any one stops holding, rather than waiting it out:

- the demand job reads the engines every ``poll_s`` (its trigger);
- a surge that begins late in a period, half-seen by the first poll after it, is seen
  by the second: that poll asks for a re-plan;
- the re-plan is due before the next poll (its delay is under ``poll_s``), and the plan
  it makes is dispatched to the GPUs in the same call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon, run_open
from tests.support.prices import write_flat_prices
from tests.test_demand_feed import SITE, _settled, engine
from tests.test_serving import FakeVllm

__all__ = ["engine"]  # the fixture, imported for pytest

POLL_S = 10.0


def _site(tmp_path: Path, clock: FakeClock, url: str) -> str:
    write_flat_prices(tmp_path / "prices.csv", clock.time(), 50.0)
    # a generous engine timeout: a loaded test machine must not read as an engine down
    return SITE.format(url=url, objectives="", demand_extra="timeout_s = 10", miners="")


def _gpus_running(devices: dict[str, MemoryDevice]) -> int:
    return sum(1 for i, v in devices.items() if i.startswith("h100/") and v.state == "running")


def test_the_demand_job_reads_the_engines_every_poll_period(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    _fake, url = engine
    clock = FakeClock()
    d, _devices = memory_daemon(_site(tmp_path, clock, url), tmp_path, clock)

    async def go() -> None:
        d._start_jobs()
        try:
            job = d.scheduler.get_job("demand")
            assert job.func.__wrapped__ == d.poll_demand  # through Tasks.job
            assert job.trigger.interval.total_seconds() == POLL_S
        finally:
            d.scheduler.shutdown(wait=False)
            d.store.close()
            assert d.demand is not None
            await d.demand.close()

    asyncio.run(go())


def test_a_surge_late_in_a_period_reaches_the_gpus_by_the_second_poll(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    fake, url = engine
    clock = FakeClock()
    d, devices = memory_daemon(_site(tmp_path, clock, url), tmp_path, clock, asleep=True)
    assert d.demand is not None
    d.demand.clock = clock.monotonic
    asked: list[tuple[str, float]] = []
    request = d.planning.request

    def spy(reason: str, delay_s: float = 0.5) -> None:
        asked.append((reason, delay_s))
        request(reason, delay_s)

    d.planning.request = spy  # type: ignore[method-assign]

    async def period(before_tok_s: float, after_tok_s: float, surge_at_s: float) -> None:
        """One poll period: the engine serves ``before`` until ``surge_at_s`` into it and
        ``after`` from then on; the demand job then reads it."""
        tokens = before_tok_s * surge_at_s + after_tok_s * (POLL_S - surge_at_s)
        fake.gen.labels("llama").inc(tokens)
        clock.advance(POLL_S)
        await d.poll_demand()
        await _settled(d)

    async def body() -> None:
        assert d.demand is not None
        await d.feeds.refresh_prices()
        await d.poll_demand()  # the first reading: no rate yet
        await period(600.0, 600.0, POLL_S)
        assert await d.replan("test") is not None
        quiet = _gpus_running(devices)
        assert 0 < quiet < 4
        asked.clear()
        # 1,800 tokens/s from 9.5 s into the period: the first poll sees 660 tokens/s
        await period(600.0, 1800.0, 9.5)
        await period(1800.0, 1800.0, 0.0)  # the second poll sees all of it
        assert asked and {r for r, _delay in asked} == {"demand"}
        assert all(delay < POLL_S for _r, delay in asked)  # due before the next poll
        assert _gpus_running(devices) > quiet  # the GPUs were told, and took it
        assert d.demand.planned_tok_s is not None and d.demand.planned_tok_s >= 1800.0

    try:
        run_open(d, body)
    finally:
        asyncio.run(d.demand.close())
