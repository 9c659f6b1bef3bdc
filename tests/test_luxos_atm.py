"""LuxOS's ATM (Advanced Thermal Management) in the simulator, and the adapter against it.

What the simulator does (sources in :mod:`adapters.sim.luxos_atm`): ATM moves the profile one
step at a time, down when the hottest board is within ``TempWindow`` of Hot, up when it is
cool, between ``min_profile`` and ``max_profile``, never sooner than ``PostRampMinutes``
after a ramp (``StartupMinutes`` after a boot); a ``profileset`` while ATM is on is refused
(the harsher of the two variants: Luxor's own tools and pyasic turn ATM off around it).

What the adapter does: it reads ATM's state at each profile change (an operator may turn it
on after the connect), turns it off around the ``profileset`` and back on with its ceiling
at the profile set, and owes the miner a re-enable it could not send; a read-back with ATM
on confirms the profile set, or one ATM stepped down to within its bounds, and nothing else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import DeviceUnreachable, ModeRequest
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.luxos import LuxosSim
from tests.support.daemon import free_loopback_base
from tests.support.simfleet import run, wait_listening


def ask(m: LuxosSim, command: str, parameter: str = "") -> dict[str, Any]:
    req: dict[str, Any] = {"command": command}
    if parameter:
        req["parameter"] = parameter
    return m.answer(json.dumps(req).encode())


def _sim(**kw: Any) -> tuple[LuxosSim, str, list[float]]:
    now = [0.0]
    m = LuxosSim("127.0.0.1", clock=lambda: now[0], retune_s=0.0, session_ttl_s=math.inf, **kw)
    sid = ask(m, "logon")["SESSION"][0]["SessionID"]
    return m, sid, now


def _names(m: LuxosSim) -> list[str]:
    return [p.name for p in m.presets]


# -- the simulator ---------------------------------------------------------------------------


def test_profileset_while_atm_is_on_is_refused_and_changes_nothing() -> None:
    m, sid, _ = _sim()
    assert ask(m, "atmset", f"{sid},enabled=true")["STATUS"][0]["STATUS"] == "S"
    reply = ask(m, "profileset", f"{sid},470MHz")
    assert reply["STATUS"][0]["STATUS"] == "E"
    assert "ATM" in reply["STATUS"][0]["Msg"]
    assert m.state.profile == "default"
    ask(m, "atmset", f"{sid},enabled=false")
    assert ask(m, "profileset", f"{sid},470MHz")["STATUS"][0]["STATUS"] == "S"


def test_profileset_while_atm_is_on_accepted_variant() -> None:
    m, sid, _ = _sim(atm_profileset="accept")
    ask(m, "atmset", f"{sid},enabled=true")
    assert ask(m, "profileset", f"{sid},470MHz")["PROFILE"][0]["Profile"] == "470MHz"
    assert m.state.profile == "470MHz"


def test_atm_steps_down_one_profile_per_post_ramp_when_hot_and_stops_at_its_floor() -> None:
    m, sid, now = _sim(ambient_c=80.0)  # boards well past Hot - TempWindow
    names = _names(m)
    floor = names[names.index("default") - 2]
    ask(m, "atmset", f"{sid},enabled=true,min_profile={floor},post_ramp_minutes=1")
    assert m.atm_post_ramp_s == 60.0
    now[0] = 30.0  # within the startup wait (StartupMinutes after the boot)
    assert ask(m, "config")["CONFIG"][0]["Profile"] == "default"
    now[0] = m.atm_startup_s + 1.0
    assert ask(m, "config")["CONFIG"][0]["Profile"] == names[names.index("default") - 1]
    now[0] += 30.0  # within PostRampMinutes of that step: no other
    assert ask(m, "config")["CONFIG"][0]["Profile"] == names[names.index("default") - 1]
    for _ in range(5):
        now[0] += 61.0
        ask(m, "config")
    assert m.state.profile == floor


def test_atm_steps_up_when_cool_no_higher_than_its_ceiling() -> None:
    m, sid, now = _sim(ambient_c=0.0)
    names = _names(m)
    low = names[names.index("default") - 3]
    ask(m, "profileset", f"{sid},{low}")
    ceiling = names[names.index("default") - 1]
    ask(m, "atmset", f"{sid},enabled=true,max_profile={ceiling},post_ramp_minutes=1")
    for _ in range(6):
        now[0] += 61.0
        ask(m, "config")
    assert m.state.profile == ceiling
    assert ask(m, "atm")["ATM"][0]["PostRampMinutes"] == 1


def test_atm_leaves_the_profile_alone_while_off_or_asleep() -> None:
    m, sid, now = _sim(ambient_c=80.0)
    ask(m, "atmset", f"{sid},post_ramp_minutes=1")
    now[0] = 10_000.0
    assert ask(m, "config")["CONFIG"][0]["Profile"] == "default"  # off
    ask(m, "curtail", f"{sid},sleep")
    ask(m, "atmset", f"{sid},enabled=true")
    now[0] = 20_000.0
    assert ask(m, "config")["CONFIG"][0]["Profile"] == "default"  # asleep


# -- the adapter ------------------------------------------------------------------------------


@pytest.fixture
def one() -> Iterator[tuple[SimFleetThread, LuxosSim]]:
    fleet = SimFleet.build(1, 0, base=free_loopback_base(1), control_port=None, retune_s=0.0)
    th = SimFleetThread(fleet)
    with th:
        m = fleet.miners[0]
        assert isinstance(m, LuxosSim)
        yield th, m


@pytest.mark.parametrize("variant", ["refuse", "accept"])
def test_atm_turned_on_after_the_connect_is_turned_off_around_the_change(
    one: tuple[SimFleetThread, LuxosSim], variant: str
) -> None:
    """An operator turns ATM on after the adapter connected (it read ATM off then): the
    profile change still turns it off around ``profileset`` (refused otherwise), turns it
    back on, and caps ATM's ceiling at the profile set, so that a cool miner is not
    stepped back up past the power the scheduler set."""
    th, m = one
    th.call(lambda: setattr(m, "atm_profileset", variant))
    th.call(lambda: setattr(m, "ambient_c", 0.0))  # cool: ATM would step up
    dev = PyasicMiner("atm/0", m.host, timeout_s=10.0)

    async def go() -> str:
        info = await dev.connect()
        assert not dev._atm
        th.call(lambda: setattr(m, "atm", True))
        th.call(lambda: setattr(m, "atm_post_ramp_s", 0.0))
        th.call(lambda: setattr(m, "atm_startup_s", 0.0))
        dev._sleeping = False
        low = info.power_targets_w[2]
        await dev.apply(ModeRequest("run", low))
        for _ in range(4):
            await dev.read()
        await dev.close()
        return dev._profiles[low]

    name = run(go())
    assert th.call(lambda: m.atm)
    assert th.call(lambda: m.atm_max) == name
    assert th.call(lambda: m.state.profile) == name


def _applied_with_atm(
    th: SimFleetThread, m: LuxosSim, start: int, to: int, before: Any = None
) -> tuple[Any, Any]:
    """Connect, set profile ``start`` (by its position among the targets), turn ATM on,
    run ``before`` in the simulator, apply profile ``to``; (the Applied, a reading after)."""
    dev = PyasicMiner("atm/1", m.host, timeout_s=10.0)

    async def go() -> tuple[Any, Any]:
        info = await dev.connect()
        dev._sleeping = False
        await dev.apply(ModeRequest("run", info.power_targets_w[start]))
        await dev.read()
        th.call(lambda: setattr(m, "atm", True))
        if before is not None:
            th.call(before)
        applied = await dev.apply(ModeRequest("run", info.power_targets_w[to]))
        t = await dev.read()
        confirmed = dev.confirms(applied, t)
        await dev.close()
        return applied, (t, confirmed)

    return run(go())


def test_a_profile_atm_stepped_down_from_ours_confirms(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """ATM may move the profile as soon as PostRampMinutes allow (0 here): a reading after
    our change shows a profile below ours, within ATM's bounds. That is the command done
    (ATM then does what it is there for); read as unconfirmed, the fleet would resend it,
    and ATM would move it again, for ever."""
    th, m = one

    def hot() -> None:
        m.hot_c, m.atm_post_ramp_s, m.atm_startup_s = 40.0, 0.0, 0.0  # boards past Hot

    applied, (t, confirmed) = _applied_with_atm(th, m, start=-1, to=10, before=hot)
    assert t.target_w < applied.target_w  # ATM stepped down already
    assert confirmed


def test_a_change_the_miner_did_not_make_does_not_confirm_with_atm_on(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """The profileset answered as done and not made (the simulator's IGNORE): the profile in
    force is the one before, above ours or below it; neither confirms."""
    th, m = one
    for start, to in ((-1, 10), (3, 10)):
        applied, (t, confirmed) = _applied_with_atm(
            th, m, start, to, before=lambda: m.inject("ignore")
        )
        th.call(m.clear_faults)
        th.call(lambda: setattr(m, "atm", False))
        assert t.target_w != applied.target_w
        assert not confirmed, (start, to, t.target_w)


def test_a_lost_re_enable_is_sent_by_the_upkeep_a_reading_asks_for(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """The re-enable after a profile change is lost (the miner not reached after it set the
    profile): ATM is left off, and reads off. The adapter owes it: the next reading asks for
    upkeep, which turns ATM back on (ceiling at the profile set) without waiting for another
    profile change, which may never come."""
    th, m = one
    th.call(lambda: setattr(m, "atm", True))
    profileset = m._cmd_profileset

    def then_gone(params: list[str]) -> dict[str, object]:
        answer = profileset(params)
        m.inject("refuse")  # this answer still goes out; the next connection is refused
        return answer

    dev = PyasicMiner("atm/2", m.host, timeout_s=10.0)

    async def go() -> str:
        info = await dev.connect()
        dev._sleeping = False
        low = info.power_targets_w[1]
        th.call(lambda: setattr(m, "_cmd_profileset", then_gone))
        with pytest.raises(DeviceUnreachable):
            await dev.apply(ModeRequest("run", low))
        th.call(lambda: setattr(m, "_cmd_profileset", profileset))
        th.call(m.clear_faults)
        wait_listening(th, 0)
        assert not th.call(lambda: m.atm)
        await dev.read()
        assert dev.upkeep_wanted
        await dev.upkeep()
        assert th.call(lambda: m.atm)
        await dev.read()
        assert not dev.upkeep_wanted  # nothing owed now
        await dev.close()
        return dev._profiles[low]

    name = run(go())
    assert th.call(lambda: m.atm_max) == name


def test_atm_waits_its_post_ramp_after_a_wake() -> None:
    m, sid, now = _sim(ambient_c=80.0)
    ask(m, "atmset", f"{sid},enabled=true,post_ramp_minutes=1")  # StartupMinutes: 15
    ask(m, "curtail", f"{sid},sleep")
    now[0] = 1_000.0
    ask(m, "curtail", f"{sid},wakeup")
    now[0] += m.wake_s + 1.0  # awake, mining, within PostRampMinutes of the wake
    assert ask(m, "config")["CONFIG"][0]["Profile"] == "default"
    now[0] += 60.0
    assert ask(m, "config")["CONFIG"][0]["Profile"] != "default"


def test_with_no_reading_before_the_change_only_the_profile_set_confirms(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """A change ignored by the firmware leaves the profile before it; ATM stepping down
    leaves a lower one. Without a reading from before the change the two cannot be told
    apart, so a lower profile is not taken as ATM's step (review, session 26: it was a
    false done)."""
    th, m = one
    dev = PyasicMiner("atm/2", m.host, timeout_s=10.0)

    async def go() -> tuple[Any, Any, bool]:
        info = await dev.connect()
        dev._sleeping = False
        await dev.apply(ModeRequest("run", info.power_targets_w[3]))  # no reading after
        assert dev._read_target_w is None
        th.call(lambda: setattr(m, "atm", True))
        th.call(lambda: m.inject("ignore"))
        applied = await dev.apply(ModeRequest("run", info.power_targets_w[10]))
        t = await dev.read()
        confirmed = dev.confirms(applied, t)
        await dev.close()
        return applied, t, confirmed

    applied, t, confirmed = run(go())
    th.call(m.clear_faults)
    assert t.target_w < applied.target_w  # the profile before, below ours
    assert not confirmed


def test_an_atm_state_that_cannot_be_read_is_left_alone(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """Walk 26, D4: an ``atm`` reply that could not be read was taken as ATM on, so the
    change turned ATM off and then *on* (with its ceiling) on a miner whose ATM was off,
    and on a build that refuses ``atmset`` every change would fail. pyasic's
    ``atm_enabled()`` answers None then and ``set_power_limit`` leaves ATM alone: so here."""
    th, m = one
    sent: list[str] = []
    atmset = m._cmd_atmset

    def unreadable(_: list[str]) -> dict[str, Any]:
        return {"STATUS": [{"STATUS": "E", "Code": 14, "Msg": "Invalid command"}], "id": 1}

    def counting(params: list[str]) -> dict[str, Any]:
        sent.append(",".join(params))
        return atmset(params)

    th.call(lambda: setattr(m, "_cmd_atm", unreadable))
    th.call(lambda: setattr(m, "_cmd_atmset", counting))
    dev = PyasicMiner("atm/3", m.host, timeout_s=10.0)

    async def go() -> None:
        info = await dev.connect()
        dev._sleeping = False
        await dev.apply(ModeRequest("run", info.power_targets_w[3]))
        await dev.close()

    run(go())
    assert sent == [] and not th.call(lambda: m.atm)


def test_a_profile_below_the_operators_atm_floor_lowers_the_floor_too(
    one: tuple[SimFleetThread, LuxosSim],
) -> None:
    """Walk 26, D5: with ATM's floor at ``default``, a change to a lower profile set the
    ceiling below the floor (MaxProfile 395MHz under MinProfile default): a band no
    firmware is documented to take. The floor follows the ceiling down."""
    th, m = one
    dev = PyasicMiner("atm/4", m.host, timeout_s=10.0)

    async def go() -> str:
        info = await dev.connect()
        th.call(lambda: setattr(m, "atm", True))
        th.call(lambda: setattr(m, "atm_min", "default"))
        dev._sleeping = False
        low = info.power_targets_w[2]
        await dev.apply(ModeRequest("run", low))
        await dev.close()
        return dev._profiles[low]

    name = run(go())
    assert th.call(lambda: m.atm) and th.call(lambda: m.atm_max) == name
    assert th.call(lambda: m.atm_min) == name
