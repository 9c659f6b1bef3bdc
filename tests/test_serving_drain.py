"""A GPU leaving serving is drained first: the serving layer hears its new capacity before
the power limit drops, and a GPU put to sleep finishes its in-flight requests (read from a
vLLM-shaped metrics page on loopback) or waits out the bound, then powers down.

The serving hook is a real HTTP server on loopback; the GPU is the in-process simulator
behind a backend that records each NVML call, so the order of events is what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.base import DeviceUnreachable, ModeRequest
from adapters.gpu import NvmlGpu, ServingHook
from adapters.serving import ServingEndpoint
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from tests.support.hook import capacity_hook
from tests.test_serving import FakeVllm, served

Log = list[tuple[str, Any]]


class Recorded(LocalSimBackend):
    def __init__(self, gpus: list[Any], log: Log) -> None:
        super().__init__(gpus)
        self.log = log

    async def call(self, index: int, call: str, *args: float) -> Any:
        if call == "set_limit_w":
            self.log.append(("limit", args[0]))
        return await super().call(index, call, *args)


@pytest.fixture
def hook() -> Iterator[tuple[str, Log]]:
    log: Log = []
    with capacity_hook(lambda body: log.append(("hook", body["capacity_tokens_s"]))) as url:
        yield url, log


@pytest.fixture
def engine() -> Iterator[tuple[FakeVllm, str]]:
    with served(FakeVllm()) as served_engine:
        yield served_engine


def _gpu(url: str, log: Log, drain_s: float = 5.0) -> tuple[NvmlGpu, list[float]]:
    drains: list[float] = []
    gpu = NvmlGpu(
        "h100/gpu0",
        "0",
        Recorded([SimGpu(0)], log),
        0,
        10.0,
        lambda w: 480.0 * w / 700.0,
        ServingHook(url, 10.0),
        drain_s=drain_s,
        on_drain=drains.append,
    )
    return gpu, drains


def _reads(fake: FakeVllm, url: str, log: Log, finish_after: int | None) -> Any:
    """In-flight requests read from the engine's page; the engine finishes its requests
    after ``finish_after`` reads (None: never)."""
    reads = 0

    async def in_flight() -> float:
        nonlocal reads
        reads += 1
        if finish_after is not None and reads > finish_after:
            fake.running.labels("llama").set(0)
        async with httpx.AsyncClient() as client:
            s = await ServingEndpoint("vllm", url).read(client, 0.0)
        log.append(("in_flight", s.running + s.waiting))
        return s.running + s.waiting

    return in_flight


def test_sleep_tells_the_router_waits_for_requests_then_lowers_the_limit(
    hook: tuple[str, Log], engine: tuple[FakeVllm, str]
) -> None:
    url, log = hook
    fake, page = engine
    fake.running.labels("llama").set(3)
    gpu, drains = _gpu(url, log)
    gpu.in_flight = _reads(fake, page, log, finish_after=2)

    async def go() -> str:
        await gpu.connect()
        await gpu.apply(ModeRequest("run", 700.0))
        log.clear()
        return (await gpu.apply(ModeRequest("sleep"))).note

    note = asyncio.run(go())
    assert [e for e, _ in log] == ["hook", "in_flight", "in_flight", "in_flight", "limit"]
    assert log[0] == ("hook", 0.0) and log[-2] == ("in_flight", 0.0)
    assert log[-1] == ("limit", 200.0)  # the H100's NVML minimum
    assert "drained in" in note and len(drains) == 1


def test_a_drain_that_does_not_finish_powers_down_at_the_bound(
    hook: tuple[str, Log], engine: tuple[FakeVllm, str]
) -> None:
    url, log = hook
    fake, page = engine
    fake.running.labels("llama").set(2)
    gpu, drains = _gpu(url, log, drain_s=0.3)
    gpu.in_flight = _reads(fake, page, log, finish_after=None)

    async def go() -> str:
        await gpu.connect()
        return (await gpu.apply(ModeRequest("sleep"))).note

    note = asyncio.run(go())
    assert log[0] == ("hook", 0.0) and log[-1] == ("limit", 200.0)
    assert all(v == 2.0 for e, v in log if e == "in_flight")
    assert "drain bound 0.3 s passed (2 requests in flight)" in note and len(drains) == 1


def test_an_engine_that_cannot_be_read_is_not_taken_as_drained(hook: tuple[str, Log]) -> None:
    url, log = hook
    gpu, _ = _gpu(url, log, drain_s=0.2)

    async def unreadable() -> float:
        raise DeviceUnreachable("engine", "connection refused")

    gpu.in_flight = unreadable

    async def go() -> str:
        await gpu.connect()
        return (await gpu.apply(ModeRequest("sleep"))).note

    note = asyncio.run(go())
    assert "in-flight requests unknown" in note and log[-1] == ("limit", 200.0)


def test_a_cap_down_is_told_before_and_a_raise_after(hook: tuple[str, Log]) -> None:
    url, log = hook
    gpu, drains = _gpu(url, log)

    async def go() -> None:
        await gpu.connect()
        await gpu.apply(ModeRequest("run", 700.0))
        await gpu.apply(ModeRequest("run", 350.0))  # less capacity: router first
        await gpu.apply(ModeRequest("run", 700.0))  # more: limit first

    asyncio.run(go())
    assert log == [
        ("limit", 700.0),
        ("hook", 480.0),
        ("hook", 240.0),
        ("limit", 350.0),
        ("limit", 700.0),
        ("hook", 480.0),
    ]
    assert drains == []  # a GPU capped down keeps serving what it has: no wait
