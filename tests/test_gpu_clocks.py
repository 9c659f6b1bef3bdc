"""GPU modes that lock the SM clock range as well as set a power limit (NVML
nvmlDeviceSetGpuLockedClocks / nvmlDeviceResetGpuLockedClocks), through the NVML adapter
on the simulated GPU."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import ModeRequest
from adapters.gpu import NvmlGpu
from adapters.registry import mode_request
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.errors import ConfigError
from tests.conftest import make_site

CLOCKED = {
    "name": "h100",
    "kind": "gpu",
    "count": 2,
    "idle_power_kw": 0.07,
    "modes": [
        {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 2400.0},
        {
            "name": "decode-1410",
            "power_kw": 0.7,
            "throughput_tokens_s": 2300.0,
            "sm_clock_mhz": [1005, 1410],
        },
    ],
}


def test_a_mode_asks_for_its_clock_range() -> None:
    dc = make_site(devices=[CLOCKED]).devices[0]
    assert mode_request(dc, "decode-1410") == ModeRequest("run", 700.0, (1005, 1410))
    assert mode_request(dc, "full") == ModeRequest("run", 700.0, None)
    assert mode_request(dc, "sleep") == ModeRequest("sleep")
    assert mode_request(dc, "decode-1410").describe() == "run@700W@1005-1410MHz"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kind": "asic", "modes": [{"name": "m", "power_kw": 3.0, "hashrate_ths": 100.0,
                                     "sm_clock_mhz": [1000, 1400]}]}, "GPU classes only"),
        ({"modes": [{"name": "m", "power_kw": 0.7, "throughput_tokens_s": 1.0,
                     "sm_clock_mhz": [1400, 1000]}]}, "min <= max"),
    ],
)  # fmt: skip
def test_clock_modes_that_cannot_work_are_refused(change: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make_site(devices=[{**CLOCKED, **change}])


def _gpu(fault: str | None = None) -> tuple[NvmlGpu, SimGpu]:
    sim = SimGpu(0, settle_s=1e-6, fault=fault)
    return NvmlGpu("h100-0", "0", backend=LocalSimBackend([sim]), index=0), sim


def test_clocks_are_locked_reset_on_a_plain_mode_on_sleep_and_on_close() -> None:
    async def go() -> None:
        gpu, sim = _gpu()
        await gpu.connect()
        await gpu.apply(ModeRequest("run", 700.0))
        unlocked = await gpu.read()
        applied = await gpu.apply(ModeRequest("run", 700.0, (1005, 1410)))
        assert applied.note == "" and sim._locked == (1005, 1410)
        locked = await gpu.read()
        assert locked.sm_clock_mhz is not None and locked.sm_clock_mhz <= 1410
        assert unlocked.power_w is not None and locked.power_w is not None
        assert locked.power_w < unlocked.power_w  # the lower clock draws less under the cap
        await gpu.apply(ModeRequest("run", 700.0))
        assert sim._locked is None
        await gpu.apply(ModeRequest("run", 700.0, (1005, 1410)))
        await gpu.apply(ModeRequest("sleep"))
        assert sim._locked is None
        await gpu.apply(ModeRequest("run", 700.0, (1005, 1410)))
        await gpu.close()
        assert sim._locked is None

    asyncio.run(go())


def test_a_gpu_that_refuses_clock_locks_keeps_its_power_limit_and_says_so() -> None:
    async def go() -> None:
        gpu, sim = _gpu(fault="clocks_unsupported")
        await gpu.connect()
        applied = await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))
        assert sim.limit_w() == 350.0 and sim._locked is None
        assert "SM clock lock (1005, 1410) not applied" in applied.note
        assert "NOT_SUPPORTED" in applied.note
        # the next apply tries again (nothing was believed locked)
        sim.fault = None
        applied = await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))
        assert applied.note == "" and sim._locked == (1005, 1410)

    asyncio.run(go())


def test_clocks_outside_what_the_gpu_supports_are_not_claimed() -> None:
    async def go() -> None:
        gpu, sim = _gpu()
        await gpu.connect()
        applied = await gpu.apply(ModeRequest("run", 700.0, (1005, 2500)))
        assert "INVALID_ARGUMENT" in applied.note and sim._locked is None

    asyncio.run(go())
