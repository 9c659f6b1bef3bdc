"""A GPU reading is one call to its backend: one round trip to the simulator's control port
(six made 12,288 per sweep of the example site's 2,048 GPUs), one worker-thread hop for
real NVML (``PynvmlBackend``), with the same figures as the six calls one by one."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import pytest

from adapters.gpu import NvmlGpu
from adapters.nvml import PynvmlBackend
from adapters.sim.fleet import SimFleet
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend, RemoteSimBackend

FIELDS = ("power_w", "target_w", "energy_j", "utilisation_pct", "sm_clock_mhz")


def _still(i: int) -> SimGpu:
    """A simulated GPU on a clock that does not move: its figures repeat exactly."""
    return SimGpu(i, clock=lambda: 1000.0, settle_s=1e-6)


def test_a_reading_through_the_control_port_is_one_request() -> None:
    async def main() -> None:
        sim = SimFleet([], [_still(0), _still(1)], control_port=0)
        asked: list[str] = []
        handle = sim.handle

        def counted(req: dict[str, Any]) -> dict[str, Any]:
            asked.append(str(req.get("call")))
            return handle(req)

        sim.handle = counted  # type: ignore[method-assign]
        await sim.start()
        try:
            assert sim.control_port is not None
            backend = RemoteSimBackend("127.0.0.1", sim.control_port, timeout_s=10.0)
            gpu = NvmlGpu("h100/gpu1", "1", backend=backend, index=1)
            await gpu.connect()
            asked.clear()
            remote = await gpu.read()
            assert len(asked) == 1, asked
            # the same figures as the GPU read in this process, call by call
            local = NvmlGpu("h100/gpu1", "1", backend=LocalSimBackend([_still(0), _still(1)]))
            local.index = 1
            await local.connect()
            mine = await local.read()
            for f in FIELDS:
                assert getattr(remote, f) == pytest.approx(getattr(mine, f)), f
            assert remote.temperatures_c == mine.temperatures_c
            await backend.close()
        finally:
            await sim.stop()

    asyncio.run(main())


def test_a_clock_lock_through_the_control_port_takes_its_range() -> None:
    """The control port passed no arguments but a power limit's: a lock sent through it
    failed as a bad request."""

    async def main() -> None:
        sims = [SimGpu(0, settle_s=1e-6)]
        sim = SimFleet([], sims, control_port=0)
        await sim.start()
        try:
            assert sim.control_port is not None
            backend = RemoteSimBackend("127.0.0.1", sim.control_port, timeout_s=10.0)
            await backend.call(0, "set_locked_clocks", 1005.0, 1410.0)
            assert sims[0]._locked == (1005, 1410)
            await backend.close()
        finally:
            await sim.stop()

    asyncio.run(main())


def _fake_pynvml(hops: list[str]) -> types.ModuleType:
    """pynvml's calls the adapter makes, in NVML's units (mW, mJ, MHz), for one GPU."""
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        value = 999

    def call(name: str, value: Any) -> Any:
        def f(*_: Any) -> Any:
            hops.append(name)
            return value

        return f

    nv.NVMLError = NVMLError  # type: ignore[attr-defined]
    nv.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    nv.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    for name, value in {
        "nvmlInit": None,
        "nvmlDeviceGetHandleByIndex": object(),
        "nvmlDeviceGetPowerUsage": 412_345,  # mW
        "nvmlDeviceGetEnforcedPowerLimit": 500_000,  # mW
        "nvmlDeviceGetTotalEnergyConsumption": 9_876_543,  # mJ
        "nvmlDeviceGetUtilizationRates": types.SimpleNamespace(gpu=87, memory=40),
        "nvmlDeviceGetClockInfo": 1755,
        "nvmlDeviceGetTemperature": 61,
    }.items():
        setattr(nv, name, call(name, value))
    return nv


def test_a_reading_through_nvml_is_one_thread_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    hops: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(hops))
    backend = PynvmlBackend()
    threads: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(fn: Any, index: int, call: str, *args: float) -> Any:
        threads.append(call)
        return await to_thread(fn, index, call, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    gpu = NvmlGpu("g/0", "0", backend=backend, index=0)

    async def main() -> None:
        t = await gpu.read()
        assert threads == ["reading"] and len(hops) == 8  # nvmlInit, the handle, six
        assert t.power_w == pytest.approx(412.345) and t.target_w == 500.0
        assert t.energy_j == pytest.approx(9876.543) and t.utilisation_pct == 87.0
        assert t.sm_clock_mhz == 1755.0 and t.temperatures_c == (61.0,)

    asyncio.run(main())
