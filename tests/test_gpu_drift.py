"""A GPU changed behind gridsched's back, and a GPU that refuses clock locks.

- A power limit changed outside gridsched (an operator's ``nvidia-smi -pl 300`` on a GPU
  set to 350 W) is drift, as a lock reset is: the reading says so, the daemon takes the
  mode it reads (no mode of the class at 300 W: UNKNOWN), counts it in status and in
  ``gridsched_device_drifts_total``, logs it once, and puts it back.
- A GPU whose clock locks NVML refuses (NOT_SUPPORTED on a consumer GPU, NO_PERMISSION in a
  container without the capability) is marked as not lock-capable: its class's clock modes
  are unreachable for it, said once, and not sent again in a loop; a lock NVML later
  accepts clears the mark.

The site is tests/test_gpu_mode_truth.py's: two decode-phase H100s (the simulator's, through
the NVML adapter), with ``infer@1410MHz`` locking the SM clock under the same 350 W limit as
``infer@350W``, and ``infer@200W``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from adapters.base import Health, ModeRequest
from adapters.gpu import NvmlGpu
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.devices import UNKNOWN
from scheduler.service.metrics import metrics_registry
from tests.test_gpu_mode_truth import CAP_TWIN, CLOCK_MODE, GPU0, _daemon, _reading, _run

GPU1 = "h100/gpu1"
DRIFTS = "gridsched_device_drifts_total"


async def _to_mode(d: Daemon, mode: str, units: int = 2) -> None:
    """Plan ``units`` GPUs into ``mode`` (the rest asleep), dispatch, read back."""
    await d.replan("test")
    plan = d.plans.plan
    assert plan is not None
    (cp,) = [c for c in plan.classes if c.name == "h100"]
    cp.units_by_mode[:, :] = 0
    cp.units_by_mode[cp.modes.index(mode), :] = units
    await d.dispatch()
    await d.poll(dispatch=False)


def _drift_lines(caplog: pytest.LogCaptureFixture, device_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gridsched.daemon" and r.getMessage().startswith(f"{device_id} reads")
    ]


def test_a_reading_at_a_limit_no_mode_sets_is_no_mode_of_the_class(tmp_path: Path) -> None:
    """The nearest mode was taken before: 300 W read as the 350 W cap, 200 W with the
    clock lock as the clock mode (350 W)."""
    d, _ = _daemon(tmp_path)
    seen = d.devices.from_reading
    assert seen(GPU0, _reading(None, 300.0)) == UNKNOWN
    assert seen(GPU0, _reading((1005, 1410), 200.0)) == UNKNOWN
    assert seen(GPU0, _reading(None, 350.4)) == CAP_TWIN  # NVML's own rounding: still it
    assert seen(GPU0, _reading(None, 200.0)) == "infer@200W"


def test_a_power_limit_changed_outside_gridsched_is_drift_said_and_put_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gridsched.daemon")
    d, sims = _daemon(tmp_path)

    async def body() -> None:
        await _to_mode(d, CAP_TWIN)
        assert d.devices.modes[GPU0] == CAP_TWIN and sims[0].limit_w() == 350.0
        caplog.clear()
        sims[0].set_limit_w(300.0)  # an operator's nvidia-smi -pl 300
        await d.poll(dispatch=False)
        # seen: not the 350 W mode believed, nor a mode it is not in; said why
        assert d.devices.modes[GPU0] == UNKNOWN
        h100 = d.status()["classes"]["h100"]
        assert "300 W" in h100["unknown"][GPU0] and "350 W" in h100["unknown"][GPU0]
        assert h100["drifted"] == {"power_limit": 1}
        assert metrics_registry(d).get_sample_value(
            DRIFTS, {"class": "h100", "what": "power_limit"}
        ) == pytest.approx(1.0)
        st = d.fleet.status[GPU0]
        assert st.health is Health.DEGRADED
        # counted at what it reads: its power read, no tokens/s of the mode believed
        t = st.telemetry
        assert t is not None and t.target_w == 300.0
        assert d.power.device(GPU0, False).kw == pytest.approx((t.power_w or 0) / 1000)
        assert d.devices.serving_tokens() == pytest.approx(
            d.devices.counted["h100"][CAP_TWIN]  # gpu1's alone
        )
        (line,) = _drift_lines(caplog, GPU0)
        assert "power limit" in line and "300" in line
        await d.poll(dispatch=False)  # the same drift read again: no second line
        assert len(_drift_lines(caplog, GPU0)) == 1
        # put back by the next dispatch, and read so
        await d.dispatch()
        assert sims[0].limit_w() == 350.0 and d.devices.modes[GPU0] == CAP_TWIN
        await d.poll(dispatch=False)
        assert d.status()["classes"]["h100"]["unknown"] == {}
        assert d.fleet.status[GPU0].health is Health.OK

    _run(d, body)


def test_a_clock_mode_whose_limit_is_changed_is_not_taken_for_the_clock_mode(
    tmp_path: Path,
) -> None:
    d, sims = _daemon(tmp_path)

    async def body() -> None:
        await _to_mode(d, CLOCK_MODE)
        assert d.devices.modes[GPU0] == CLOCK_MODE
        sims[0].set_limit_w(200.0)  # the lock kept, the limit lowered
        await d.poll(dispatch=False)
        assert d.devices.modes[GPU0] == UNKNOWN
        await d.dispatch()
        assert sims[0].limit_w() == 350.0 and sims[0]._locked == (1005, 1410)

    _run(d, body)


def test_the_adapter_says_a_power_limit_it_did_not_set() -> None:
    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6)
        gpu = NvmlGpu("h100/gpu0", "0", backend=LocalSimBackend([sim]), index=0)
        gpu.controller = True
        await gpu.connect()
        await gpu.apply(ModeRequest("run", 350.0))
        assert (await gpu.read()).errors == ()
        sim.set_limit_w(300.0)
        t = await gpu.read()
        assert any("300 W" in e and "350 W" in e for e in t.errors), t.errors
        await gpu.apply(ModeRequest("run", 350.0))
        assert (await gpu.read()).errors == ()

    asyncio.run(go())


class _Counted:
    """Counts the clock locks a simulated GPU is sent (the refused ones too)."""

    def __init__(self, sim: SimGpu) -> None:
        self.n = 0
        lock = sim.set_locked_clocks

        def counted(lo_mhz: float, hi_mhz: float) -> None:
            self.n += 1
            lock(lo_mhz, hi_mhz)

        sim.set_locked_clocks = counted  # type: ignore[method-assign]


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refuses SM clock locks" in r.getMessage()]


def test_a_gpu_that_refuses_clock_locks_is_not_sent_them_in_a_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The defect: the lock refused, the read-back never confirmed the clock mode, the GPU
    took the mode it read (its cap twin) and the next dispatch sent the clock mode again,
    at every read-back deadline, for ever."""
    caplog.set_level(logging.INFO)
    d, sims = _daemon(tmp_path)
    sims[0].fault = "clocks_unsupported"  # NVML NOT_SUPPORTED, as on a consumer GPU
    sent = _Counted(sims[0])

    async def body() -> None:
        await _to_mode(d, CLOCK_MODE)
        assert sent.n == 1
        h100 = d.status()["classes"]["h100"]
        assert "NOT_SUPPORTED" in h100["clock_lock_refused"][GPU0]
        assert GPU1 not in h100["clock_lock_refused"]
        for _ in range(4):  # read-back deadlines pass; dispatch runs each poll
            d.clock.advance(31.0)  # type: ignore[attr-defined]
            await d.poll(dispatch=False)
            await d.dispatch()
        assert sent.n == 1  # not sent again
        assert len(_refusal_lines(caplog)) == 1  # said once
        # the clock mode's place on this GPU is its cap twin (the same limit, the most
        # tokens/s of the modes it can take); the GPU that can lock keeps the clock mode
        assert d.devices.modes[GPU0] == CAP_TWIN and sims[0].limit_w() == 350.0
        assert d.devices.modes[GPU1] == CLOCK_MODE and sims[1]._locked == (1005, 1410)
        assert metrics_registry(d).get_sample_value(
            "gridsched_gpu_clock_lock_refused", {"class": "h100"}
        ) == pytest.approx(1.0)
        # permission granted (here: the fault gone) and the retry due: a lock accepted
        # clears the mark
        sims[0].fault = None
        gpu0 = d.fleet.by_id[GPU0]
        assert isinstance(gpu0, NvmlGpu)
        gpu0.lock_retry_s = 0.0
        await d.dispatch()
        assert sent.n == 2 and sims[0]._locked == (1005, 1410)
        assert d.devices.modes[GPU0] == CLOCK_MODE
        assert d.status()["classes"]["h100"]["clock_lock_refused"] == {}

    _run(d, body)


