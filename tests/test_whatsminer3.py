"""A Whatsminer on API v3 (firmware after 2024-11) through pyasic and the adapter.

The simulator (adapters/sim/whatsminer3.py) serves what pyasic 0.79 sends and parses for
``BTMinerV3`` (port 4433, length-prefixed JSON, token-signed writes) and MicroBT's API v3
documentation, with ``get_version`` on 4028 for pyasic's factory. The family suite
(tests/test_families.py) runs it too; here: what pyasic alone gets wrong on v3 and what
the adapter does about it, refusals, faults, and the protocol itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import AdapterError, ControlRejected, DeviceTimeout, Health, ModeRequest
from adapters.fleet import Outcome, OutcomeKind
from adapters.sim.fleet import SimFleetThread
from adapters.sim.server import FaultKind
from adapters.sim.whatsminer3 import FW_VERSION, WhatsminerV3Sim, frame, v3_token
from models.firmware import Family
from tests.support.simfleet import (
    FAST,
    confirmed_run,
    firmware_fleet,
    free_base,
    loopback_host,
    miner_of,
    one_device_fleet,
    run,
    settle,
)

PORTS = (4028, 4433)
N = 9


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from firmware_fleet(N, "whatsminer3", PORTS)


def _miner(sim: SimFleetThread, i: int) -> WhatsminerV3Sim:
    return miner_of(sim, i, WhatsminerV3Sim)


def test_identity_and_reading_and_what_pyasic_alone_gets_wrong(sim: SimFleetThread) -> None:
    """pyasic picks BTMinerV3 from the version on 4028; its get_fw_ver() has none and its
    set_power_limit says True to a refused write, so the adapter does both itself."""
    m = _miner(sim, 0)
    dev = PyasicMiner("wm3/0", m.host, timeout_s=10.0)

    async def go() -> None:
        info = await dev.connect()
        assert (info.make, info.firmware, info.family) == (
            "WhatsMiner",
            "Stock",
            Family.WHATSMINER_V3.value,
        )
        assert "M60" in info.model and info.firmware_version == FW_VERSION
        t = await dev.read()
        assert t.state == "running" and t.power_w is not None and t.power_w > 3000
        assert t.target_w == pytest.approx(3423, abs=1) and (t.hashrate_ths or 0) > 150
        miner = dev._miner
        assert type(miner).__mro__[1].__name__ == "BTMinerV3"
        assert await miner.get_fw_ver() is None  # pyasic 0.79: no version on v3
        sim.call(lambda: setattr(m, "password", "not-super"))
        assert await miner.set_power_limit(2500) is True  # refused, and pyasic says done

    try:
        run(go())
    finally:
        sim.call(lambda: setattr(m, "password", "super"))
    assert sim.call(lambda: list(m.writes)) == []  # the miner refused it: nothing changed
    assert sim.call(m.limit_w) == pytest.approx(3423, abs=1)


def test_a_power_limit_restarts_btminer_and_is_confirmed_by_read_back(
    sim: SimFleetThread,
) -> None:
    """MicroBT: the device restarts to apply a new power limit; the adapter's write is
    accepted on code 0 and done only when the summary's power-limit shows it."""
    m = _miner(sim, 1)
    boot0 = sim.call(lambda: m.state.boot_at)
    t = confirmed_run(PyasicMiner("wm3/1", m.host, timeout_s=10.0), 2800.0)
    assert t.state == "running" and t.target_w == 2800.0
    assert ("set.miner.power_limit", 2800) in sim.call(lambda: list(m.writes))
    assert sim.call(lambda: m.state.boot_at) > boot0  # btminer restarted to apply it


