"""The GPU agent (``gridsched gpu-agent``) and the daemon's backend to it, with real parts:
the agent started on loopback (OS-chosen port) serving simulated GPUs (``LocalSimBackend``),
the daemon's ``AgentBackend`` and ``NvmlGpu`` adapter talking to it over TCP."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters import gpu_wire as wire
from adapters.base import (
    AdapterError,
    ControlRejected,
    DeviceUnreachable,
    ModeRequest,
    Unsupported,
)
from adapters.gpu import NvmlGpu
from adapters.gpu_agent import GpuAgent
from adapters.gpu_remote import AgentBackend
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import SIM_DRIVER, LocalSimBackend
from models.errors import ConfigError

SECRET = Secret("agent-test-secret-0123456789abcdef")


@asynccontextmanager
async def agent_on(
    gpus: list[SimGpu], secret: Secret | None = SECRET, **kw: Any
) -> AsyncIterator[GpuAgent]:
    agent = GpuAgent(LocalSimBackend(gpus), "127.0.0.1", 0, secret, **kw)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def sims(n: int = 2) -> list[SimGpu]:
    return [SimGpu(i, settle_s=0.01) for i in range(n)]


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await coro

    asyncio.run(bounded())


def test_readings_and_a_power_limit_set_and_read_back_through_the_agent() -> None:
    gpus = sims()

    async def main() -> None:
        async with agent_on(gpus) as agent:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET, timeout_s=5.0)
            assert await backend.count() == 2
            dev = NvmlGpu("g/127.0.0.1/gpu1", "1", backend, 1, 5.0)
            info = await dev.connect()
            assert info.serial == gpus[1].uuid and info.firmware_version == SIM_DRIVER
            assert (info.min_power_w, info.max_power_w) == gpus[1].limit_constraints_w()
            assert info.address == f"nvml@127.0.0.1:{agent.port}:1"
            t = await dev.read()
            assert t.power_w is not None and t.power_w > 0 and t.target_w == gpus[1].limit_w()
            applied = await dev.apply(ModeRequest("run", 450.0))
            assert applied.target_w == 450.0 and gpus[1].limit_w() == 450.0
            assert (await dev.read()).target_w == 450.0  # read back through the agent
            assert gpus[0].limit_w() == gpus[0].tdp_w  # the other GPU untouched
            await backend.close()

    run(main())


@pytest.mark.parametrize(
    ("fault", "call", "args", "kind", "code"),
    [
        ("clocks_unsupported", "set_locked_clocks", (1000.0, 1400.0), Unsupported, "NOT_SUPPORTED"),
        ("no_permission", "set_limit_w", (400.0,), Unsupported, "NO_PERMISSION"),
        (None, "set_limit_w", (5000.0,), ControlRejected, "INVALID_ARGUMENT"),
        ("gpu_lost", "reading", (), DeviceUnreachable, "GPU_IS_LOST"),
    ],
)
def test_nvml_refusals_arrive_as_the_same_errors_as_on_the_local_host(
    fault: str | None, call: str, args: tuple[float, ...], kind: type[AdapterError], code: str
) -> None:
    """NVML's code crosses the wire, and ``nvml_error`` maps it on the daemon's side: the
    error is the one the same GPU gives in process, word for word."""
    gpus = sims(1)
    gpus[0].fault = fault

    async def main() -> None:
        with pytest.raises(kind) as local:
            await LocalSimBackend(gpus).call(0, call, *args)
        async with agent_on(gpus) as agent:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET, timeout_s=5.0)
            with pytest.raises(kind) as remote:
                await backend.call(0, call, *args)
            assert f"NVML {code}" in remote.value.reason
            assert remote.value.reason == local.value.reason
            await backend.close()

    run(main())


def test_a_clock_lock_refused_over_the_agent_leaves_the_limit_and_says_so() -> None:
    gpus = sims(1)
    gpus[0].fault = "clocks_unsupported"

    async def main() -> None:
        async with agent_on(gpus) as agent:
            dev = NvmlGpu("g/h/gpu0", "0", AgentBackend("127.0.0.1", agent.port, SECRET), 0, 5.0)
            dev.controller = True
            await dev.connect()
            applied = await dev.apply(ModeRequest("run", 500.0, (1000, 1400)))
            assert gpus[0].limit_w() == 500.0
            assert "not applied" in applied.note and "NOT_SUPPORTED" in applied.note

    run(main())


def test_a_wrong_secret_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gridsched.gpu_agent")

    async def main() -> None:
        async with agent_on(sims(1)) as agent:
            wrong = AgentBackend("127.0.0.1", agent.port, Secret("not-the-agents-secret-0000"))
            with pytest.raises(DeviceUnreachable, match="refused our secret"):
                await wrong.call(0, "power_w")
            none = AgentBackend("127.0.0.1", agent.port, None)
            with pytest.raises(Unsupported, match="requires a shared secret"):
                await none.call(0, "power_w")
            right = AgentBackend("127.0.0.1", agent.port, SECRET)
            assert await right.call(0, "limit_w") > 0  # the agent serves on
            await right.close()

    run(main())
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2
    assert all("authentication failed" in r.getMessage() for r in failures)
    assert "wrong MAC" in failures[0].getMessage()
    connects = [r for r in caplog.records if r.getMessage().endswith(" connected")]
    gone = [r for r in caplog.records if " disconnected " in r.getMessage()]
    assert len(connects) == 3 and len(gone) == 3  # a line per connect and per disconnect


def test_a_secret_configured_refuses_an_agent_that_does_not_ask_for_it() -> None:
    """An impostor that skips authentication could feed readings and take commands."""

    async def main() -> None:
        async with agent_on(sims(1), secret=None) as agent:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET)
            with pytest.raises(DeviceUnreachable, match="not hmac-sha256"):
                await backend.call(0, "power_w")

    run(main())


def test_the_agent_refuses_to_listen_beyond_loopback_without_a_secret() -> None:
    with pytest.raises(ConfigError, match="without authentication"):
        GpuAgent(LocalSimBackend(sims(1)), "0.0.0.0", 0, None)
    with pytest.raises(ConfigError, match="shorter than 16"):
        GpuAgent(LocalSimBackend(sims(1)), "0.0.0.0", 0, Secret("short"))
    GpuAgent(LocalSimBackend(sims(1)), "0.0.0.0", 0, SECRET)  # with one: accepted


def test_a_call_outside_the_allow_list_is_refused_by_name() -> None:
    async def main() -> None:
        async with agent_on(sims(1)) as agent:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET)
            with pytest.raises(Unsupported, match="'nvmlDeviceSetPersistenceMode' is not served"):
                await backend.call(0, "nvmlDeviceSetPersistenceMode", 1.0)
            assert await backend.call(0, "limit_w") > 0  # the same kept connection goes on
            assert backend.opened == 1
            await backend.close()

    run(main())


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = json.loads(await reader.readline())
    return reader, writer, hello


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line)
    await writer.drain()
    return json.loads(await reader.readline())


def test_bad_requests_get_an_error_line_and_never_end_the_agent() -> None:
    async def main() -> None:
        async with agent_on(sims(2), secret=None) as agent:
            reader, writer, hello = await _raw(agent.port)
            assert hello == {"protocol": wire.PROTOCOL, "auth": "none", "challenge": None}
            answers = [
                await _ask(reader, writer, line)
                for line in (
                    b"not json\n",
                    b"[1, 2]\n",
                    b'{"op": "reboot"}\n',
                    b'{"op": "gpu", "index": 9, "call": "power_w"}\n',
                    b'{"op": "gpu", "index": 0, "call": "set_limit_w", "args": [NaN]}\n',
                    b'{"op": "gpu", "index": 0, "call": "set_limit_w", "args": []}\n',
                    b'{"op": "gpu", "index": 0, "call": "set_limit_w", "args": ["400"]}\n',
                    b'{"op": "gpu", "index": true, "call": "power_w"}\n',
                )
            ]
            assert all(a["ok"] is False and a["code"] == "BAD_REQUEST" for a in answers)
            assert "this host has 2 GPUs (0..1)" in answers[3]["error"]
            assert "not a finite number" in answers[4]["error"]
            ok = await _ask(reader, writer, b'{"op": "gpu", "index": 1, "call": "limit_w"}\n')
            assert ok == {"ok": True, "result": 700.0}
            # a line longer than the agent reads: an error, the connection closed, the
            # agent still serving the next one
            writer.write(b"x" * (wire.MAX_LINE_BYTES + 10) + b"\n")
            await writer.drain()
            last = await reader.read()
            assert b"BAD_REQUEST" in last
            writer.close()
            reader, writer, _ = await _raw(agent.port)
            assert (await _ask(reader, writer, b'{"op": "count"}\n')) == {"ok": True, "gpus": 2}
            writer.close()

    run(main())


def test_a_tampered_or_replayed_line_ends_the_session(caplog: pytest.LogCaptureFixture) -> None:
    """After authentication every line carries a MAC over its sequence number: a line
    altered on the path, or one recorded and sent again, closes the connection."""
    caplog.set_level(logging.INFO, logger="gridsched.gpu_agent")

    async def session(agent: GpuAgent) -> tuple[Any, Any, wire.Channel]:
        reader, writer, hello = await _raw(agent.port)
        nonce = wire.nonce()
        key = SECRET.reveal().encode()
        mac = wire.client_proof(key, hello["challenge"], nonce)
        writer.write(json.dumps({"nonce": nonce, "mac": mac}).encode() + b"\n")
        assert json.loads(await reader.readline())["ok"] is True
        return reader, writer, wire.Channel.session(key, hello["challenge"], nonce, agent=False)

    async def main() -> None:
        async with agent_on(sims(1)) as agent:
            reader, writer, channel = await session(agent)
            line = channel.encode({"op": "gpu", "index": 0, "call": "set_limit_w", "args": [400]})
            writer.write(line)
            assert channel.decode(await reader.readline()) == {"ok": True, "result": None}
            writer.write(line)  # the same line again: its sequence number is spent
            assert await reader.read() == b""
            reader, writer, channel = await session(agent)
            good = channel.encode({"op": "gpu", "index": 0, "call": "set_limit_w", "args": [400]})
            writer.write(good.replace(b"400", b"700"))  # altered on the path
            assert await reader.read() == b""

    run(main())
    assert sum("line MAC does not match" in r.getMessage() for r in caplog.records) >= 2


class Gated:
    """A backend whose readings of GPUs 2 and up wait on a gate: a sweep held mid-way."""

    label = "gated"

    def __init__(self, inner: LocalSimBackend) -> None:
        self.inner, self.gate, self.waiting = inner, asyncio.Event(), 0

    async def count(self) -> int:
        return await self.inner.count()

    async def call(self, index: int, call: str, *args: float) -> Any:
        if call == "reading" and index >= 2 and not self.gate.is_set():
            self.waiting += 1
            await self.gate.wait()
        return await self.inner.call(index, call, *args)


async def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


def test_an_agent_killed_mid_sweep_makes_its_gpus_unreachable_then_they_recover() -> None:
    gpus = sims(4)

    async def main() -> None:
        gated = Gated(LocalSimBackend(gpus))
        agent = GpuAgent(gated, "127.0.0.1", 0, SECRET)
        await agent.start()
        port = agent.port
        backend = AgentBackend("127.0.0.1", port, SECRET, timeout_s=5.0, connections=4)
        devs = [NvmlGpu(f"g/h/gpu{i}", str(i), backend, i, 5.0) for i in range(4)]
        for d in devs:
            await d.connect()
        tasks = [asyncio.create_task(d.read()) for d in devs]
        # GPUs 0 and 1 read, 2 and 3 in flight
        await _until(lambda: gated.waiting == 2 and tasks[0].done() and tasks[1].done())
        await agent.stop()  # the agent dies mid-sweep
        readings = await asyncio.gather(*tasks, return_exceptions=True)
        assert [isinstance(r, AdapterError) for r in readings] == [False, False, True, True]
        assert all(isinstance(r, DeviceUnreachable) for r in readings[2:])
        for d in devs:  # and while it is down, every GPU of the host is unreachable
            with pytest.raises(DeviceUnreachable, match=f"127.0.0.1:{port}"):
                await d.read()
        gated.gate.set()
        agent = GpuAgent(gated, "127.0.0.1", port, SECRET)  # restarted on its port
        await agent.start()
        try:
            back = [await d.read() for d in devs]
            assert all(r.power_w is not None and r.power_w > 0 for r in back)
        finally:
            await backend.close()
            await agent.stop()

    run(main())


def test_the_adapter_conformance_loop_passes_over_the_agent() -> None:
    """The conformance loop every adapter kind passes (tests/test_adapters_conformance.py),
    run on ``NvmlGpu`` through an agent on its own event-loop thread, with a secret."""
    import tests.test_adapters_conformance as conformance
    from adapters.sim.fleet import SimFleet, SimFleetThread

    thread = SimFleetThread(SimFleet([], [SimGpu(0, settle_s=0.01)], control_port=None))
    with thread as fleet:
        agent = GpuAgent(LocalSimBackend(fleet.gpus), "127.0.0.1", 0, SECRET)
        asyncio.run_coroutine_threadsafe(agent.start(), thread.loop).result(10)
        try:

            def make(_: Any) -> NvmlGpu:
                backend = AgentBackend("127.0.0.1", agent.port, SECRET, timeout_s=10.0)
                return NvmlGpu("c/127.0.0.1/gpu0", "0", backend, 0, 10.0, lambda w: w)

            conformance.test_adapter_conformance(thread, make)
        finally:
            asyncio.run_coroutine_threadsafe(agent.stop(), thread.loop).result(10)


class Failing:
    """A backend whose calls fail as the agent's host may: pynvml missing (no NVML code),
    or an NVML call that never returns (a driver in trouble)."""

    label = "failing"

    async def count(self) -> int:
        return 1

    async def call(self, index: int, call: str, *args: float) -> Any:
        if call == "limit_w":
            raise Unsupported("nvml", "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        await asyncio.Event().wait()  # hangs


def test_the_agents_own_failures_arrive_as_their_kind_and_a_hung_call_as_a_timeout() -> None:
    from adapters.base import DeviceTimeout

    async def main() -> None:
        agent = GpuAgent(Failing(), "127.0.0.1", 0, SECRET, call_timeout_s=0.1)
        await agent.start()
        try:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET, timeout_s=5.0)
            with pytest.raises(Unsupported, match="nvidia-ml-py is not installed"):
                await backend.call(0, "limit_w")
            with pytest.raises(DeviceTimeout, match=r"NVML did not answer in 0\.1 s"):
                await backend.call(0, "power_w")
            await backend.close()
        finally:
            await agent.stop()

    run(main())


def test_a_kept_connection_the_agent_closed_when_idle_is_replaced_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gridsched.gpu_agent")

    async def main() -> None:
        async with agent_on(sims(1), idle_timeout_s=0.05) as agent:
            backend = AgentBackend("127.0.0.1", agent.port, SECRET, timeout_s=5.0)
            assert await backend.call(0, "limit_w") == 700.0
            await _until(lambda: any("idle for" in r.getMessage() for r in caplog.records))
            assert await backend.call(0, "limit_w") == 700.0  # a fresh connection, no error
            assert backend.opened == 2
            await backend.close()

    run(main())


def test_clients_beyond_the_limit_are_turned_away_and_said_busy() -> None:
    async def main() -> None:
        async with agent_on(sims(1), max_clients=1) as agent:
            first = AgentBackend("127.0.0.1", agent.port, SECRET)
            assert await first.call(0, "limit_w") == 700.0  # its connection is kept
            second = AgentBackend("127.0.0.1", agent.port, SECRET)
            with pytest.raises(DeviceUnreachable, match="is busy: 1 clients at most"):
                await second.call(0, "limit_w")
            await first.close()

    run(main())