def test_the_fast_path_does_not_step_a_gpu_that_cannot_lock_into_a_clock_mode(
    tmp_path: Path,
) -> None:
    from scheduler.service.daemon.fastpath import shed_order

    d, sims = _daemon(tmp_path)
    sims[0].fault = "clocks_unsupported"

    async def body() -> None:
        await _to_mode(d, CLOCK_MODE)
        d.devices.modes.update({GPU0: CAP_TWIN, GPU1: CAP_TWIN})
        downs = {s.device_id: s.mode for s in shed_order(d.devices) if s.mode != "sleep"}
        assert downs.get(GPU0) != CLOCK_MODE
        assert downs.get(GPU1) == CLOCK_MODE  # the lowest offered below the cap twin

    _run(d, body)


class _NoClockPermission(LocalSimBackend):
    """NVML NO_PERMISSION on the clock calls alone (a container without the capability the
    clock calls ask for; the simulator's own fault refuses the power limit as well)."""

    async def call(self, index: int, call: str, *args: float) -> object:
        if call.endswith("locked_clocks"):
            from adapters.nvml import nvml_error

            raise nvml_error(f"gpu{index}", call, "NO_PERMISSION", "Insufficient Permissions")
        return await super().call(index, call, *args)


def test_the_adapter_marks_a_refused_lock_once_and_clears_it_on_one_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6)
        backend = _NoClockPermission([sim])
        gpu = NvmlGpu("h100/gpu0", "0", backend=backend, index=0)
        gpu.controller = True
        await gpu.connect()
        assert gpu.lock_refused is None  # a refused reset says nothing of a lock
        await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))
        assert gpu.lock_refused is not None and "NO_PERMISSION" in gpu.lock_refused
        assert gpu.clock_modes_barred() == gpu.lock_refused
        await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))  # asked anyway: tried
        assert len(_refusal_lines(caplog)) == 1
        gpu.backend = LocalSimBackend([sim])  # permission granted
        gpu.lock_retry_s = 0.0
        assert gpu.clock_modes_barred() is None  # the retry is due
        await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))
        assert gpu.lock_refused is None and sim._locked == (1005, 1410)

    asyncio.run(go())


