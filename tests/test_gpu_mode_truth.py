"""A GPU's mode as the daemon reads it: power limit AND SM clock lock, never one guessed
for the other. NVML sets and resets a locked clock range but cannot read one back, so the
lock in force is the one the adapter set, or unknown (a lock left by a crashed run, a lock
reset behind gridsched's back, a lock call that timed out); the daemon resets it on
connect and re-commands a GPU whose lock it cannot tell.

The class is the decode-phase H100 of tests/test_inference_objectives.py: caps 350 and
200 W (decode never reaches 700 W), and ``infer@1410MHz``, the SM clock locked at
1,005-1,410 MHz under the same 350 W limit as ``infer@350W`` (its cap twin). GPUs are the
simulator's (adapters/sim/gpu.py), reached through the NVML adapter as a ``kind = "sim"``
class builds them."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from adapters import registry
from adapters.base import CLOCKS_UNKNOWN, Health, ModeRequest, Telemetry
from adapters.fleet_shards import make_fleet
from adapters.gpu import NvmlGpu
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.site import parse_site
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.devices import UNKNOWN, mode_kw
from scheduler.service.daemon.fastpath import shed_order
from tests.support.clock import FakeClock
from tests.support.sitefile import device_classes, site_text
from tests.test_inference_objectives import DECODE_H100


def gpu_site(committed_tokens_s: int = 100) -> str:
    """Two simulated H100s decoding, ``committed_tokens_s`` committed at 1 USD/Mtok."""
    return site_text(
        "gpu mode truth",
        site={"base_load_kw": 0},
        hashprice=None,
        inference={"committed_tokens_s": committed_tokens_s, "committed_usd_per_mtok": 1.0},
        devices=device_classes(DECODE_H100 | {"count": 2, "adapter": {"kind": "sim"}}),
    )


SITE = gpu_site()
CLOCK_MODE, CAP_TWIN = "infer@1410MHz", "infer@350W"
GPU0 = "h100/gpu0"


def _daemon(tmp_path: Path, committed_tokens_s: int = 100) -> tuple[Daemon, list[SimGpu]]:
    """A daemon over two simulated GPUs (settling at once), and the simulated GPUs."""
    config = parse_site(tomllib.loads(gpu_site(committed_tokens_s)), "site.toml", str(tmp_path))
    built = registry.build(config)
    backend = built.adapters[0].backend if isinstance(built.adapters[0], NvmlGpu) else None
    assert isinstance(backend, LocalSimBackend)
    for sim in backend.gpus:
        sim.settle_s = 1e-6
    d = Daemon(config, tmp_path / "state.db", clock=FakeClock(), built=built)
    return d, list(backend.gpus)


def _run(d: Daemon, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def go() -> None:
        try:
            await d.open()  # connect, read once; no jobs
            await body()
        finally:
            await d.close()

    asyncio.run(go())


def _reading(lock: Any, target_w: float = 350.0, state: str = "running") -> Telemetry:
    return Telemetry(GPU0, 0.0, state, target_w=target_w, sm_clock_lock_mhz=lock)  # type: ignore[arg-type]


def test_a_reading_is_matched_by_power_limit_and_clock_lock(tmp_path: Path) -> None:
    """The defect: the limit alone took a clock-locked GPU as its 350 W cap twin."""
    d, _ = _daemon(tmp_path)
    seen = d.devices.from_reading
    assert seen(GPU0, _reading((1005, 1410))) == CLOCK_MODE
    assert seen(GPU0, _reading(None)) == CAP_TWIN
    assert seen(GPU0, _reading(None, 200.0)) == "infer@200W"
    # a lock the adapter cannot tell: the mode is not known, not the cap twin guessed
    assert seen(GPU0, _reading(CLOCKS_UNKNOWN)) == UNKNOWN
    # the lock under a limit none of its modes sets (no 200 W clock mode): no mode of the
    # class, not the nearest (tests/test_gpu_drift.py: a limit changed outside gridsched)
    assert seen(GPU0, _reading((1005, 1410), 200.0)) == UNKNOWN
    # a lock no mode of the class has: no mode of the class either
    assert seen(GPU0, _reading((210, 600))) == UNKNOWN
    assert seen(GPU0, _reading(CLOCKS_UNKNOWN, state="sleeping")) == SLEEP
    # an unknown mode counts at the class's top power where a figure is needed
    dc = d.devices.class_of(GPU0)
    assert mode_kw(dc, UNKNOWN) == max(m.power_kw for m in dc.modes)


def test_a_gpu_in_no_known_mode_is_shed_as_drawing_its_top_mode(tmp_path: Path) -> None:
    """Not skipped as if asleep: it may draw up to the class's top mode."""
    d, _ = _daemon(tmp_path)
    d.devices.modes.update({GPU0: UNKNOWN, "h100/gpu1": CAP_TWIN})
    steps = {s.device_id: s for s in shed_order(d.devices) if s.mode == SLEEP}
    assert steps[GPU0].saves_kw == pytest.approx(steps["h100/gpu1"].saves_kw)
    # never read: counted at the most it may draw, as the shed order counts it
    top_kw = max(m.power_kw for m in d.devices.class_of(GPU0).modes)
    assert d.power.device(GPU0, False).kw == pytest.approx(top_kw)


