"""A stock-firmware Antminer through the real pyasic adapter, over TCP and HTTP digest.

The simulator (adapters/sim/antminer.py) serves what pyasic reads and writes for stock
Bitmain firmware: the cgminer API on 4028 and the web CGI on 80, each miner on its own
loopback address. Binding port 80 needs root or CAP_NET_BIND_SERVICE: without it the
module is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapters import antminer
from adapters.asic import PyasicMiner
from adapters.base import Health, ModeRequest, Telemetry
from adapters.fleet import Fleet, Outcome, OutcomeKind
from adapters.sim.antminer import AntminerSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from tests.support.simfleet import (
    FAST,
    loopback_host,
    miner_of,
    one_device_fleet,
    reset_each,
    run,
    skip_without_port_80,
    web_fleet,
)

#: A stock Antminer listens on both: the cgminer API and the web CGI.
PORTS = (4028, 80)


pytestmark = skip_without_port_80()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from web_fleet(8, "antminer")


def _miner(sim: SimFleetThread, i: int) -> AntminerSim:
    return miner_of(sim, i, AntminerSim)


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    reset_each(sim, AntminerSim, _reset)


def _reset(m: AntminerSim) -> None:
    m.clear_faults()
    m._set_work_mode(0)
    m.conf_answer_s = 0.0
    m.web_clock = time.time
    # the counters the tests assert on whole, so no test sees another's writes
    m.conf_writes.clear()
    m.stale_answers = 0


async def _until(cond: Any, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
    async with asyncio.timeout(timeout_s):
        while not await cond():
            await asyncio.sleep(poll_s)


def test_a_stock_antminer_is_read_with_its_identity(sim: SimFleetThread) -> None:
    """pyasic 0.79 has DataOptions in pyasic.miners.data: a stock miner was unreadable."""
    dev = PyasicMiner("am/0", _miner(sim, 0).host, timeout_s=10.0)

    async def go() -> Telemetry:
        info = await dev.connect()
        assert info.make == "AntMiner" and "S19j Pro" in info.model
        assert info.firmware == "Stock" and info.family == "antminer-stock"
        assert info.firmware_version == "Thu Dec 14 17:31:57 CST 2023"
        assert info.power_targets_w == () and info.min_power_w is None
        return await dev.read()

    t = run(go())
    assert t.state == "running" and t.hashrate_ths is not None and t.hashrate_ths > 80
    assert t.power_w is None  # stock firmware reports no power through pyasic
    assert t.temperatures_c and t.temperatures_c[0] > 40


def test_a_stock_miner_sleeps_and_wakes_without_a_power_target(sim: SimFleetThread) -> None:
    """Stock firmware has no power target: a wake asked at a target must still be sent."""
    m = _miner(sim, 1)
    dev = PyasicMiner("am/1", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        fleet = Fleet([dev])
        fleet.status[dev.device_id].connected = True
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED, out[0].error
        done = await fleet.confirm(out, timeout_s=10.0, poll_s=0.05)
        assert done[dev.device_id] is not None
        assert (await dev.read()).state == "sleeping"
        out = await fleet.apply({dev.device_id: ModeRequest("run", 3000.0)})
        assert out[0].ok, out[0].error
        applied = out[0].applied
        assert applied is not None and applied.target_w is None
        assert "no power target" in applied.note
        done = await fleet.confirm(out, timeout_s=10.0, poll_s=0.05)
        assert done[dev.device_id] is not None
        assert (await dev.read()).state == "running"

    run(go())
    assert sim.call(lambda: m.work_mode) == 0
    # pyasic rebuilt the configuration it wrote from the one it read: pools kept.
    assert sim.call(lambda: list(m.conf_writes)) == [1, 0]


def test_accepted_but_ignored_is_unconfirmed_and_the_next_dispatch_resends(
    sim: SimFleetThread, caplog: pytest.LogCaptureFixture
) -> None:
    """stop_mining() returns True whatever the miner does: only a read-back says done."""
    m = _miner(sim, 2)
    sim.call(m.inject, FaultKind.IGNORE)
    dev = PyasicMiner("am/2", m.host, timeout_s=10.0, confirm_within_s=0.8)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED
        assert dev.device_id in fleet.pending

        async def settled() -> bool:
            await fleet.read_all()
            return dev.device_id not in fleet.pending

        await _until(settled)
        last = seen[-1]
        assert last.kind is OutcomeKind.UNCONFIRMED and not last.ok
        assert "did not show sleep" in (last.error or "")
        st = fleet.status[dev.device_id]
        assert st.health is Health.UNCONFIRMED
        assert fleet.unconfirmed_requests() == {dev.device_id: ModeRequest("sleep")}
        # The firmware works again; the next dispatch sends the sleep again, all of it.
        sim.call(m.clear_faults)
        writes = len(sim.call(lambda: list(m.conf_writes)))
        dev.confirm_within_s = 30.0  # from here on, only a confirmation ends the wait
        again = await fleet.resend_unconfirmed()
        assert [o.device_id for o in again] == [dev.device_id] and again[0].ok
        assert len(sim.call(lambda: list(m.conf_writes))) == writes + 1

        async def confirmed() -> bool:
            await fleet.read_all()
            return any(o.kind is OutcomeKind.CONFIRMED for o in seen)

        await _until(confirmed)
        assert fleet.status[dev.device_id].health is Health.OK
        assert fleet.unconfirmed_requests() == {}

    with caplog.at_level(logging.INFO, logger="gridsched.fleet"):
        run(go())
    lines = [r for r in caplog.records if r.name == "gridsched.fleet" and "am/2" in r.message]
    went = [r for r in lines if r.levelno == logging.WARNING and "unconfirmed:" in r.message]
    assert len(went) == 1 and "did not show sleep" in went[0].message
    assert any("ok again (was unconfirmed)" in r.message for r in lines)
    assert not any(r.exc_info for r in lines)


def test_a_slow_write_is_confirmed_late_not_called_failed(sim: SimFleetThread) -> None:
    m = _miner(sim, 3)
    sim.call(lambda: m.inject(FaultKind.SLOW_WRITE, delay_s=0.6))
    dev = PyasicMiner("am/3", m.host, timeout_s=10.0, confirm_within_s=30.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok
        t = await dev.read()  # the write was answered; bmminer has not restarted yet
        assert t.state == "running"

        async def confirmed() -> bool:
            await fleet.read_all()
            return dev.device_id not in fleet.pending

        await _until(confirmed)
        assert [o.kind for o in seen] == [OutcomeKind.ACCEPTED, OutcomeKind.CONFIRMED]

    run(go())


def test_garbled_answers_are_unreadable_and_silence_is_unreachable(
    sim: SimFleetThread, caplog: pytest.LogCaptureFixture
) -> None:
    m = _miner(sim, 4)
    dev = PyasicMiner("am/4", m.host, timeout_s=10.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        assert (await fleet.connect_all())[dev.device_id] is None
        sim.call(m.inject, FaultKind.GARBLE)
        for _ in range(3):
            assert await fleet.read_all() == {}
        st = fleet.status[dev.device_id]
        assert st.health is Health.UNREADABLE and st.connected
        sim.call(m.clear_faults)
        assert dev.device_id in await fleet.read_all()
        assert st.health is Health.OK
        sim.call(lambda: m.inject(FaultKind.REFUSE, 30.0))
        for _ in range(3):
            await fleet.read_all()
            st.next_probe = 0.0
        assert st.health is Health.UNREACHABLE

    with caplog.at_level(logging.INFO, logger="gridsched.fleet"):
        run(go())
    lines = [r for r in caplog.records if r.name == "gridsched.fleet" and "am/4" in r.message]
    went = [r for r in lines if r.levelno == logging.WARNING and "unreadable:" in r.message]
    assert len(went) == 1  # once per change of state, not per reading
    assert not any(r.exc_info for r in lines)


def test_discovery_is_cached_across_retries(sim: SimFleetThread) -> None:
    m = _miner(sim, 5)
    dev = PyasicMiner("am/5", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        first = dev._miner
        await dev.connect()
        assert dev._miner is first

    run(go())


def test_firmware_that_wants_miner_mode_as_a_string_gets_it_after_one_unconfirmed_try() -> None:
    """Stock firmware versions differ in the JSON type of miner-mode they apply (pyasic has
    a setting for it): a write of the other type is answered success and ignored. The
    adapter tries the other type when the read-back does not show the first, and keeps it."""
    m = AntminerSim(loopback_host(PORTS), mode_type="str", **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("am/str", m.host, timeout_s=10.0, confirm_within_s=0.8)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})

        async def settled() -> bool:
            await fleet.read_all()
            return dev.device_id not in fleet.pending

        await _until(settled)
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED
        dev.confirm_within_s = 30.0  # from here on, only a confirmation ends the wait
        await fleet.resend_unconfirmed()
        await _until(settled)
        assert seen[-1].kind is OutcomeKind.CONFIRMED
        out = await fleet.apply({dev.device_id: ModeRequest("run")})  # kept: no second miss
        assert out[0].ok
        await _until(settled)
        assert seen[-1].kind is OutcomeKind.CONFIRMED

    with th:
        run(go())
        assert th.call(lambda: list(m.conf_writes)) == [1, "1", "0"]


@pytest.mark.parametrize("key", ["miner-mode", "bitmain-work-mode"])
def test_firmware_that_applies_either_work_mode_key_is_put_to_sleep_at_once(key: str) -> None:
    """Stock firmware builds differ in which key of set_miner_conf they apply (asic-rs
    issue 245 and PRs 249/251: on an S19j Pro build of Dec 2022 ``bitmain-work-mode`` is
    answered M000 and changes nothing while ``miner-mode`` applies; on other builds
    ``miner-mode`` no-ops and ``bitmain-work-mode`` applies). pyasic writes ``miner-mode``
    only, so the second kind never slept, whatever JSON type was tried. The write carries
    both, in the type the configuration read shows: the first try is confirmed."""
    m = AntminerSim(loopback_host(PORTS), mode_key=key, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("am/key", m.host, timeout_s=10.0, confirm_within_s=5.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        for mode, state in (("sleep", "sleeping"), ("run", "running")):
            out = await fleet.apply({dev.device_id: ModeRequest(mode)})
            assert out[0].ok, out

            async def settled() -> bool:
                await fleet.read_all()
                return dev.device_id not in fleet.pending

            await _until(settled)
            assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
            assert (await dev.read()).state == state

    with th:
        run(go())
        assert th.call(lambda: list(m.conf_writes)) == [1, 0], "one write each, no retry"


def test_the_miner_mode_type_can_be_pinned() -> None:
    """Where the site knows its firmware wants strings, the first write is one."""
    m = AntminerSim(loopback_host(PORTS), mode_type="str", **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("am/pin", m.host, timeout_s=10.0, miner_mode_as_str=True)

    async def go() -> None:
        await dev.connect()
        await dev.apply(ModeRequest("sleep"))
        async with asyncio.timeout(10.0):
            while (await dev.read()).state != "sleeping":
                await asyncio.sleep(0.05)

    with th:
        run(go())
        assert th.call(lambda: list(m.conf_writes)) == ["1"]


def test_a_command_to_a_miner_gone_silent_is_unconfirmed_and_it_stays_unreachable(
    sim: SimFleetThread,
) -> None:
    m = _miner(sim, 5)
    dev = PyasicMiner("am/5b", m.host, timeout_s=10.0, confirm_within_s=0.6)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok
        sim.call(lambda: m.inject(FaultKind.REFUSE, 30.0))
        st = fleet.status[dev.device_id]

        async def settled() -> bool:
            st.next_probe = 0.0
            await fleet.read_all()
            return dev.device_id not in fleet.pending

        await _until(settled)
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED
        assert st.health is Health.UNREACHABLE  # the worse news stands

    run(go())


def test_a_command_reuses_the_digest_challenge(sim: SimFleetThread) -> None:
    """pyasic opens a new client per request: each CGI call was sent twice, the first to be
    answered 401. lighttpd takes a nonce again for 600 s whatever the nc (src/mod_auth.c),
    so a kept session sends each call once: a command is get_miner_conf + set_miner_conf."""
    m = _miner(sim, 6)
    dev = PyasicMiner("am/6", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        await dev.read()  # the session has its challenge
        before = sim.call(lambda: m.web_requests)
        applied = await dev.apply(ModeRequest("sleep"))
        assert applied.note == ""  # answered success
        assert sim.call(lambda: m.web_requests) - before == 2
        before = sim.call(lambda: m.web_requests)
        await dev.apply(ModeRequest("run"))
        assert sim.call(lambda: m.web_requests) - before == 2
        await dev.close()

    run(go())
    assert sim.call(lambda: list(m.conf_writes)) == [1, 0]
    assert sim.call(lambda: m.stale_answers) == 0


def test_a_stale_nonce_is_challenged_again_and_the_command_goes_through(
    sim: SimFleetThread,
) -> None:
    """lighttpd answers a nonce older than 600 s with 401 and stale=true: the session takes
    the new challenge and sends the call once more, within the same attempt."""
    m = _miner(sim, 7)
    dev = PyasicMiner("am/7", m.host, timeout_s=10.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].attempts == 1
        sim.call(lambda: setattr(m, "web_clock", lambda: time.time() + 601.0))  # 10 min on
        before = sim.call(lambda: m.web_requests)
        out = await fleet.apply({dev.device_id: ModeRequest("run")})
        assert out[0].ok and out[0].attempts == 1, out[0].error
        # get_miner_conf twice (stale, then with the new nonce), set_miner_conf once
        assert sim.call(lambda: m.web_requests) - before == 3
        await fleet.close()

    run(go())
    assert sim.call(lambda: m.stale_answers) == 1
    assert sim.call(lambda: list(m.conf_writes)) == [1, 0]


def test_a_write_answered_after_the_timeout_is_sent_and_read_back_not_failed(
    sim: SimFleetThread,
) -> None:
    """A stock write may be answered only once bmminer has restarted. It went out: it is not
    a failure (which was retried, writing again, and then dropped from the read-back), but
    a command sent and unanswered, whose verdict the read-back gives."""
    m = _miner(sim, 0)
    sim.call(lambda: setattr(m, "conf_answer_s", 3.0))
    # short on purpose: the fault is the write answered after the timeout (3 s)
    dev = PyasicMiner("am/0s", m.host, timeout_s=1.0, confirm_within_s=30.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED, out[0].error
        assert out[0].attempts == 1
        assert out[0].applied is not None and antminer.UNANSWERED in out[0].applied.note
        assert dev.device_id in fleet.pending

        async def settled() -> bool:
            await fleet.read_all()
            return dev.device_id not in fleet.pending

        await _until(settled)
        assert seen[-1].kind is OutcomeKind.CONFIRMED
        await fleet.close()

    run(go())
    assert sim.call(lambda: list(m.conf_writes)) == [1]  # written once, not once per try


def test_a_reading_is_one_api_call_and_three_cgi_calls(sim: SimFleetThread) -> None:
    """A reading asks for what its Telemetry uses and nothing more: the API's summary
    (hashrate), summary.cgi (the firmware's checks), stats.cgi (chip temperatures) and
    get_miner_conf.cgi (work mode), each once over the kept challenge; a miner configured
    asleep and quiet reads sleeping."""
    m = _miner(sim, 6)
    dev = PyasicMiner("am/6r", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        await dev.read()  # the session has its challenge
        web, every = sim.call(lambda: (m.web_requests, m.commands_seen))
        t = await dev.read()
        web2, every2 = sim.call(lambda: (m.web_requests, m.commands_seen))
        assert (web2 - web, every2 - every - (web2 - web)) == (3, 1)
        assert t.state == "running" and t.errors == () and t.temperatures_c
        await dev.apply(ModeRequest("sleep"))
        async with asyncio.timeout(10.0):
            while (await dev.read()).state != "sleeping":
                await asyncio.sleep(0.05)
        await dev.close()

    run(go())
