"""The LuxOS simulator speaks what pyasic speaks, and the pyasic adapter drives it: discovery,
the miner's dynamics, sleep and wake with profiles staged ahead, the payload parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from adapters.asic import PyasicMiner, choose_preset, parse_luxos
from adapters.base import BadReply, ControlRejected, DeviceUnreachable, ModeRequest
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.luxos import LuxosSim
from tests.support.daemon import free_loopback_base
from tests.support.simfleet import (
    clean,
    loopback_host,
    miner_host,
    run,
    sim_fleet,
    wait_listening,
)
from tests.support.wait import until


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from sim_fleet()


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    clean(sim)


async def _reads(dev: PyasicMiner, state: str) -> bool:
    return (await dev.read()).state == state


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

        async def asleep() -> bool:
            w = (await m.get_data()).wattage
            return w is not None and w < 60

        await until(asleep, what="the miner's wattage below 60 W after stop_mining")
        assert await m.resume_mining() is True
        assert await m.set_power_limit(2600) is True  # LuxOS: highest preset <= 2600 W

    run(go())
    # 470MHz: 2514 W, the highest at or below 2600 W
    assert sim.call(lambda: sim.fleet.miners[0].state.profile) == "470MHz"
    s21 = run(_discover(miner_host(sim, 4)))
    assert "S21" in s21


async def _discover(host: str) -> str:
    import pyasic

    m = await pyasic.get_miner(host)
    return str(m.model)


def test_simulated_miner_dynamics(sim: SimFleetThread) -> None:
    t = [0.0]
    m = LuxosSim("127.0.0.1", clock=lambda: t[0], sleep_s=5.0, wake_s=12.0)
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


def test_a_reading_during_the_sleep_ramp_does_not_make_the_next_wake_a_no_op() -> None:
    """Right after a sleep command a LuxOS miner still hashes (it ramps down for seconds) and
    reads as running. If the adapter believed that, the next wake would skip its resume
    and report success while the miner stays asleep."""
    fleet = SimFleet.build(
        1, 0, base=free_loopback_base(1), sleep_s=30.0, wake_s=0.3, control_port=None
    )
    th = SimFleetThread(fleet)
    with th:
        dev = PyasicMiner("r/0", fleet.miners[0].host, timeout_s=10.0)

        async def go() -> None:
            await dev.connect()
            await dev.apply(ModeRequest("sleep"))
            assert (await dev.read()).state == "running"  # ramping down: 3 s above 90 %
            await dev.apply(ModeRequest("run"))
            # A wake that was skipped leaves it ramping down to sleep: never mining (the
            # simulator advances its phase when its power is computed, as a read does).
            m = fleet.miners[0]
            mining = lambda: th.call(lambda: (m.power_and_hashrate(), m.state.phase)[1] == "mining")  # noqa: E731
            await until(mining, what="the miner mining after the wake")
            assert (await dev.read()).state == "running"

        run(go())


def test_a_sleeping_luxos_miner_takes_its_next_profile_ahead_and_wakes_in_one_round_trip() -> None:
    fleet = SimFleet.build(
        1, 0, base=free_loopback_base(1), sleep_s=0.2, wake_s=0.3, control_port=None
    )
    th = SimFleetThread(fleet)
    with th:
        sim = fleet.miners[0]
        dev = PyasicMiner("s/0", sim.host, timeout_s=10.0)
        seen = lambda: th.call(lambda: (sim.commands_seen, sim.state.phase, sim.state.profile))  # noqa: E731

        async def go() -> None:
            info = await dev.connect()
            low, high = info.power_targets_w[0], info.power_targets_w[-1]
            assert (await dev.read()).state == "running"
            assert await dev.stage(ModeRequest("run", low)) is None  # awake: nothing ahead
            await dev.apply(ModeRequest("sleep"))
            assert await dev.stage(ModeRequest("run", low)) is None  # not yet read asleep
            await until(lambda: _reads(dev, "sleeping"), what="read asleep")
            staged = await dev.stage(ModeRequest("run", low + 10.0))
            assert staged is not None and staged.target_w == low and "presets only" in staged.note
            n, phase, profile = seen()
            assert phase == "sleeping" and profile == dev._profiles[low]  # still asleep
            assert await dev.stage(ModeRequest("run", low)) is None  # already in place
            assert (await dev.read()).target_w == low
            n = seen()[0]
            await dev.apply(ModeRequest("run", low))
            assert seen()[0] == n + 1  # the wake alone
            await until(lambda: _reads(dev, "running"), what="read running after the wake")
            t = await dev.read()
            assert t.state == "running" and t.target_w == low
            # Woken: staging leaves it alone, even if a reading caught it still booting.
            assert await dev.stage(ModeRequest("run", high)) is None
            # A wake at a target not staged still sets it first: profile, then the wake.
            await dev.apply(ModeRequest("sleep"))
            await until(lambda: _reads(dev, "sleeping"), what="read asleep")
            n = seen()[0]
            await dev.apply(ModeRequest("run", high))
            assert seen()[0] == n + 3  # ATM's state (read at each change), profile, wake
            await dev.close()

        run(go())
        assert dev.info is not None
        assert th.call(lambda: sim.state.profile) == dev._profiles[dev.info.power_targets_w[-1]]


def test_nothing_listening_is_unreachable() -> None:
    host = loopback_host()  # its port free: nothing listens there
    dev = PyasicMiner("x/dead", host, timeout_s=10.0)
    with pytest.raises(DeviceUnreachable, match=re.escape(host)):
        run(dev.connect())


def test_luxos_payload_errors_name_what_is_wrong() -> None:
    good = LuxosSim("127.0.0.1").answer(b'{"command": "power+summary+stats+config+profiles"}')
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


@pytest.mark.parametrize("logged_on", [True, False], ids=["session", "no-session"])
def test_a_luxos_command_that_cannot_connect_is_unreachable_not_refused_or_done(
    logged_on: bool,
) -> None:
    """pyasic's RPC answers a connection it could not open with ``{}``: with a session,
    ``stop_mining`` then returns True (nothing was sent); without one, its ``auth`` raises
    KeyError on that ``{}`` and ``stop_mining`` returns False, which read as a refusal. Both
    are a miner not reached: retryable, and the miner's state unknown. The same for a
    profile change (pyasic's ``profileset``: no ``PROFILE`` in ``{}``, read as unconfirmed)."""
    fleet = SimFleet.build(1, 0, base=free_loopback_base(1), control_port=None)
    th = SimFleetThread(fleet)
    with th:
        m = fleet.miners[0]
        dev = PyasicMiner("u/0", m.host, timeout_s=10.0)

        async def go() -> None:
            await dev.connect()
            if not logged_on:
                dev._miner.rpc.session_token = None
            th.call(lambda: m.inject("refuse"))
            assert dev.info is not None
            low = dev.info.power_targets_w[0]  # a profile change first, then the wake
            for request in (ModeRequest("sleep"), ModeRequest("run"), ModeRequest("run", low)):
                dev._sleeping = None  # so that the wake is sent too
                with pytest.raises(DeviceUnreachable):
                    await dev.apply(request)
            await dev.close()

        run(go())
        assert th.call(lambda: m.state.phase) == "mining"


def test_a_luxos_power_target_matching_no_profile_that_cannot_connect_is_unreachable() -> None:
    """A target matching no profile the adapter knows (here: LuxOS listed none at connect)
    went through pyasic's ``set_power_limit``, whose config read and ``profileset`` answer
    a connection not opened with ``{}``: read as a refusal, or swallowed. It is a miner not
    reached; and once reachable, a target with no profile at or below it is a refusal that
    names the profiles, after reading them again (as pyasic does before choosing one)."""
    fleet = SimFleet.build(1, 0, base=free_loopback_base(1), control_port=None)
    th = SimFleetThread(fleet)
    with th:
        m = fleet.miners[0]
        presets = m.presets
        th.call(lambda: setattr(m, "presets", ()))  # PROFILES lists none at connect
        dev = PyasicMiner("u/1", m.host, timeout_s=10.0)

        async def go() -> None:
            info = await dev.connect()
            assert info.power_targets_w == ()
            th.call(lambda: m.inject("refuse"))
            with pytest.raises(DeviceUnreachable):
                await dev.apply(ModeRequest("run", 2600.0))
            th.call(m.clear_faults)
            wait_listening(th, 0)
            with pytest.raises(ControlRejected, match="no profile at or below 2600 W"):
                await dev.apply(ModeRequest("run", 2600.0))
            th.call(lambda: setattr(m, "presets", presets))  # listed again: pyasic's choice
            applied = await dev.apply(ModeRequest("run", 2600.0))
            assert applied.target_w == want.watts and "profiles only" in applied.note
            await dev.close()

        want = max((p for p in presets if p.watts <= 2600), key=lambda p: p.watts)
        run(go())
        assert th.call(lambda: m.state.profile) == want.name


def test_a_profile_change_whose_atm_re_enable_cannot_connect_is_unreachable_not_done() -> None:
    """With ATM on, a profile change is ``atmset enabled=false``, ``profileset``, ``atmset
    enabled=true`` (as pyasic's ``set_power_limit`` does). pyasic's ``atmset`` answers a
    connection not opened with ``{}``: the miner lost after the profile was set read as done,
    its ATM left off. It is a miner not reached, and the next apply sends it all again."""
    fleet = SimFleet.build(1, 0, base=free_loopback_base(1), control_port=None)
    th = SimFleetThread(fleet)
    with th:
        m = fleet.miners[0]
        assert isinstance(m, LuxosSim)
        th.call(lambda: setattr(m, "atm", True))
        profileset = m._cmd_profileset

        def then_gone(params: list[str]) -> dict[str, object]:
            answer = profileset(params)
            m.inject("refuse")  # this answer still goes out; the next connection is refused
            return answer

        dev = PyasicMiner("u/2", m.host, timeout_s=10.0)

        async def go() -> None:
            info = await dev.connect()
            assert dev._atm
            low = info.power_targets_w[0]
            dev._sleeping = False  # awake: the profile change alone
            th.call(lambda: setattr(m, "_cmd_profileset", then_gone))
            with pytest.raises(DeviceUnreachable):
                await dev.apply(ModeRequest("run", low))
            assert not th.call(lambda: m.atm)  # left off by the lost re-enable
            th.call(lambda: setattr(m, "_cmd_profileset", profileset))
            th.call(m.clear_faults)
            wait_listening(th, 0)
            await dev.apply(ModeRequest("run", low))  # sent again, ATM back on
            await dev.close()

        run(go())
        assert th.call(lambda: m.atm)


def test_a_luxos_reconnect_that_cannot_connect_is_unreachable_not_unreadable() -> None:
    """A reconnect reuses the miner discovery found, so its first call is the profiles read:
    pyasic's ``profiles`` answers a connection not opened with ``{}``, read as a reply with
    no PROFILES (unreadable). It is a miner not reached."""
    fleet = SimFleet.build(1, 0, base=free_loopback_base(1), control_port=None)
    th = SimFleetThread(fleet)
    with th:
        m = fleet.miners[0]
        dev = PyasicMiner("u/3", m.host, timeout_s=10.0)

        async def go() -> None:
            await dev.connect()
            await dev.close()
            th.call(lambda: m.inject("refuse"))
            with pytest.raises(DeviceUnreachable, match="profiles"):
                await dev.connect()

        run(go())