def test_a_fresh_adapter_does_not_claim_the_driver_clocks_and_reads_only(tmp_path: Path) -> None:
    """A GPU left locked by an earlier run, read by an adapter that commands nothing (as
    ``gridsched fleet status`` does: connect, read, close): the lock is said unknown and no
    tokens/s claimed; nothing is reset (a running daemon's lock is left alone). A reader
    never knows the lock, so that is no fault of the device: its health stays ok."""
    config = parse_site(tomllib.loads(SITE), "site.toml", str(tmp_path))
    built = registry.build(config)  # as cmd_status builds them, tokens/s figures and all
    backend = getattr(built.adapters[0], "backend", None)
    assert isinstance(backend, LocalSimBackend)
    sim = backend.gpus[0]
    sim.set_limit_w(350.0)
    sim.set_locked_clocks(1005, 1410)  # the previous run's
    fleet = make_fleet(built.adapters, built.groups, 1)

    async def go() -> None:
        await fleet.connect_all()
        t = (await fleet.read_all())[GPU0]
        assert t.sm_clock_lock_mhz == CLOCKS_UNKNOWN and t.tokens_s is None
        assert fleet.status[GPU0].health is Health.OK and t.errors == ()
        await fleet.close()

    asyncio.run(go())
    assert sim._locked == (1005, 1410)


def test_a_lock_left_by_a_crashed_run_is_reset_when_the_daemon_connects(tmp_path: Path) -> None:
    """The previous run crashed with GPU 0 in the clock mode (350 W, locked): the daemon
    resets the lock on connect, so the first reading knows the clocks and reads the GPU as
    what it now is, the 350 W cap (not the clock mode, not guessed)."""
    d, sims = _daemon(tmp_path)
    sims[0].set_limit_w(350.0)
    sims[0].set_locked_clocks(1005, 1410)

    async def body() -> None:
        assert sims[0]._locked is None
        t = d.fleet.status[GPU0].telemetry
        assert t is not None and t.sm_clock_lock_mhz is None and t.errors == ()
        assert d.devices.modes[GPU0] == CAP_TWIN
        assert d.fleet.status[GPU0].health is Health.OK

    _run(d, body)


async def _to_clock_mode(d: Daemon) -> None:
    """Plan every GPU into the clock mode, dispatch, and read it back."""
    await d.replan("test")
    plan = d.plans.plan
    assert plan is not None
    (cp,) = [c for c in plan.classes if c.name == "h100"]
    cp.units_by_mode[:, :] = 0
    cp.units_by_mode[cp.modes.index(CLOCK_MODE), :] = 2
    await d.dispatch()
    await d.poll(dispatch=False)


def test_a_lock_reset_outside_gridsched_is_drift_said_and_re_commanded(tmp_path: Path) -> None:
    d, sims = _daemon(tmp_path)

    async def body() -> None:
        await _to_clock_mode(d)
        assert sims[0]._locked == (1005, 1410) and d.devices.modes[GPU0] == CLOCK_MODE
        t = d.fleet.status[GPU0].telemetry
        assert t is not None and t.sm_clock_lock_mhz == (1005, 1410)
        sims[0].reset_locked_clocks()  # an operator's nvidia-smi -rgc
        await d.poll(dispatch=False)
        # seen: its mode is not known (not the 350 W cap twin believed), and said so
        assert d.devices.modes[GPU0] == UNKNOWN
        h100 = d.status()["classes"]["h100"]
        assert h100["modes"] == {UNKNOWN: 1, CLOCK_MODE: 1}
        assert "not in force" in h100["unknown"][GPU0]
        st = d.fleet.status[GPU0]
        assert st.health is Health.DEGRADED and st.telemetry is not None
        assert any("not in force" in e for e in st.telemetry.errors)
        # the next dispatch commands it again rather than believing it
        await d.dispatch()
        assert sims[0]._locked == (1005, 1410) and d.devices.modes[GPU0] == CLOCK_MODE
        await d.poll(dispatch=False)
        assert d.status()["classes"]["h100"]["unknown"] == {}
        t = d.fleet.status[GPU0].telemetry
        assert t is not None and t.sm_clock_lock_mhz == (1005, 1410)
        assert d.fleet.status[GPU0].health is Health.OK

    _run(d, body)


def test_a_clock_mode_is_confirmed_only_when_the_lock_reads_back() -> None:
    """A GPU that accepts the power limit and refuses the lock did not take the clock mode:
    its read-back does not confirm it (the daemon then takes the mode it reads)."""

    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6, fault="clocks_unsupported")
        gpu = NvmlGpu("h100/gpu0", "0", backend=LocalSimBackend([sim]), index=0)
        gpu.controller = True
        await gpu.connect()
        applied = await gpu.apply(ModeRequest("run", 350.0, (1005, 1410)))
        t = await gpu.read()
        assert t.sm_clock_lock_mhz is None  # NOT_SUPPORTED: no lock can be in force
        assert not gpu.confirms(applied, t)
        plain = await gpu.apply(ModeRequest("run", 350.0))
        assert gpu.confirms(plain, await gpu.read())

    asyncio.run(go())


@pytest.mark.parametrize("fault", ["no_permission", None])
def test_the_connect_reset_leaves_the_lock_unknown_only_when_it_fails(fault: str | None) -> None:
    async def go() -> None:
        sim = SimGpu(0, settle_s=1e-6)
        sim.set_locked_clocks(1005, 1410)
        sim.fault = fault
        gpu = NvmlGpu("h100/gpu0", "0", backend=LocalSimBackend([sim]), index=0)
        gpu.controller = True
        await gpu.connect()  # a refused reset does not fail the connect
        sim.fault = None
        t = await gpu.read()
        if fault is None:
            assert t.sm_clock_lock_mhz is None and sim._locked is None
        else:
            assert t.sm_clock_lock_mhz == CLOCKS_UNKNOWN and sim._locked == (1005, 1410)
            assert any("NO_PERMISSION" in e for e in t.errors)

    asyncio.run(go())
