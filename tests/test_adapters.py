"""Adapters over real TCP against the simulators: pyasic discovery, conformance, faults."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from adapters.asic import PyasicMiner, choose_preset, parse_luxos
from adapters.base import (
    Applied,
    BadReply,
    DeviceAdapter,
    DeviceUnreachable,
    Health,
    ModeRequest,
    Telemetry,
    Unsupported,
)
from adapters.fleet import Fleet, Outcome, RetryPolicy
from adapters.gpu import NvmlGpu, PynvmlBackend, ServingHook
from adapters.secrets import Secret, load_secret
from adapters.sim.fleet import SimFleet, SimFleetThread, loopback_hosts
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend, RemoteSimBackend
from adapters.sim.miner import FaultKind, SimMiner
from models.errors import ConfigError

FAST = {"sleep_s": 0.3, "wake_s": 0.6, "retune_s": 0.1, "reboot_s": 0.6}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    """Eight fast miners and four GPUs on their own event loop thread."""
    fleet = SimFleet.build(
        8, 4, base="127.7.0.0", models=("Antminer S19j Pro", "Antminer S21"), control_port=0, **FAST
    )
    th = SimFleetThread(fleet)
    with th:
        yield th


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    sim.call(lambda: [m.clear_faults() for m in sim.fleet.miners])
    sim.call(lambda: [setattr(g, "fault", None) for g in sim.fleet.gpus])
    time.sleep(0.05)  # listeners restart on the simulator's loop


def miner_host(sim: SimFleetThread, i: int) -> str:
    return sim.fleet.miners[i].host


def wait_listening(sim: SimFleetThread, i: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sim.call(lambda: sim.fleet.miners[i].listening):
            return
        time.sleep(0.05)
    raise AssertionError("simulated miner did not come back")


# -- the simulator speaks what pyasic speaks ---------------------------------------------------


def test_pyasic_discovers_and_drives_the_simulator(sim: SimFleetThread) -> None:
    import pyasic
    from pyasic.miners.backends import LUXMiner

    async def go() -> None:
        m = await pyasic.get_miner(miner_host(sim, 0))
        assert isinstance(m, LUXMiner)
        assert "S19j Pro" in str(m.model)
        data = await m.get_data()
        assert data.wattage and data.wattage > 2000
        assert data.hashrate is not None and float(data.hashrate) > 80
        assert data.fw_ver
        assert await m.stop_mining() is True
        await asyncio.sleep(FAST["sleep_s"] + 0.1)
        assert (await m.get_data()).wattage < 60
        assert await m.resume_mining() is True
        assert await m.set_power_limit(2600) is True  # LuxOS: highest preset <= 2600 W

    run(go())
    assert sim.call(lambda: sim.fleet.miners[0].state.profile) == "-1"
    s21 = run(_discover(miner_host(sim, 4)))
    assert "S21" in s21


async def _discover(host: str) -> str:
    import pyasic

    m = await pyasic.get_miner(host)
    return str(m.model)


def test_simulated_miner_dynamics(sim: SimFleetThread) -> None:
    t = [0.0]
    m = SimMiner("127.0.0.1", clock=lambda: t[0], sleep_s=5.0, wake_s=12.0)
    full, ths = m.power_and_hashrate()
    m.sleep()
    t[0] = 2.5
    half, _ = m.power_and_hashrate()
    assert 0.3 * full < half < 0.7 * full
    t[0] = 5.1
    assert m.power_and_hashrate() == (pytest.approx(15.0), 0.0)
    m.wake()
    t[0] = 5.1 + 3.0  # still booting: fans, no hashing
    assert m.power_and_hashrate()[1] == 0.0
    t[0] = 5.1 + 12.1
    w, h = m.power_and_hashrate()
    assert w == pytest.approx(full, rel=0.01) and h == pytest.approx(ths, rel=0.01)
    assert m.state.energy_j >= 0


# -- conformance: every registered adapter kind behaves the same ------------------------------


def _pyasic_adapter(sim: SimFleetThread) -> DeviceAdapter:
    return PyasicMiner("c/asic", miner_host(sim, 2), timeout_s=1.0)


def _local_gpu(sim: SimFleetThread) -> DeviceAdapter:
    gpu = SimGpu(0, settle_s=0.01)
    return NvmlGpu("c/gpu0", "0", LocalSimBackend([gpu]), 0, 1.0, lambda w: 480.0 * w / 700)


def _remote_gpu(sim: SimFleetThread) -> DeviceAdapter:
    port = sim.fleet.control_port
    assert port is not None
    return NvmlGpu("c/gpu1", "1", RemoteSimBackend("127.0.0.1", port), 1, 1.0)


@pytest.mark.parametrize(
    "make", [_pyasic_adapter, _local_gpu, _remote_gpu], ids=["pyasic", "sim-gpu", "sim-gpu-remote"]
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
        confirmed = await fleet.confirm(out, timeout_s=5.0, poll_s=0.05)
        assert confirmed[dev.device_id] is not None
        lo = info.min_power_w or 0.0
        hi = info.max_power_w or 0.0
        target = lo + 0.6 * (hi - lo)
        out = await fleet.apply({dev.device_id: ModeRequest("run", target)})
        assert out[0].ok and out[0].applied is not None, out[0].error
        applied = out[0].applied.target_w
        assert applied is not None and lo <= applied <= target + 0.5
        confirmed = await fleet.confirm(out, timeout_s=5.0, poll_s=0.05)
        assert confirmed[dev.device_id] is not None
        t = await dev.read()
        assert t.state == "running" and t.target_w == pytest.approx(applied, abs=1.0)
        await dev.close()

    run(go())


def test_a_reading_during_the_sleep_ramp_does_not_make_the_next_wake_a_no_op() -> None:
    """Right after a sleep command a LuxOS miner still hashes (it ramps down for seconds) and
    reads as running. If the adapter believed that, the next wake would skip its resume
    and report success while the miner stays asleep."""
    fleet = SimFleet.build(1, 0, base="127.7.9.0", sleep_s=30.0, wake_s=0.3, control_port=None)
    th = SimFleetThread(fleet)
    with th:
        dev = PyasicMiner("r/0", fleet.miners[0].host, timeout_s=2.0)

        async def go() -> None:
            await dev.connect()
            await dev.apply(ModeRequest("sleep"))
            assert (await dev.read()).state == "running"  # ramping down: 3 s above 90 %
            await dev.apply(ModeRequest("run"))
            await asyncio.sleep(0.6)
            assert (await dev.read()).state == "running"

        run(go())
        assert th.call(lambda: fleet.miners[0].state.phase) == "mining"


def test_a_sleeping_luxos_miner_takes_its_next_profile_ahead_and_wakes_in_one_round_trip() -> None:
    fleet = SimFleet.build(1, 0, base="127.7.10.0", sleep_s=0.2, wake_s=0.3, control_port=None)
    th = SimFleetThread(fleet)
    with th:
        sim = fleet.miners[0]
        dev = PyasicMiner("s/0", sim.host, timeout_s=2.0)
        seen = lambda: th.call(lambda: (sim.commands_seen, sim.state.phase, sim.state.profile))  # noqa: E731

        async def go() -> None:
            info = await dev.connect()
            low, high = info.power_targets_w[0], info.power_targets_w[-1]
            assert (await dev.read()).state == "running"
            assert await dev.stage(ModeRequest("run", low)) is None  # awake: nothing ahead
            await dev.apply(ModeRequest("sleep"))
            assert await dev.stage(ModeRequest("run", low)) is None  # not yet read asleep
            while (await dev.read()).state != "sleeping":
                await asyncio.sleep(0.05)
            staged = await dev.stage(ModeRequest("run", low + 10.0))
            assert staged is not None and staged.target_w == low and "presets only" in staged.note
            n, phase, profile = seen()
            assert phase == "sleeping" and profile == dev._profiles[low]  # still asleep
            assert await dev.stage(ModeRequest("run", low)) is None  # already in place
            assert (await dev.read()).target_w == low
            n = seen()[0]
            await dev.apply(ModeRequest("run", low))
            assert seen()[0] == n + 1  # the wake alone
            await asyncio.sleep(0.5)
            t = await dev.read()
            assert t.state == "running" and t.target_w == low
            # Woken: staging leaves it alone, even if a reading caught it still booting.
            assert await dev.stage(ModeRequest("run", high)) is None
            # A wake at a target not staged still sets it first: profile, then the wake.
            await dev.apply(ModeRequest("sleep"))
            while (await dev.read()).state != "sleeping":
                await asyncio.sleep(0.05)
            n = seen()[0]
            await dev.apply(ModeRequest("run", high))
            assert seen()[0] == n + 2
            await dev.close()

        run(go())
        assert dev.info is not None
        assert th.call(lambda: sim.state.profile) == dev._profiles[dev.info.power_targets_w[-1]]


def test_nothing_listening_is_unreachable() -> None:
    dev = PyasicMiner("x/dead", "127.7.200.1", timeout_s=0.5)
    with pytest.raises(DeviceUnreachable, match=r"127\.7\.200\.1"):
        run(dev.connect())


# -- faults: nothing crashes, the device is marked, retried, recovered ------------------------


def _fleet(sim: SimFleetThread, n: int = 4, timeout_s: float = 0.4) -> Fleet:
    devs = [PyasicMiner(f"f/{i}", miner_host(sim, 4 + i), timeout_s=timeout_s) for i in range(n)]
    return Fleet(devs, retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.02), unreachable_after=2)


def _inject(
    sim: SimFleetThread, i: int, kind: FaultKind, duration_s: float = 60.0, delay_s: float = 2.0
) -> None:
    sim.call(lambda: sim.fleet.miners[4 + i].inject(kind, duration_s, delay_s))


def _clear(sim: SimFleetThread, i: int) -> None:
    sim.call(sim.fleet.miners[4 + i].clear_faults)
    wait_listening(sim, 4 + i)


@pytest.mark.parametrize(
    "kind", [FaultKind.REFUSE, FaultKind.HANG, FaultKind.MALFORMED, FaultKind.DROPOUT]
)
def test_fault_marks_the_device_and_spares_the_rest(sim: SimFleetThread, kind: FaultKind) -> None:
    seen: list[Outcome] = []
    fleet = _fleet(sim)
    fleet.on_outcome = seen.append

    async def go() -> None:
        assert all(e is None for e in (await fleet.connect_all()).values())
        _inject(sim, 0, kind)
        readings = await fleet.read_all()
        assert set(readings) == {"f/1", "f/2", "f/3"}
        st = fleet.status["f/0"]
        # It answers something that cannot be parsed: unreadable, not unreachable.
        want = Health.UNREADABLE if kind is FaultKind.MALFORMED else Health.UNREACHABLE
        assert st.health is want and st.last_error
        expected = {
            FaultKind.REFUSE: "Unreachable|ConnectionRefused|empty reply",
            FaultKind.DROPOUT: "Unreachable|ConnectionRefused|empty reply",
            FaultKind.HANG: "no answer within",
            FaultKind.MALFORMED: "Decode|garbles|APIError|no POWER",
        }[kind]
        assert any(w in st.last_error for w in expected.split("|")), st.last_error
        out = await fleet.apply({i: ModeRequest("sleep") for i in fleet.by_id})
        assert len(seen) == 4 and {o.device_id for o in seen} == set(fleet.by_id)
        bad = [o for o in out if not o.ok]
        if kind is not FaultKind.MALFORMED:  # a broken JSON reply can still carry out the command
            assert [o.device_id for o in bad] == ["f/0"] and bad[0].error
        assert all(o.ok for o in out if o.device_id != "f/0")
        _clear(sim, 0)
        for _ in range(3):  # probes, as the daemon's polls would (discovery again on a busy host)
            fleet.status["f/0"].next_probe = 0.0
            await fleet.read_all()
            if fleet.status["f/0"].health is Health.OK:
                break
        # pyasic answers its own failure to parse a control reply as a refusal: a device
        # whose last command was refused stays "rejected" until a command lands.
        fine = {Health.OK, Health.REJECTED} if kind is FaultKind.MALFORMED else {Health.OK}
        assert fleet.status["f/0"].health in fine, fleet.status["f/0"].last_error
        out = await fleet.apply({"f/0": ModeRequest("run", 3050)})
        assert out[0].ok, out[0].error
        assert fleet.status["f/0"].health is Health.OK
        await fleet.apply({i: ModeRequest("run", 3050) for i in fleet.by_id})

    run(go())


def test_a_failed_stage_is_reported_and_the_wake_sets_the_profile_itself(
    sim: SimFleetThread,
) -> None:
    fleet = _fleet(sim, n=2)
    miner = sim.fleet.miners[4]

    async def go() -> None:
        await fleet.connect_all()
        out = await fleet.apply({i: ModeRequest("sleep") for i in fleet.by_id})
        assert all(v is not None for v in (await fleet.confirm(out, 5.0, 0.05)).values())
        dev = fleet.by_id["f/0"]
        assert dev.info is not None
        current = sim.call(lambda: miner.state.profile)
        target = next(
            w
            for w in dev.info.power_targets_w
            if sim.call(lambda: miner.preset(current).watts) != w
        )
        _inject(sim, 0, FaultKind.HANG)
        staged = await fleet.stage({i: ModeRequest("run", target) for i in fleet.by_id})
        by_id = {o.device_id: o for o in staged}
        assert by_id["f/1"].ok and not by_id["f/0"].ok
        assert "no answer within" in str(by_id["f/0"].error)
        assert fleet.status["f/0"].health is Health.DEGRADED
        _clear(sim, 0)
        out = await fleet.apply({"f/0": ModeRequest("run", target)})
        assert out[0].ok, out[0].error
        phase, profile = sim.call(lambda: (miner.state.phase, miner.state.profile))
        assert phase in ("waking", "mining") and miner.preset(profile).watts == target

    run(go())


def test_slow_replies_still_succeed(sim: SimFleetThread) -> None:
    fleet = _fleet(sim, n=2, timeout_s=1.0)

    async def go() -> None:
        await fleet.connect_all()
        _inject(sim, 0, FaultKind.SLOW, delay_s=0.2)
        readings = await fleet.read_all()
        assert set(readings) == {"f/0", "f/1"}
        assert fleet.health_counts()[Health.OK] == 2

    run(go())


def test_reboot_mid_command_then_recovery(sim: SimFleetThread) -> None:
    seen: list[Outcome] = []
    fleet = _fleet(sim, n=2)
    fleet.on_outcome = seen.append

    async def go() -> None:
        await fleet.connect_all()
        await fleet.read_all()
        _inject(sim, 0, FaultKind.REBOOT)
        out = await fleet.apply({"f/0": ModeRequest("sleep"), "f/1": ModeRequest("sleep")})
        assert [o.device_id for o in seen] == sorted(o.device_id for o in out) or len(seen) == 2
        failed = next(o for o in out if o.device_id == "f/0")
        assert not failed.ok and failed.error and failed.attempts == 2
        wait_listening(sim, 4)
        await asyncio.sleep(0.1)
        # The reboot ended the LuxOS session: the adapter logs on again and the command lands.
        out = await fleet.apply({"f/0": ModeRequest("sleep")})
        assert out[0].ok, out[0].error
        confirmed = await fleet.confirm(out, timeout_s=5.0, poll_s=0.05)
        assert confirmed["f/0"] is not None
        assert fleet.status["f/0"].health is Health.OK
        await fleet.apply({i: ModeRequest("run") for i in fleet.by_id})

    run(go())


def test_an_adapter_bug_does_not_stop_the_fleet() -> None:
    class Broken(DeviceAdapter):
        async def connect(self) -> Any:
            return None

        async def read(self) -> Any:
            raise ZeroDivisionError("bug")

        async def apply(self, request: ModeRequest) -> Any:
            return {}["missing"]

    fleet = Fleet([Broken("b/0", "-")], retry=RetryPolicy(attempts=1))

    async def go() -> None:
        assert await fleet.read_all() == {}
        out = await fleet.apply({"b/0": ModeRequest("sleep"), "nope": ModeRequest("sleep")})
        assert not out[0].ok and "KeyError" in str(out[0].error)
        assert not out[1].ok and "unknown device" in str(out[1].error)

    run(go())


class _Timed(DeviceAdapter):
    """An in-memory device that takes its time and logs when each call starts and ends."""

    log: ClassVar[list[tuple[str, str, float]]] = []

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        self.log.append(("read", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.05)
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        self.log.append(("apply", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.3)
        self.log.append(("applied", self.device_id, time.perf_counter()))
        return Applied(request, None)

    async def stage(self, request: ModeRequest) -> Any:
        self.log.append(("stage", self.device_id, time.perf_counter()))
        await asyncio.sleep(0.01)
        return Applied(request, request.power_w) if self.device_id < "t/4" else None


@pytest.mark.parametrize("yield_max_s", [2.0, 0.05])
def test_readings_wait_while_commands_are_in_flight(yield_max_s: float) -> None:
    _Timed.log = []
    fleet = Fleet(
        [_Timed(f"t/{i}", "-") for i in range(8)], concurrency=2, read_yield_max_s=yield_max_s
    )

    async def go() -> None:
        sweep = asyncio.create_task(fleet.read_all())
        await asyncio.sleep(0.01)  # the first two readings are out
        out = await fleet.apply({"t/7": ModeRequest("sleep")})
        assert out[0].ok
        assert len(await sweep) == 8  # the sweep still completes

    run(go())
    began = next(t for what, _, t in _Timed.log if what == "apply")
    ended = next(t for what, _, t in _Timed.log if what == "applied")
    during = [i for what, i, t in _Timed.log if what == "read" and began < t < ended]
    if yield_max_s > 0.3:
        assert during == []  # nothing new went out while the curtail was in flight
    else:
        assert during  # but a long batch does not starve telemetry


def test_staging_waits_for_commands_and_reports_only_what_it_staged() -> None:
    _Timed.log = []
    fleet = Fleet([_Timed(f"t/{i}", "-") for i in range(8)], concurrency=2)
    for st in fleet.status.values():
        st.connected = True
    fleet.status["t/6"].connected = False  # unreachable devices are not staged
    fleet.status["t/5"].health = Health.DEGRADED

    async def go() -> list[Outcome]:
        curtail = asyncio.create_task(fleet.apply({"t/7": ModeRequest("sleep")}))
        await asyncio.sleep(0.01)
        out = await fleet.stage({i: ModeRequest("run", 3000.0) for i in fleet.by_id})
        assert (await curtail)[0].ok
        return out

    out = run(go())
    assert sorted(o.device_id for o in out) == ["t/0", "t/1", "t/2", "t/3"]
    assert all(o.ok and o.applied and o.applied.target_w == 3000.0 for o in out)
    ended = next(t for what, _, t in _Timed.log if what == "applied")
    staged = [(i, t) for what, i, t in _Timed.log if what == "stage"]
    assert "t/6" not in {i for i, _ in staged} and len(staged) == 7
    assert all(t > ended for _, t in staged)  # none went out while the curtail was in flight
    # t/5 staged nothing and was not heard from: its health stands.
    assert fleet.status["t/5"].health is Health.DEGRADED


class _Counting(DeviceAdapter):
    now: ClassVar[dict[str, int]] = {"read": 0, "apply": 0}
    most: ClassVar[dict[str, int]] = {"read": 0, "apply": 0}

    async def connect(self) -> Any:
        return None

    async def _hold(self, op: str) -> None:
        self.now[op] += 1
        self.most[op] = max(self.most[op], self.now[op])
        await asyncio.sleep(0.01)
        self.now[op] -= 1

    async def read(self) -> Any:
        await self._hold("read")
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        await self._hold("apply")
        return Applied(request, None)


def test_readings_and_commands_have_their_own_bounds() -> None:
    _Counting.most = {"read": 0, "apply": 0}
    fleet = Fleet([_Counting(f"c/{i}", "-") for i in range(40)], concurrency=12, read_concurrency=5)

    async def go() -> None:
        assert len(await fleet.read_all()) == 40
        out = await fleet.apply({f"c/{i}": ModeRequest("sleep") for i in range(40)})
        assert all(o.ok for o in out)

    run(go())
    assert _Counting.most == {"read": 5, "apply": 12}


class _SeesCollector(DeviceAdapter):
    """Records whether the garbage collector was on while its command ran."""

    seen: ClassVar[list[bool]] = []
    delay_s: ClassVar[float] = 0.01

    async def connect(self) -> Any:
        return None

    async def read(self) -> Any:
        return Telemetry(self.device_id, time.time(), "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Any:
        self.seen.append(gc.isenabled())
        await asyncio.sleep(self.delay_s)
        self.seen.append(gc.isenabled())
        return Applied(request, None)


def test_the_collector_waits_for_a_batch_of_commands_and_no_longer() -> None:
    fleet = Fleet([_SeesCollector(f"g/{i}", "-") for i in range(20)], gc_hold_max_s=0.2)
    everyone = {i: ModeRequest("sleep") for i in fleet.by_id}
    assert gc.isenabled()

    async def go() -> None:
        _SeesCollector.seen, _SeesCollector.delay_s = [], 0.01
        two = await asyncio.gather(fleet.apply(everyone), fleet.apply({"g/0": ModeRequest("run")}))
        assert all(o.ok for batch in two for o in batch)
        assert _SeesCollector.seen and not any(_SeesCollector.seen)  # off throughout
        assert gc.isenabled()  # and back once the last batch ended
        # A batch stuck on slow devices gets the collector back after gc_hold_max_s.
        _SeesCollector.seen, _SeesCollector.delay_s = [], 0.5
        await fleet.apply(everyone)
        assert _SeesCollector.seen[:20] == [False] * 20 and all(_SeesCollector.seen[20:])
        assert gc.isenabled()
        # A collector the application turned off stays off.
        gc.disable()
        try:
            _SeesCollector.delay_s = 0.01
            await fleet.apply(everyone)
            assert not gc.isenabled()
        finally:
            gc.enable()

    run(go())


# -- payloads, presets, GPUs, secrets ----------------------------------------------------------


def test_luxos_payload_errors_name_what_is_wrong() -> None:
    good = SimMiner("127.0.0.1").answer(b'{"command": "power+summary+stats+config+profiles"}')
    t = parse_luxos("d", good, 0.0)
    assert t.state == "running" and t.power_w and t.target_w == 3050.0
    broken = dict(good)
    broken["power"] = [{"STATUS": [{"STATUS": "S"}], "POWER": []}]
    with pytest.raises(BadReply, match="POWER"):
        parse_luxos("d", broken, 0.0)
    refused = dict(good)
    refused["summary"] = [{"STATUS": [{"STATUS": "E", "Msg": "Invalid session id"}]}]
    with pytest.raises(BadReply, match="Invalid session id"):
        parse_luxos("d", refused, 0.0)
    weird = json.loads(json.dumps(good).replace('"Watts":', '"Watts": "NaN", "x":'))
    with pytest.raises(BadReply):
        parse_luxos("d", weird, 0.0)


def test_power_target_maps_to_presets_with_the_rounding_reported() -> None:
    presets = (2135.0, 2592.0, 3050.0)
    assert choose_preset(presets, 3050.0) == (3050.0, "")
    w, note = choose_preset(presets, 2900.0)
    assert w == 2592.0 and "2900" in note and "2592" in note
    w, note = choose_preset(presets, 1000.0)
    assert w == 2135.0 and "below the lowest" in note


def test_gpu_limits_are_clamped_and_refusals_are_clear() -> None:
    gpu = SimGpu(0, settle_s=0.01)
    dev = NvmlGpu("g/0", "0", LocalSimBackend([gpu]), 0, 1.0)

    async def go() -> None:
        await dev.connect()
        applied = await dev.apply(ModeRequest("run", 900.0))
        assert applied.target_w == 700.0 and "NVML allows [200, 700]" in applied.note
        gpu.fault = "no_permission"
        with pytest.raises(Unsupported, match=r"NO_PERMISSION.*CAP_SYS_ADMIN"):
            await dev.apply(ModeRequest("run", 400.0))
        gpu.fault = "gpu_lost"
        with pytest.raises(DeviceUnreachable, match="GPU_IS_LOST"):
            await dev.read()

    run(go())


def test_missing_nvml_says_so() -> None:
    backend = PynvmlBackend()
    try:
        n = run(backend.count())
    except Unsupported as exc:
        assert "NVML" in str(exc) or "nvidia-ml-py" in str(exc)
        assert not exc.retryable
    else:
        pytest.skip(f"NVML works here ({n} GPUs): see the gpu-marked tests")


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.got.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_serving_hook_hears_the_capacity() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/capacity"
    hook = ServingHook(url, 2.0, Secret("tok"))
    dev = NvmlGpu("g/1", "0", LocalSimBackend([SimGpu(0)]), 0, 1.0, lambda w: w, hook)

    async def go() -> None:
        await dev.connect()
        await dev.apply(ModeRequest("run", 500.0))
        await dev.apply(ModeRequest("sleep"))

    try:
        run(go())
    finally:
        server.shutdown()
    assert _Hook.got[0]["capacity_tokens_s"] == 500.0 and _Hook.got[0]["serving"] is True
    assert _Hook.got[0]["auth"] == "Bearer tok"
    assert _Hook.got[1]["capacity_tokens_s"] == 0.0 and _Hook.got[1]["serving"] is False


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_PW", "hunter2")
    s = load_secret("x.password", "GS_TEST_PW", None)
    assert s is not None and s.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in f"{s}"
    monkeypatch.delenv("GS_TEST_PW")
    with pytest.raises(ConfigError, match="GS_TEST_PW is not set"):
        load_secret("x.password", "GS_TEST_PW", None)


def test_loopback_addresses() -> None:
    hosts = loopback_hosts(300, "127.9.0.0")
    assert hosts[0] == "127.9.0.1" and "127.9.0.255" not in hosts and len(set(hosts)) == 300
    with pytest.raises(ValueError, match="loopback"):
        loopback_hosts(1, "10.0.0.0")


def test_fleet_simulate_and_status_cli(tmp_path: Any) -> None:
    import subprocess
    import sys

    site = tmp_path / "sim.toml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "fleet",
            "simulate",
            "--miners",
            "12",
            "--gpus",
            "3",
            "--base",
            "127.8.0.0",
            "--control-port",
            "0",
            "--duration",
            "60",
            "--write-site",
            str(site),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "simulating 12 LuxOS miners" in proc.stdout.readline()
        assert "wrote" in proc.stdout.readline()
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler.cli",
                "fleet",
                "status",
                "--config",
                str(site),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert len(doc["devices"]) == 15
        assert all(d["health"] == "ok" and d["power_w"] > 0 for d in doc["devices"])
        res = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "fleet", "status", "--config", str(site)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0 and "s19jpro" in res.stdout and "h100" in res.stdout
        control = next(
            line.split('"')[1] for line in site.read_text().splitlines() if "sim_control" in line
        )
        res = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "fleet", "fault", "refuse", "127.8.0.3",
             "--control", control],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        res = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "fleet", "status", "--config", str(site)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert res.returncode == 1  # a device is unreachable
        assert "127.8.0.3" in res.stdout and "unreachable" in res.stdout
    finally:
        proc.terminate()
        proc.wait(10)
