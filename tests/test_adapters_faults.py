"""Faults on simulated miners: nothing crashes, the faulty device is marked with what is
wrong, the rest of the fleet is spared, and the device is retried and recovers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.asic import PyasicMiner
from adapters.base import Health, ModeRequest
from adapters.fleet import Fleet, Outcome, RetryPolicy
from adapters.sim.fleet import SimFleetThread
from adapters.sim.server import FaultKind
from tests.support.simfleet import clean, miner_host, run, sim_fleet, wait_listening


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from sim_fleet()


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    clean(sim)


#: A faulty device's timeout, set only while its fault is on (``_short``): a hang is seen
#: in seconds, while healthy devices keep HEALTHY_S, enough on a loaded 2-core host.
HUNG_S = 1.0
HEALTHY_S = 10.0


def _fleet(sim: SimFleetThread, n: int = 4, timeout_s: float = HEALTHY_S) -> Fleet:
    devs = [PyasicMiner(f"f/{i}", miner_host(sim, 4 + i), timeout_s=timeout_s) for i in range(n)]
    return Fleet(devs, retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.02), unreachable_after=2)


def _inject(
    sim: SimFleetThread, i: int, kind: FaultKind, duration_s: float = 60.0, delay_s: float = 2.0
) -> None:
    sim.call(lambda: sim.fleet.miners[4 + i].inject(kind, duration_s, delay_s))


def _short(fleet: Fleet, device_id: str, timeout_s: float = HUNG_S) -> None:
    """Give one device its own timeout (HUNG_S while it hangs, HEALTHY_S once cleared)."""
    fleet.by_id[device_id].timeout_s = timeout_s  # type: ignore[attr-defined]


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
        _short(fleet, "f/0")
        _inject(sim, 0, kind)
        readings = await fleet.read_all()
        assert set(readings) == {"f/1", "f/2", "f/3"}
        st = fleet.status["f/0"]
        # It answers something that cannot be parsed: unreadable, not unreachable.
        want = Health.UNREADABLE if kind is FaultKind.MALFORMED else Health.UNREACHABLE
        assert st.health is want and st.last_error
        expected = {
            FaultKind.REFUSE: "Unreachable|connection refused|empty reply",
            FaultKind.DROPOUT: "Unreachable|connection refused|connection was reset|empty reply",
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
        _short(fleet, "f/0", HEALTHY_S)
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
        assert all(v is not None for v in (await fleet.confirm(out, 15.0, 0.05)).values())
        dev = fleet.by_id["f/0"]
        assert dev.info is not None
        current = sim.call(lambda: miner.state.profile)
        target = next(
            w
            for w in dev.info.power_targets_w
            if sim.call(lambda: miner.preset(current).watts) != w
        )
        _short(fleet, "f/0")
        _inject(sim, 0, FaultKind.HANG)
        staged = await fleet.stage({i: ModeRequest("run", target) for i in fleet.by_id})
        by_id = {o.device_id: o for o in staged}
        assert by_id["f/1"].ok and not by_id["f/0"].ok
        assert "no answer within" in str(by_id["f/0"].error)
        assert fleet.status["f/0"].health is Health.DEGRADED
        _clear(sim, 0)
        _short(fleet, "f/0", HEALTHY_S)
        out = await fleet.apply({"f/0": ModeRequest("run", target)})
        assert out[0].ok, out[0].error
        phase, profile = sim.call(lambda: (miner.state.phase, miner.state.profile))
        assert phase in ("waking", "mining") and miner.preset(profile).watts == target

    run(go())


def test_slow_replies_still_succeed(sim: SimFleetThread) -> None:
    fleet = _fleet(sim, n=2)

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
        assert sorted(o.device_id for o in seen) == ["f/0", "f/1"]  # one outcome each
        failed = next(o for o in out if o.device_id == "f/0")
        assert not failed.ok and failed.error and failed.attempts == 2
        wait_listening(sim, 4)
        # The reboot ended the LuxOS session: the adapter logs on again and the command lands.
        out = await fleet.apply({"f/0": ModeRequest("sleep")})
        assert out[0].ok, out[0].error
        confirmed = await fleet.confirm(out, timeout_s=15.0, poll_s=0.05)
        assert confirmed["f/0"] is not None
        assert fleet.status["f/0"].health is Health.OK
        await fleet.apply({i: ModeRequest("run") for i in fleet.by_id})

    run(go())
