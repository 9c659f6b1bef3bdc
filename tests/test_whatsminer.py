"""A Whatsminer on API v2 (btminer, port 4028) through pyasic: a write that times out is a
timeout, a write the miner refuses is a refusal with the miner's words.

pyasic 0.79's ``BTMinerV2.stop_mining`` / ``resume_mining`` / ``set_power_limit`` answer
False both when the miner refuses (``{"STATUS": "E", "Msg": "invalid token"}``) and when
nothing comes back in time (``send_privileged_command`` turns the cancelled read into
``APIError("No data was returned from the API.")``), so a slow miner read as "rejected":
1,000 mixed miners under load logged 253 such refusals that then succeeded on a retry.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.asic import PyasicMiner
from adapters.base import BadReply, ControlRejected, DeviceTimeout, ModeRequest
from adapters.secrets import Secret
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from adapters.sim.whatsminer import WhatsminerSim
from tests.support.simfleet import FAST, free_base, run

N = 3


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    fleet = SimFleet.build(
        N, base=free_base(N), firmware=("whatsminer",), control_port=None, **FAST
    )
    th = SimFleetThread(fleet)
    with th:
        yield th


def _miner(sim: SimFleetThread, i: int) -> WhatsminerSim:
    m = sim.fleet.miners[i]
    assert isinstance(m, WhatsminerSim)
    return m


@pytest.mark.parametrize("request_", [ModeRequest("sleep"), ModeRequest("run", power_w=3000.0)])
def test_a_write_that_gets_no_answer_is_a_timeout_not_a_refusal(
    sim: SimFleetThread, request_: ModeRequest
) -> None:
    m = _miner(sim, 0)
    dev = PyasicMiner("wm/0", m.host, timeout_s=1.0)

    async def go() -> None:
        await dev.connect()
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
    dev = PyasicMiner("wm/1", m.host, timeout_s=2.0, password=Secret("not-the-password"))

    async def go() -> None:
        await dev.connect()
        with pytest.raises(ControlRejected, match="invalid token"):
            await dev.apply(ModeRequest("sleep"))

    run(go())
    assert sim.call(lambda: m.state.phase) == "mining"
