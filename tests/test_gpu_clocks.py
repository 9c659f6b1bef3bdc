"""GPU modes that lock the SM clock range as well as set a power limit (NVML
nvmlDeviceSetGpuLockedClocks / nvmlDeviceResetGpuLockedClocks), through the NVML adapter
on the simulated GPU."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters import registry
from adapters.base import ModeRequest
from adapters.gpu import NvmlGpu
from adapters.registry import mode_request
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.errors import ConfigError
from tests.conftest import make_site
from tests.test_inference_objectives import DECODE_H100

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


def _cap_curve(limit_w: float) -> float:
    return 2400.0 * limit_w / 700.0  # tokens/s at a power limit, clocks left to the driver


def test_a_gpu_locked_low_is_not_reported_at_its_power_cap_throughput() -> None:
    """The defect: the estimate took the power limit alone, so a GPU whose SM clock is
    locked low read as serving at its cap's throughput. With no figure for the locked
    mode, the reading says it cannot tell instead."""

    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6)
        gpu = NvmlGpu("h100-0", "0", LocalSimBackend([sim]), 0, throughput=_cap_curve)
        await gpu.connect()
        await gpu.apply(ModeRequest("run", 700.0))
        plain = await gpu.read()
        assert plain.tokens_s == pytest.approx(2400.0 * 0.9) and plain.errors == ()
        await gpu.apply(ModeRequest("run", 700.0, (210, 600)))
        locked = await gpu.read()
        assert locked.sm_clock_mhz is not None and locked.sm_clock_mhz <= 600
        assert locked.tokens_s is None
        assert any("210-600 MHz" in e and "tokens/s" in e for e in locked.errors)

    asyncio.run(go())


def _decode_gpu() -> tuple[NvmlGpu, SimGpu, Any]:
    """One decode-phase H100 built as the daemon builds it: its clock mode and its 350 W
    cap share a 350 W power limit (tests/test_objectives_fastpath.py has the figures)."""
    site = make_site(devices=[{**DECODE_H100, "count": 1, "adapter": {"kind": "sim"}}])
    (gpu,) = [a for a in registry.build(site).adapters if isinstance(a, NvmlGpu)]
    assert isinstance(gpu.backend, LocalSimBackend)
    return gpu, gpu.backend.gpus[0], site.devices[0]


def test_the_estimate_follows_the_mode_read_back_limit_and_clock_lock() -> None:
    gpu, sim, dc = _decode_gpu()
    stated = {m.name: m.throughput_tokens_s for m in dc.modes}

    async def go() -> None:
        await gpu.connect()
        for mode in ("infer@1410MHz", "infer@350W", "infer@200W", "infer@1410MHz"):
            await gpu.apply(registry.mode_request(dc, mode))
            t = await gpu.read()
            assert t.tokens_s == pytest.approx(stated[mode] * sim.load), mode
            assert t.errors == ()
        await gpu.close()

    asyncio.run(go())
    # the limit alone would say the cap curve's figure for 350 W, far from either mode's
    assert stated["infer@1410MHz"] < stated["infer@350W"]


def test_a_lock_lost_outside_gridsched_is_said_and_locked_again() -> None:
    """A clock read back above the lock this adapter set: the lock is not in force (an
    operator's ``nvidia-smi -rgc``, a driver reload) and NVML cannot say which clocks are,
    so no tokens/s is claimed until a command sets the clocks again."""
    gpu, sim, dc = _decode_gpu()

    async def go() -> None:
        await gpu.connect()
        clock_mode = registry.mode_request(dc, "infer@1410MHz")
        await gpu.apply(clock_mode)
        sim.reset_locked_clocks()  # behind the adapter's back
        t = await gpu.read()
        assert t.tokens_s is None and t.sm_clock_mhz is not None and t.sm_clock_mhz > 1410
        assert any("not in force" in e for e in t.errors)
        assert (await gpu.read()).tokens_s is None  # still cannot tell
        await gpu.apply(clock_mode)  # the same mode again: locked again, not skipped
        assert sim._locked == (1005, 1410)
        again = await gpu.read()
        assert again.tokens_s is not None and again.errors == ()

    asyncio.run(go())


class _HangingClocks(LocalSimBackend):
    """The simulator, with the clock-lock call never answering (a wedged driver)."""

    async def call(self, index: int, call: str, *args: float) -> Any:
        if call == "set_locked_clocks":
            await asyncio.Event().wait()
        return await super().call(index, call, *args)


def test_a_clock_call_that_times_out_leaves_the_clocks_unknown() -> None:
    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6)
        gpu = NvmlGpu("h100-0", "0", _HangingClocks([sim]), 0, 0.05, throughput=_cap_curve)
        await gpu.connect()
        applied = await gpu.apply(ModeRequest("run", 700.0, (1005, 1410)))
        assert "not applied" in applied.note
        t = await gpu.read()
        assert t.tokens_s is None and any("timed out" in e for e in t.errors)
        await gpu.apply(ModeRequest("run", 700.0))  # a reset NVML answers: known again
        assert (await gpu.read()).tokens_s == pytest.approx(2400.0 * sim.load)

    asyncio.run(go())
