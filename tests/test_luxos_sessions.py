"""LuxOS sessions as Luxor documents them: one session at a time, ended after about a
minute unused, and ``logon`` refused while one is active (Luxor's own client,
luxos-tooling ``asyncops.logon``: Code 402, "Another session is active"). The simulator
keeps those rules; the adapter works within them without a failed first attempt."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from adapters import luxos
from adapters.asic import PyasicMiner
from adapters.base import ControlRejected, ModeRequest
from adapters.fleet import Fleet, RetryPolicy
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.luxos import LuxosSim
from tests.support.simfleet import FAST, free_base, loopback_host


def ask(m: LuxosSim, command: str, param: str | None = None) -> dict[str, Any]:
    req = {"command": command} if param is None else {"command": command, "parameter": param}
    return m.answer(json.dumps(req).encode())


def status(reply: dict[str, Any]) -> tuple[str, int, str]:
    s = reply["STATUS"][0]
    return s["STATUS"], s["Code"], s["Msg"]


async def _sweep(fleet: Fleet) -> None:
    """A sweep and the session renewals its readings found due (run off its path)."""
    await fleet.read_all()
    await fleet.upkeep.idle()


def test_logon_is_refused_while_a_session_is_active() -> None:
    now = [0.0]
    m = LuxosSim("127.0.0.1", clock=lambda: now[0], session_ttl_s=60.0)
    first = ask(m, "logon")
    assert status(first)[0] == "S"
    sid = first["SESSION"][0]["SessionID"]
    again = ask(m, "logon")
    assert status(again) == ("E", 402, "Another session is active")
    assert "SESSION" not in again  # no id handed out: the session is its holder's
    assert ask(m, "session")["SESSION"][0]["SessionID"] == sid
    now[0] = 59.0
    assert status(ask(m, "curtail", f"{sid},sleep"))[0] == "S"  # a use refreshes it
    now[0] = 100.0  # 41 s after its last use: still active
    assert status(ask(m, "logon"))[1] == 402
    now[0] = 120.0  # 61 s unused: ended, a new one can start
    fresh = ask(m, "logon")
    assert status(fresh)[0] == "S" and fresh["SESSION"][0]["SessionID"] != sid
    assert status(ask(m, "curtail", f"{sid},wakeup"))[1] == 400  # the old id is dead
    new = fresh["SESSION"][0]["SessionID"]
    assert status(ask(m, "logoff", new))[0] == "S"
    assert status(ask(m, "logon"))[0] == "S"  # logoff frees the single session


async def _attempts(fleet: Fleet, dev: PyasicMiner, request: ModeRequest) -> int:
    out = await fleet.apply({dev.device_id: request})
    assert out[0].ok, out[0].error
    return out[0].attempts


def test_the_adapter_takes_over_a_session_another_client_left_idle() -> None:
    """Another client (a LuxOS tool, an earlier daemon) logged on and left its session idle
    for most of its minute. The adapter cannot log on beside it; adopting it as is would
    make the first command after that minute fail. It ends it and opens its own."""
    now = [0.0]
    host = loopback_host()
    m = LuxosSim(host, clock=lambda: now[0], session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go() -> None:  # one event loop for the fleet: its timers belong to it
        other = th.call(lambda: ask(m, "logon"))["SESSION"][0]["SessionID"]
        now[0] = 55.0
        dev = PyasicMiner("s/0", host, timeout_s=10.0, session_renew_s=math.inf)
        fleet = Fleet([dev], retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02))
        await fleet.connect_all()
        now[0] = 65.0  # the other client's session would have ended by now
        assert await _attempts(fleet, dev, ModeRequest("sleep")) == 1
        assert th.call(lambda: m.state.phase) == "sleeping"
        # Its own session lapsed and another client took the single session meanwhile:
        # renewal on the next reading adopts what is there instead of failing.
        now[0] = 200.0
        other = th.call(lambda: ask(m, "logon"))["SESSION"][0]["SessionID"]
        dev.session_renew_s = 0.0
        await _sweep(fleet)
        assert await _attempts(fleet, dev, ModeRequest("run")) == 1
        assert th.call(lambda: m.state.phase) in ("waking", "mining")
        # ... the one session there is: the other client's id still works.
        assert status(th.call(lambda: ask(m, "session")))[0] == "S"
        assert th.call(lambda: ask(m, "session"))["SESSION"][0]["SessionID"] == other
        await fleet.close()

    with th:
        asyncio.run(go())


def test_an_idle_luxos_session_is_renewed_on_a_reading_not_on_a_failed_command() -> None:
    """LuxOS ends a session unused for a minute (its docs, "Sessions"). Without renewal the
    first command after an idle spell is refused on its dead session, logs on and is sent
    again (within its attempt since session 19; before, a failed attempt): three requests.
    Renewed on the readings in between, it is one. The simulator runs on a clock of its
    own."""
    now = [0.0]
    host = loopback_host()
    m = LuxosSim(host, clock=lambda: now[0], session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def attempts(renew_s: float, request: ModeRequest) -> tuple[int, int]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0, session_renew_s=renew_s)
        fleet = Fleet([dev], retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02))
        await fleet.connect_all()  # logs on
        now[0] += 100.0  # idle past the session's minute
        await _sweep(fleet)
        now[0] += 50.0  # a reading renewed it (or did not): well inside a fresh minute
        dev._session_used = time.monotonic()  # the adapter believes it fresh either way
        before = th.call(lambda: m.commands_seen)
        out = await fleet.apply({dev.device_id: request})
        assert out[0].ok, out[0].error
        return out[0].attempts, th.call(lambda: m.commands_seen) - before

    with th:
        assert asyncio.run(attempts(math.inf, ModeRequest("sleep"))) == (1, 3)  # it bites
        now[0] += 10.0
        assert asyncio.run(attempts(0.0, ModeRequest("run"))) == (1, 1)


def test_a_fleet_connected_at_once_renews_a_share_of_its_sessions_per_sweep() -> None:
    """7,500 LuxOS miners logged on in the same instant (the example site at start-up),
    read every 5 s for three minutes: each sweep renews about 5 / 30 of the sessions, never
    all of them, and no session goes unrenewed past 30 s plus one sweep (LuxOS ends one
    unused for a minute)."""
    renew_s, sweep_s, n = 30.0, 5.0, 7500
    ids = [f"lux/10.0.{k // 250}.{k % 250}" for k in range(n)]
    used = dict.fromkeys(ids, 1000.0)
    per_sweep: list[int] = []
    longest_s = 0.0
    now = 1000.0
    while now < 1180.0:
        now += sweep_s
        due = [i for i in ids if luxos.renewal_due(i, used[i], now, renew_s)]
        for i in due:
            longest_s = max(longest_s, now - used[i])
            used[i] = now
        per_sweep.append(len(due))
    assert max(per_sweep) <= 1.3 * n * sweep_s / renew_s, per_sweep[:12]
    assert longest_s <= renew_s + sweep_s
    assert all(now - u <= renew_s + sweep_s for u in used.values())


def test_a_sweep_renews_only_the_sessions_whose_turn_has_come() -> None:
    """Two dozen miners whose sessions were all opened 15 s ago, with renewal every 30 s:
    one sweep renews those whose turn fell in these 15 s (about half), not all or none, and
    the next sweep none of those again."""
    n = 24
    base = free_base(n)
    hosts = [base.rsplit(".", 1)[0] + f".{k}" for k in range(1, n + 1)]
    sims = [LuxosSim(h, session_ttl_s=60.0, **FAST) for h in hosts]
    th = SimFleetThread(SimFleet(sims, control_port=None))

    async def go() -> tuple[int, list[str]]:
        devs = [PyasicMiner(f"s/{h}", h, timeout_s=10.0, session_renew_s=30.0) for h in hosts]
        fleet = Fleet(devs)
        assert not any((await fleet.connect_all()).values())
        for d in devs:
            d._session_used = time.monotonic() - 15.0
        before = {d.device_id: d._miner.rpc.session_token for d in devs}
        await _sweep(fleet)
        renewed = [d for d in devs if d._miner.rpc.session_token != before[d.device_id]]
        again = {d.device_id: d._miner.rpc.session_token for d in renewed}
        await _sweep(fleet)
        twice = [d.device_id for d in renewed if d._miner.rpc.session_token != again[d.device_id]]
        await fleet.close()
        return len(renewed), twice

    with th:
        renewed, twice = asyncio.run(go())
    assert 0 < renewed < n
    assert twice == []


def test_a_command_logs_on_first_when_its_session_has_gone_stale_unrenewed() -> None:
    """Readings too far apart to keep a session alive (a sweep longer than the session's
    minute) do not renew it; the command that finds it idle past SESSION_SAFE_S logs on
    first: one more round trip, no failed attempt. Whether LuxOS has ended it yet or not
    (a logon beside a live one is refused, and the live one is adopted)."""
    now = [0.0]
    host = loopback_host()
    m = LuxosSim(host, clock=lambda: now[0], session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go(idle_s: float, request: ModeRequest) -> tuple[int, int]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0)
        fleet = Fleet([dev], retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02))
        await fleet.connect_all()  # logs on
        sid = dev._miner.rpc.session_token
        now[0] += idle_s
        dev._session_used -= idle_s  # the adapter's clock agrees
        out = await fleet.apply({dev.device_id: request})
        assert out[0].ok, out[0].error
        assert dev._miner.rpc.session_token != sid or idle_s < 60.0
        await fleet.close()
        return out[0].attempts, th.call(lambda: m.commands_seen)

    with th:
        assert asyncio.run(go(100.0, ModeRequest("sleep")))[0] == 1  # LuxOS ended it
        now[0] += 100.0
        assert asyncio.run(go(50.0, ModeRequest("run")))[0] == 1  # still alive: adopted


def test_a_reading_does_not_renew_a_session_it_cannot_carry_to_the_next_reading() -> None:
    """Readings SESSION_SAFE_S or more apart: a session renewed in one would be ended
    before the next (a sweep that long renewed every session it read, three round trips
    per reading, and the renewals kept the sweep long). Closer together, a due session is
    renewed as before."""
    host = loopback_host()
    m = LuxosSim(host, session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go() -> tuple[bool, bool]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0, session_renew_s=0.0)
        await dev.connect()
        await _read(dev)
        sid = dev._miner.rpc.session_token
        dev._read_mono -= luxos.SESSION_SAFE_S + 1.0  # the last reading, that long ago
        await _read(dev)
        far = dev._miner.rpc.session_token != sid
        sid = dev._miner.rpc.session_token
        await _read(dev)  # a moment after the last: renewed (renew_s 0: every reading)
        near = dev._miner.rpc.session_token != sid
        await dev.close()
        return far, near

    with th:
        far, near = asyncio.run(go())
    assert (far, near) == (False, True)


async def _read(dev: PyasicMiner) -> None:
    """A reading and the upkeep it found due, as the fleet runs it after the reading."""
    await dev.read()
    if dev.upkeep_wanted:
        await dev.upkeep()


def test_a_reading_with_its_session_due_leaves_the_renewal_to_upkeep() -> None:
    """A renewal is a logoff and a logon, two round trips after the reading's one; made
    inside the reading, it held the fleet's sweep until it was done (half the example
    site's 7,500 miners renew in each 15 s sweep). The reading asks for it; ``upkeep``
    makes it (the fleet runs it off the sweep's path), unless a command has used the
    session since the reading asked."""
    host = loopback_host()
    m = LuxosSim(host, session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go() -> tuple[bool, bool, bool, bool]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0, session_renew_s=0.0)
        await dev.connect()
        await dev.read()  # the first reading: its gap unknown, nothing due
        sid = dev._miner.rpc.session_token
        await dev.read()  # due (renew_s 0: every reading a moment after the last)
        asked, untouched = dev.upkeep_wanted, dev._miner.rpc.session_token == sid
        await dev.upkeep()
        renewed = dev._miner.rpc.session_token != sid and not dev.upkeep_wanted
        await dev.read()  # due again; then a command uses the session first
        sid = dev._miner.rpc.session_token
        await dev.apply(ModeRequest("sleep"))
        await dev.upkeep()
        kept = dev._miner.rpc.session_token == sid
        await dev.close()
        return asked, untouched, renewed, kept

    with th:
        assert asyncio.run(go()) == (True, True, True, True)


def test_a_renewal_the_miner_does_not_answer_is_a_failure_and_the_next_command_logs_on() -> None:
    """Before, a failed renewal returned as if done: the fleet could not count it. Now
    ``upkeep`` raises the fault (the fleet counts and logs it), the session is dropped, and
    the next command logs on first and goes through."""
    from adapters.base import AdapterError
    from adapters.sim.server import FaultKind

    host = loopback_host()
    m = LuxosSim(host, session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go() -> tuple[bool, bool, str]:
        dev = PyasicMiner("s/0", m.host, timeout_s=1.0, session_renew_s=0.0)
        await dev.connect()
        await dev.read()
        await dev.read()  # due
        assert dev.upkeep_wanted
        th.call(lambda: m.inject(FaultKind.REFUSE, 0.5))
        try:
            await dev.upkeep()
            raised = False
        except AdapterError:
            raised = True
        dropped = dev._miner.rpc.session_token is None
        await asyncio.sleep(0.6)  # the miner answers again
        applied = await dev.apply(ModeRequest("sleep"))
        await dev.close()
        return raised, dropped, applied.request.action

    with th:
        assert asyncio.run(go()) == (True, True, "sleep")


def test_a_command_sent_while_a_reading_renews_the_session_uses_the_new_one() -> None:
    """A reading renews the session (a logoff, then a logon) while the fast path's curtail
    goes out to the same miner. Before, nothing kept them apart: the curtail could carry the
    session the logoff had just ended and come back "Invalid session id" (10 of 179 sleeps
    in a run of docs/operations.md's walk), a failed first attempt."""
    host = loopback_host()
    m = LuxosSim(host, session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def race(rounds: int) -> list[str]:
        dev = PyasicMiner("s/0", host, timeout_s=10.0, session_renew_s=math.inf)
        await Fleet([dev]).connect_all()  # logs on
        rpc = dev._need().rpc
        failed: list[str] = []
        for i in range(rounds):
            renewal = asyncio.create_task(luxos.renew_session("s/0", rpc, 10.0))
            await asyncio.sleep(0)  # the renewal's logoff is on its way
            try:
                await luxos.curtail("s/0", rpc, "sleep" if i % 2 else "wakeup", 10.0)
            except ControlRejected as exc:
                failed.append(str(exc))
            await renewal
        return failed

    with th:
        assert asyncio.run(race(20)) == []


def test_on_demand_sessions_are_held_only_for_the_commands_that_need_them() -> None:
    """``[devices.adapter] luxos_sessions = "on-demand"``: Luxor's advice (docs.luxor.tech,
    "Sessions": create a session when you need it, then let the next actor have it). No
    logon at connect, no renewal on readings; a command logs on, and LuxOS ends the session
    a minute after the last use, leaving it free for another client. A command after that
    logs on again, with no failed attempt."""
    now = [0.0]
    host = loopback_host()
    m = LuxosSim(host, clock=lambda: now[0], session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    def held() -> str:
        return str(th.call(lambda: ask(m, "session"))["SESSION"][0]["SessionID"])

    async def go() -> tuple[str, bool, str, str, int]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0, session_renew_s=0.0)
        dev.keep_session = False
        fleet = Fleet([dev], retry=RetryPolicy(attempts=1))
        await fleet.connect_all()
        at_connect = held()
        asked = False
        for _ in range(3):  # renew_s 0 would ask on every reading, were sessions kept
            await _sweep(fleet)
            asked = asked or dev.upkeep_wanted
        assert await _attempts(fleet, dev, ModeRequest("sleep")) == 1
        after_command = held()
        now[0] += 61.0  # a minute unused: LuxOS ends it, nobody renewing it
        dev._session_used -= 61.0  # the adapter's clock agrees
        freed = held()
        woke = await _attempts(fleet, dev, ModeRequest("run"))
        await fleet.close()
        return at_connect, asked, after_command, freed, woke

    with th:
        at_connect, asked, after_command, freed, woke = asyncio.run(go())
    assert at_connect == "" and not asked
    assert after_command != ""  # held while it is in use
    assert freed == ""  # and left to LuxOS to end: another client may log on
    assert woke == 1


def test_the_site_file_chooses_kept_or_on_demand_luxos_sessions() -> None:
    from adapters import registry
    from models.site import parse_site
    from tests.conftest import site_dict

    for value, keep in ((None, True), ("kept", True), ("on-demand", False)):
        d = site_dict()
        adapter: dict[str, object] = {"kind": "pyasic", "hosts": ["10.0.0.1-10.0.0.10"]}
        if value is not None:
            adapter["luxos_sessions"] = value
        d["devices"][0]["adapter"] = adapter
        built = registry.build(parse_site(d, "x.toml"))
        assert {getattr(a, "keep_session", "?") for a in built.adapters} == {keep}
    # the simulated miners of the demo site honour it too (kind = "sim")
    d = site_dict()
    d["devices"][0]["adapter"] = {"kind": "sim", "luxos_sessions": "on-demand"}
    built = registry.build(parse_site(d, "x.toml"))
    assert {getattr(a, "keep_session", "?") for a in built.adapters} == {False}


def test_luxos_sessions_on_a_kind_that_cannot_honour_it_is_refused_by_name() -> None:
    from models.errors import ConfigError
    from models.site import parse_site
    from tests.conftest import site_dict

    d = site_dict()
    d["devices"][0]["kind"] = "gpu"
    d["devices"][0]["adapter"] = {"kind": "nvml", "luxos_sessions": "on-demand"}
    try:
        parse_site(d, "x.toml")
    except ConfigError as exc:
        said = str(exc)
    else:
        raise AssertionError("accepted")
    assert "luxos_sessions" in said and "'pyasic'" in said and "'nvml'" in said


def test_a_session_that_ends_under_a_command_is_logged_on_again_within_the_attempt() -> None:
    """On demand, a command that finds another client's session active adopts it (LuxOS
    refuses a second logon); when that client logs off as Luxor advises, the next command
    carried the dead id and failed once ("Invalid session id") before its retry went
    through. A refusal that names the session is now sent again after a new logon, in the
    same attempt: the miner did nothing on the refused one."""
    now = [0.0]
    host = loopback_host()
    m = LuxosSim(host, clock=lambda: now[0], session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))

    async def go() -> tuple[int, int, str]:
        dev = PyasicMiner("s/0", m.host, timeout_s=10.0)
        dev.keep_session = False
        fleet = Fleet([dev], retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02))
        await fleet.connect_all()
        other = th.call(lambda: ask(m, "logon"))["SESSION"][0]["SessionID"]
        slept = await _attempts(fleet, dev, ModeRequest("sleep"))  # adopts the other's
        adopted = str(dev._miner.rpc.session_token)
        assert adopted == other
        assert status(th.call(lambda: ask(m, "logoff", other)))[0] == "S"  # done, it leaves
        now[0] += 5.0
        dev._session_used -= 5.0
        woke = await _attempts(fleet, dev, ModeRequest("run"))
        phase = th.call(lambda: m.state.phase)
        await fleet.close()
        return slept, woke, phase

    with th:
        slept, woke, phase = asyncio.run(go())
    assert (slept, woke) == (1, 1)
    assert phase in ("waking", "mining")


def test_a_simulated_fleets_luxos_sessions_expire_as_luxos_says() -> None:
    """Every LuxOS miner of ``gridsched fleet simulate`` (and ``make demo``) kept its
    session for ever: kinder than LuxOS, whose sessions end after a minute unused (the
    firmware audit of session 25, D10). The simulator's default is now the firmware's;
    ``session`` answers as Luxor's docs show it (Code 319, "Session information")."""
    from adapters.sim.fleet import MinerSpec, SimFleet

    fleet = SimFleet.from_specs([MinerSpec("127.0.0.1", "luxos", "S19j Pro")], control_port=None)
    (m,) = fleet.miners
    assert isinstance(m, LuxosSim)
    now = [0.0]
    m.clock = lambda: now[0]
    sid = ask(m, "logon")["SESSION"][0]["SessionID"]
    reply = ask(m, "session")
    assert status(reply)[1:] == (319, "Session information")
    assert reply["SESSION"][0]["SessionID"] == sid
    now[0] = 61.0
    assert ask(m, "session")["SESSION"][0]["SessionID"] == ""
    assert status(ask(m, "curtail", f"{sid},sleep"))[1] == 400
