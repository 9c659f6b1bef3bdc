"""A Whatsminer on API v2 (btminer, port 4028) through pyasic: a write that times out is a
timeout, a write the miner refuses is a refusal with the miner's words.

pyasic 0.79's ``BTMinerV2.stop_mining`` / ``resume_mining`` / ``set_power_limit`` answer
False both when the miner refuses (``{"STATUS": "E", "Msg": "invalid token"}``) and when
nothing comes back in time (``send_privileged_command`` turns the cancelled read into
``APIError("No data was returned from the API.")``), so a slow miner read as "rejected":
1,000 mixed miners under load logged 253 such refusals that then succeeded on a retry.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from pyasic.errors import APIError
from pyasic.rpc.btminer import BTMinerRPCAPI

from adapters import whatsminer
from adapters.asic import PyasicMiner
from adapters.base import BadReply, ControlRejected, DeviceTimeout, ModeRequest
from adapters.secrets import Secret
from adapters.sim import whatsminer as whatsminer_sim
from adapters.sim.fleet import SimFleetThread
from adapters.sim.server import FaultKind
from adapters.sim.whatsminer import WhatsminerSim
from tests.support.simfleet import firmware_fleet, miner_of, run

N = 6


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from firmware_fleet(N, "whatsminer")


def _miner(sim: SimFleetThread, i: int) -> WhatsminerSim:
    return miner_of(sim, i, WhatsminerSim)


@pytest.mark.parametrize("request_", [ModeRequest("sleep"), ModeRequest("run", power_w=3000.0)])
def test_a_write_that_gets_no_answer_is_a_timeout_not_a_refusal(
    sim: SimFleetThread, request_: ModeRequest
) -> None:
    m = _miner(sim, 0)
    dev = PyasicMiner("wm/0", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()  # healthy: time enough on a loaded host
        dev.timeout_s = 1.0  # the hang alone is to be seen as a timeout, and soon
        sim.call(lambda: m.inject(FaultKind.HANG))
        try:
            with pytest.raises(DeviceTimeout):
                await dev.apply(request_)
        finally:
            sim.call(m.clear_faults)

    run(go())


def test_a_write_whose_connection_drops_unanswered_is_no_answer_not_a_refusal(
    sim: SimFleetThread,
) -> None:
    """The miner drops the connection mid-answer (it reboots): pyasic's client cannot
    decode what came and its stop_mining says False; that is no refusal."""
    m = _miner(sim, 2)
    dev = PyasicMiner("wm/2", m.host, timeout_s=5.0)

    async def go() -> None:
        await dev.connect()
        sim.call(lambda: m.inject(FaultKind.REBOOT))
        with pytest.raises((DeviceTimeout, BadReply)) as got:
            await dev.apply(ModeRequest("sleep"))
        assert "refused" not in str(got.value)

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_a_refused_write_is_a_refusal_in_the_miners_words(sim: SimFleetThread) -> None:
    m = _miner(sim, 1)
    dev = PyasicMiner("wm/1", m.host, timeout_s=10.0, password=Secret("not-the-password"))

    async def go() -> None:
        await dev.connect()
        with pytest.raises(ControlRejected, match="invalid token"):
            await dev.apply(ModeRequest("sleep"))

    run(go())
    assert sim.call(lambda: m.state.phase) == "mining"


# -- tokens: got once, kept for their documented 30 minutes, renewed ahead of expiry -----------


def _issued(sim: SimFleetThread, m: WhatsminerSim) -> int:
    return int(sim.call(lambda: m.tokens_issued))


def test_the_token_is_got_at_connect_and_every_write_reuses_it(sim: SimFleetThread) -> None:
    """A token is good for 30 minutes (MicroBT's API v2.0.5): the first curtail must not
    wait for a get_token round trip and two md5-crypts, and no later write needs either."""
    m = _miner(sim, 3)
    dev = PyasicMiner("wm/3", m.host, timeout_s=10.0)
    before = _issued(sim, m)

    async def go() -> None:
        await dev.connect()
        assert _issued(sim, m) == before + 1
        await dev.apply(ModeRequest("sleep"))
        await dev.apply(ModeRequest("run", power_w=3000.0))
        await dev.apply(ModeRequest("sleep"))

    run(go())
    assert _issued(sim, m) == before + 1
    writes = sim.call(lambda: list(m.writes))
    assert writes[-4:] == ["power_off", "adjust_power_limit", "power_on", "power_off"]


def test_a_token_the_miner_ended_is_renewed_and_the_write_sent_once_more(
    sim: SimFleetThread,
) -> None:
    """The miner answers a write under an ended token with code 135 "check token error"
    and does nothing (a reboot, or 30 minutes by its clock before pyasic's own): the
    adapter gets a new token and sends the write again, once, instead of a refusal."""
    m = _miner(sim, 4)
    dev = PyasicMiner("wm/4", m.host, timeout_s=10.0)
    before = _issued(sim, m)

    async def go() -> None:
        await dev.connect()
        sim.call(m.expire_tokens)
        await dev.apply(ModeRequest("sleep"))

    run(go())
    assert _issued(sim, m) == before + 2
    assert sim.call(lambda: list(m.writes)) == ["power_off"]  # carried out once


def test_a_reading_renews_a_token_near_its_end_off_the_command_path(
    sim: SimFleetThread,
) -> None:
    m = _miner(sim, 5)
    dev = PyasicMiner("wm/5", m.host, timeout_s=10.0)
    before = _issued(sim, m)

    async def go() -> None:
        await dev.connect()
        await dev.read()
        assert _issued(sim, m) == before + 1  # a fresh token is left alone
        token = dev._need().rpc.token
        token.timestamp -= datetime.timedelta(seconds=whatsminer.TOKEN_RENEW_S + 1)
        await dev.read()
        assert _issued(sim, m) == before + 2
        await dev.apply(ModeRequest("sleep"))
        assert _issued(sim, m) == before + 2

    run(go())


def test_the_simulator_keeps_earlier_tokens_and_refuses_a_33rd(sim: SimFleetThread) -> None:
    """As documented (API v2.0.5: 32 tokens per IP, each kept 30 minutes): a newer token
    does not end an older one, and get_token past 32 live ones is code 136."""
    m = _miner(sim, 2)

    async def go() -> None:
        rpc = BTMinerRPCAPI(m.host)
        first = await rpc.get_token()
        rpc.token = None
        await rpc.get_token()
        rpc.token = first
        reply = await rpc.power_on()
        assert reply["Msg"] == "API command OK"
        for _ in range(whatsminer_sim.MAX_TOKENS):
            rpc.token = None
            try:
                await rpc.get_token()
            except APIError as exc:
                assert "token over max times" in str(exc)
                return
        raise AssertionError("a 33rd live token was issued")

    try:
        run(go())
    finally:
        sim.call(m.expire_tokens)