def test_assign_gives_clock_modes_to_gpus_that_can_lock_first() -> None:
    from scheduler.service.daemon.dispatch import assign

    ids = ["g0", "g1", "g2", "g3"]
    barred = {"g0": frozenset({CLOCK_MODE}), "g1": frozenset({CLOCK_MODE})}
    instead = {CLOCK_MODE: CAP_TWIN}
    # the GPUs that cannot lock come first and are awake: still not given the clock mode
    modes = {"g0": CAP_TWIN, "g1": CAP_TWIN, "g2": "sleep", "g3": "sleep"}
    out = assign(ids, modes, {CLOCK_MODE: 2, CAP_TWIN: 2}, barred, instead)
    assert out == {"g0": CAP_TWIN, "g1": CAP_TWIN, "g2": CLOCK_MODE, "g3": CLOCK_MODE}
    # more clock-mode places than GPUs that can lock: the rest take its stand-in
    out = assign(ids, {}, {CLOCK_MODE: 3}, barred, instead)
    assert sorted(out.values()) == sorted([CLOCK_MODE, CLOCK_MODE, CAP_TWIN, "sleep"])
    assert out["g2"] == out["g3"] == CLOCK_MODE
    # nothing barred: as before
    assert assign(ids, {}, {CLOCK_MODE: 1}) == {
        "g0": CLOCK_MODE, "g1": "sleep", "g2": "sleep", "g3": "sleep"
    }  # fmt: skip
