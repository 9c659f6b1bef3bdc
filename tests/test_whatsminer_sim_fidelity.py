"""The Whatsminer API v2 simulator (adapters/sim/whatsminer.py) against what the device and
pyasic say, not against what gridsched's adapter happens to ask (audit fw25, D5-D7).

- D5: ``adjust_power_limit`` "Cannot be higher than the ordinary power of the machine"
  and "The miner will reboot after this is set" (pyasic 0.79 ``rpc/btminer.py``
  ``adjust_power_limit``); the API v3 simulator already models both.
- D6: "the API write permission needs to be enabled through the WhatMinerTool" (MicroBT
  API v2.0.5, "Summary"); a miner with it off answers "can't access write cmd" (pyasic
  ``BTMinerRPCAPI.send_privileged_command`` special-cases it) or code 45 "permission
  denied" (API v2.0.5 message codes). The adapter must call that a refusal.
- D7: pyasic's plain ``get_data()`` reads ``pools``, ``get_psu`` and ``get_miner_info``
  too (``BTMINER_DATA_LOC``); without them the ``devs+summary+pools`` multicommand fails
  as a whole and every field is None.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pyasic
import pytest
from pyasic.errors import APIError
from pyasic.rpc.btminer import BTMinerRPCAPI

from adapters.asic import PyasicMiner
from adapters.base import ControlRejected, Health, ModeRequest
from adapters.fleet import Outcome, OutcomeKind
from adapters.sim.fleet import SimFleetThread
from adapters.sim.whatsminer import WhatsminerSim
from tests.support.simfleet import (
    FAST,
    confirmed_run,
    firmware_fleet,
    miner_of,
    one_device_fleet,
    run,
)

N = 6


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from firmware_fleet(N, "whatsminer")


def _miner(sim: SimFleetThread, i: int) -> WhatsminerSim:
    return miner_of(sim, i, WhatsminerSim)


def _standard_w(sim: SimFleetThread, m: WhatsminerSim) -> float:
    return float(sim.call(lambda: m.preset("default").watts))


# -- D5: the power limit is capped at the standard power, and btminer restarts -------------


def test_a_power_limit_above_the_standard_power_is_capped(sim: SimFleetThread) -> None:
    m = _miner(sim, 0)
    standard = _standard_w(sim, m)

    async def go() -> tuple[int, float]:
        rpc = BTMinerRPCAPI(m.host)
        reply = await rpc.adjust_power_limit(20000)
        assert reply["Msg"] == "API command OK"  # accepted, as the firmware accepts it
        await asyncio.sleep(FAST["wake_s"] + 0.3)  # the restart's ramp is over
        summary = (await rpc.summary())["SUMMARY"][0]
        return int(summary["Power Limit"]), float(summary["Power"])

    limit, power = run(go())
    assert limit == pytest.approx(standard, abs=1)
    assert power <= standard * 1.01  # never the 20 kW asked for


def test_a_power_limit_restarts_btminer_while_mining_and_not_while_asleep(
    sim: SimFleetThread,
) -> None:
    m = _miner(sim, 1)
    boot0 = sim.call(lambda: m.state.boot_at)

    async def write(watts: int) -> None:
        await BTMinerRPCAPI(m.host).adjust_power_limit(watts)

    run(write(2800))
    assert sim.call(lambda: m.state.boot_at) > boot0  # btminer restarted to apply it
    assert sim.call(lambda: m.state.phase) == "waking"
    sim.call(m.sleep)
    boot1 = sim.call(lambda: m.state.boot_at)
    run(write(2600))
    assert sim.call(lambda: m.state.boot_at) == boot1  # a stopped miner is not started
    assert sim.call(lambda: m.state.phase) == "sleeping"
    sim.call(m.wake)


def test_the_adapter_confirms_a_power_limit_through_the_restart(sim: SimFleetThread) -> None:
    m = _miner(sim, 2)
    t = confirmed_run(PyasicMiner("wm/2", m.host, timeout_s=10.0), 2800.0)
    assert t.state in ("running", "transition") and t.target_w == 2800.0


# -- D6: write access off is a refusal, in the miner's words -------------------------------

REFUSALS = [("switch", "can't access write cmd"), ("code45", "permission denied")]


@pytest.mark.parametrize(("variant", "words"), REFUSALS)
def test_write_access_off_refuses_every_write_and_does_nothing(
    sim: SimFleetThread, variant: str, words: str
) -> None:
    m = _miner(sim, 3)

    def off() -> None:
        m.write_access = False
        m.write_refusal = variant

    sim.call(off)
    n_writes = len(sim.call(lambda: list(m.writes)))

    async def go() -> None:
        rpc = BTMinerRPCAPI(m.host)
        await rpc.get_token()  # reads, the token among them, need no write access
        for write in (rpc.power_off, rpc.power_on, lambda: rpc.adjust_power_limit(2500)):
            with pytest.raises(APIError) as got:
                await write()
            assert got.value.message == words

    try:
        run(go())
    finally:
        sim.call(lambda: setattr(m, "write_access", True))
    assert len(sim.call(lambda: list(m.writes))) == n_writes
    assert sim.call(lambda: m.state.phase) == "mining"


@pytest.mark.parametrize(("variant", "words"), REFUSALS)
def test_the_adapter_calls_write_access_off_a_refusal_not_unreachable(
    sim: SimFleetThread, variant: str, words: str
) -> None:
    m = _miner(sim, 4)

    def off() -> None:
        m.write_access = False
        m.write_refusal = variant

    sim.call(off)
    dev = PyasicMiner("wm/4", m.host, timeout_s=10.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        assert (await fleet.connect_all())[dev.device_id] is None
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert not out[0].ok and out[0].kind is OutcomeKind.REJECTED, out[0]
        assert words in (out[0].error or "") and "write access" in (out[0].error or "")
        st = fleet.status[dev.device_id]
        assert st.health is Health.REJECTED and st.connected
        with pytest.raises(ControlRejected, match="WhatsMinerTool"):
            await dev.apply(ModeRequest("run", 2500.0))
        t = (await fleet.read_all())[dev.device_id]  # still read: reachable, readable
        assert t.state == "running" and (t.power_w or 0) > 3000
        await fleet.close()

    try:
        run(go())
    finally:
        sim.call(lambda: setattr(m, "write_access", True))


# -- D7: pyasic's plain get_data() ------------------------------------------------------------


def test_pyasics_plain_get_data_reads_every_field_it_asks_for(sim: SimFleetThread) -> None:
    m = _miner(sim, 5)

    async def go() -> pyasic.MinerData:
        miner = await pyasic.get_miner(m.host)
        assert miner is not None
        return await miner.get_data()

    data = run(go())
    assert data.wattage is not None and data.wattage > 3000
    assert data.hashrate is not None and float(data.hashrate) > 80
    assert data.fans and all((f.speed or 0) > 0 for f in data.fans)
    assert data.pools and str(data.pools[0].url) == "stratum+tcp://127.0.0.1:3333"
    assert data.mac == sim.call(lambda: m._mac).upper()
    assert data.is_mining is True
    assert data.hostname and data.serial_number
    assert data.wattage_limit == pytest.approx(_standard_w(sim, m), abs=1)


def test_an_unknown_part_of_a_multicommand_fails_alone(sim: SimFleetThread) -> None:
    """cgminer's API (whose ``a+b`` joins btminer keeps) answers each part of a join under
    its own name, an unknown one with its own error status; pyasic then drops the whole
    answer (its validate_command_output fails on any part)."""
    m = _miner(sim, 5)
    out = sim.call(lambda: m.answer(b'{"command": "pools+nosuch"}'))
    assert out["pools"][0]["STATUS"][0]["STATUS"] == "S"
    assert out["nosuch"][0]["STATUS"][0]["STATUS"] == "E"
    assert json.dumps(out["pools"][0]["POOLS"])
