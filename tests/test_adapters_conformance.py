"""Conformance: every registered adapter kind (pyasic on a simulated LuxOS miner, the
simulated GPU in process and over the control port) connects, reads, sleeps and runs at a
target the same way, each confirmed by a reading. The LuxOS miner also with ATM on (its
``profileset`` refused beside ATM, as the simulator has it: :mod:`adapters.sim.luxos_atm`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import DeviceAdapter, ModeRequest
from adapters.fleet import Fleet
from adapters.gpu import NvmlGpu
from adapters.sim.fleet import SimFleetThread
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend, RemoteSimBackend
from adapters.sim.luxos import LuxosSim
from tests.support.simfleet import clean, miner_host, run, sim_fleet


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from sim_fleet()


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    clean(sim)
    for m in sim.fleet.miners:  # ATM off and its ceiling back, as the simulator starts
        if isinstance(m, LuxosSim):
            sim.call(lambda m=m: (setattr(m, "atm", False), setattr(m, "atm_max", "default")))


def _pyasic_adapter(sim: SimFleetThread) -> DeviceAdapter:
    return PyasicMiner("c/asic", miner_host(sim, 2), timeout_s=10.0)


def _pyasic_atm_adapter(sim: SimFleetThread) -> DeviceAdapter:
    m = sim.fleet.miners[3]
    assert isinstance(m, LuxosSim)
    sim.call(lambda: setattr(m, "atm", True))
    return PyasicMiner("c/asic-atm", m.host, timeout_s=10.0)


def _local_gpu(sim: SimFleetThread) -> DeviceAdapter:
    gpu = SimGpu(0, settle_s=0.01)
    return NvmlGpu("c/gpu0", "0", LocalSimBackend([gpu]), 0, 10.0, lambda w: 480.0 * w / 700)


def _remote_gpu(sim: SimFleetThread) -> DeviceAdapter:
    port = sim.fleet.control_port
    assert port is not None
    return NvmlGpu("c/gpu1", "1", RemoteSimBackend("127.0.0.1", port, timeout_s=10.0), 1, 10.0)


@pytest.mark.parametrize(
    "make",
    [_pyasic_adapter, _pyasic_atm_adapter, _local_gpu, _remote_gpu],
    ids=["pyasic", "pyasic-luxos-atm", "sim-gpu", "sim-gpu-remote"],
)
def test_adapter_conformance(sim: SimFleetThread, make: Any) -> None:
    dev = make(sim)

    async def go() -> None:
        info = await dev.connect()
        assert info.device_id == dev.device_id and info.kind in ("asic", "gpu")
        t = await dev.read()
        assert t.state == "running" and t.power_w and t.power_w > 0
        assert t.target_w is not None
        fleet = Fleet([dev], concurrency=4)
        fleet.status[dev.device_id].connected = True
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok, out[0].error
        confirmed = await fleet.confirm(out, timeout_s=15.0, poll_s=0.05)
        assert confirmed[dev.device_id] is not None
        lo = info.min_power_w or 0.0
        hi = info.max_power_w or 0.0
        target = lo + 0.6 * (hi - lo)
        out = await fleet.apply({dev.device_id: ModeRequest("run", target)})
        assert out[0].ok and out[0].applied is not None, out[0].error
        applied = out[0].applied.target_w
        assert applied is not None and lo <= applied <= target + 0.5
        confirmed = await fleet.confirm(out, timeout_s=15.0, poll_s=0.05)
        assert confirmed[dev.device_id] is not None
        t = await dev.read()
        assert t.state == "running" and t.target_w == pytest.approx(applied, abs=1.0)
        await dev.close()

    run(go())