def test_a_wrong_password_is_a_rejection_for_every_write(sim: SimFleetThread) -> None:
    """Reads need no password; a write with a token from another password is answered
    code -1: rejected and named, never accepted (pyasic's set_power_limit would say True)."""
    m = _miner(sim, 2)
    sim.call(lambda: setattr(m, "password", "not-super"))
    dev = PyasicMiner("wm3/2", m.host, timeout_s=10.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        assert (await fleet.connect_all())[dev.device_id] is None
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert not out[0].ok and "password" in (out[0].error or ""), out[0]
        assert fleet.status[dev.device_id].health is Health.REJECTED
        with pytest.raises(ControlRejected, match="password"):
            await dev.apply(ModeRequest("run", 2500.0))
        t = await dev.read()
        assert t.state == "running" and t.target_w == pytest.approx(3423, abs=1)

    try:
        run(go())
    finally:
        sim.call(lambda: setattr(m, "password", "super"))
    assert sim.call(lambda: list(m.writes)) == []


def test_write_access_off_is_a_rejection_naming_the_permission(sim: SimFleetThread) -> None:
    m = _miner(sim, 3)
    sim.call(lambda: setattr(m, "write_access", False))
    dev = PyasicMiner("wm3/3", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        with pytest.raises(ControlRejected, match="no permission"):
            await dev.apply(ModeRequest("sleep"))

    try:
        run(go())
    finally:
        sim.call(lambda: setattr(m, "write_access", True))


def test_garbled_answers_are_unreadable_not_zero_kw(sim: SimFleetThread) -> None:
    m = _miner(sim, 4)
    dev = PyasicMiner("wm3/4", m.host, timeout_s=10.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        assert (await fleet.connect_all())[dev.device_id] is None
        sim.call(m.inject, FaultKind.GARBLE)
        for _ in range(3):
            assert await fleet.read_all() == {}  # no reading, so no 0 kW either
        st = fleet.status[dev.device_id]
        assert st.health is Health.UNREADABLE and st.connected
        sim.call(m.clear_faults)
        t = (await fleet.read_all())[dev.device_id]
        assert st.health is Health.OK and (t.power_w or 0) > 3000

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_an_ignored_power_limit_is_unconfirmed_never_done(sim: SimFleetThread) -> None:
    m = _miner(sim, 5)
    sim.call(m.inject, FaultKind.IGNORE)
    dev = PyasicMiner("wm3/5", m.host, timeout_s=10.0, confirm_within_s=0.8)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.read_all()
        out = await fleet.apply({dev.device_id: ModeRequest("run", 2600.0)})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED
        await settle(fleet, dev.device_id)
        assert [o.kind for o in seen] == [OutcomeKind.ACCEPTED, OutcomeKind.UNCONFIRMED]
        assert fleet.status[dev.device_id].health is Health.UNCONFIRMED
        assert dev.device_id in fleet.unconfirmed_requests()

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_a_slow_write_is_confirmed_late_not_called_failed(sim: SimFleetThread) -> None:
    m = _miner(sim, 6)
    sim.call(lambda: m.inject(FaultKind.SLOW_WRITE, delay_s=0.6))
    dev = PyasicMiner("wm3/6", m.host, timeout_s=10.0, confirm_within_s=30.0)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok
        assert (await dev.read()).state == "running"  # answered; not stopped yet
        await settle(fleet, dev.device_id, timeout_s=30.0)
        assert [o.kind for o in seen] == [OutcomeKind.ACCEPTED, OutcomeKind.CONFIRMED]

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_a_hung_api_is_a_timeout_not_a_reading(sim: SimFleetThread) -> None:
    """pyasic's API v3 reader has no timeout of its own; the adapter's bounds it."""
    m = _miner(sim, 7)
    dev = PyasicMiner("wm3/7", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()  # healthy: time enough on a loaded host
        dev.timeout_s = 0.5  # the hang alone is to be seen as a timeout, and soon
        sim.call(lambda: m.inject(FaultKind.HANG, 30.0))
        with pytest.raises(DeviceTimeout):
            await dev.read()

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_with_4028_closed_pyasic_takes_it_for_api_v2_and_nothing_false_is_read() -> None:
    """pyasic 0.79 asks 4028 for the version; without an answer it picks API v2, which a
    v3 miner does not speak. The adapter then has no reading, not a made-up one."""
    host = loopback_host(PORTS)

    async def go() -> None:
        m = WhatsminerV3Sim(host, legacy_port=False, **FAST)
        await m.start()
        try:
            dev = PyasicMiner("wm3/closed", host, timeout_s=1.0)
            info = await dev.connect()
            assert info.family == Family.WHATSMINER.value  # v2, by pyasic's choice
            with pytest.raises(AdapterError):
                await dev.read()
        finally:
            await m.stop()

    run(go())


SITE = """
[site]
name = "wm3"
timezone = "UTC"
interconnect_kw = 100

[mining]
hashprice_usd_per_ths_day = 0.05

[[devices]]
name = "m60"
kind = "asic"
model = "Whatsminer M60"
count = 1
[devices.adapter]
kind = "sim"
sim_firmware = "whatsminer3"
sim_base = "{base}"
sim_sleep_s = 0.3
sim_wake_s = 0.6
timeout_s = 10
"""


def test_a_site_file_runs_api_v3_simulators_through_pyasic(tmp_path: Any) -> None:
    """``[devices.adapter] kind = "sim"`` with ``sim_firmware = "whatsminer3"``."""
    from adapters import registry
    from models.site import load_site

    site = tmp_path / "site.toml"
    site.write_text(SITE.format(base=free_base(1, PORTS)))
    built = registry.build(load_site(site))
    assert [type(m) for m in built.simulators[0].miners] == [WhatsminerV3Sim]
    dev = built.adapters[0]
    with SimFleetThread(built.simulators[0]):

        async def go() -> str:
            info = await dev.connect()
            return info.family

        assert run(go()) == Family.WHATSMINER_V3.value


# -- the protocol, in process ------------------------------------------------------------


def _ask(m: WhatsminerV3Sim, req: dict[str, Any]) -> dict[str, Any]:
    return m.answer_v3(json.dumps(req).encode())


def _signed(m: WhatsminerV3Sim, cmd: str, param: Any, password: str = "super") -> dict[str, Any]:
    ts = 1_700_000_000
    tok = v3_token(cmd, password, m.salt, ts)
    return {"cmd": cmd, "param": param, "ts": ts, "account": "super", "token": tok}


def test_the_api_v3_answers_and_codes() -> None:
    m = WhatsminerV3Sim("127.0.0.1")
    salt = _ask(m, {"cmd": "get.device.info", "param": "salt"})
    assert salt["code"] == 0 and salt["msg"] == {"salt": m.salt}
    assert _ask(m, {"cmd": "get.miner.status", "param": "summary"})["msg"]["summary"][
        "power-limit"
    ] == pytest.approx(3423, abs=1)
    assert _ask(m, {"cmd": "get.nothing"})["code"] == -2
    assert _ask(m, {"cmd": "get.miner.status", "param": "nothing"})["code"] == -2
    assert m.answer_v3(b"{not json")["code"] == -1
    assert _ask(m, {"param": 1})["code"] == -3
    assert _ask(m, _signed(m, "set.miner.service", "stop", password="wrong"))["code"] == -1
    assert _ask(m, {**_signed(m, "set.miner.service", "stop"), "account": "user1"})["code"] == -4
    assert _ask(m, _signed(m, "set.miner.service", "pause"))["code"] == -2
    assert _ask(m, _signed(m, "set.miner.power_limit", "2500"))["code"] == -2
    assert _ask(m, _signed(m, "set.miner.power_limit", 100_000))["code"] == -2
    assert m.writes == []  # none of those was accepted
    ok = _ask(m, _signed(m, "set.miner.service", "stop"))
    assert ok["code"] == 0 and ok["msg"] == "ok" and ok["desc"] == "set.miner.service"
    assert m.state.phase == "sleeping"
    # above the standard power, the limit in force stays the standard power
    assert _ask(m, _signed(m, "set.miner.power_limit", 5000))["code"] == 0
    assert m.limit_w() == pytest.approx(3423, abs=1)


def test_the_framing_keeps_the_connection_for_heartbeats_and_requests(
    sim: SimFleetThread,
) -> None:
    m = _miner(sim, 7)

    async def go() -> None:
        reader, writer = await asyncio.open_connection(m.host, 4433)
        try:
            for _ in range(2):  # a heartbeat, then a request, twice on one connection
                writer.write(b"\x00\x00\x00\x00" + frame(b'{"cmd":"get.device.info"}'))
                await writer.drain()
                n = int.from_bytes(await reader.readexactly(4), "little")
                reply = json.loads(await reader.readexactly(n))
                assert reply["msg"]["system"]["fwversion"] == FW_VERSION
        finally:
            writer.close()

    run(go())


def test_the_salt_is_got_at_connect_so_the_first_write_is_one_round_trip(
    sim: SimFleetThread,
) -> None:
    """pyasic asks for the write salt (``get.device.info`` ``salt``) inside the first write,
    then keeps it: got at connect, a curtail's first write to each miner is one trip."""
    m = _miner(sim, 8)
    dev = PyasicMiner("wm3/8", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        assert dev._need().rpc.salt == sim.call(lambda: m.salt)

    run(go())
