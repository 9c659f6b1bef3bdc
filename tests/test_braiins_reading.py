"""Braiins OS+ readings: only the calls and fields Telemetry uses (adapters/braiins.py
``read``), through the real adapter and the Braiins simulator over TCP, against what
pyasic's own ``get_data`` gives for the same miner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
    GetHashboardsResponse,
    GetMinerStatsResponse,
    Hashboard,
    MinerPowerStats,
    Power,
    Temperature,
    TemperatureSensor,
)

from adapters import braiins, braiins_fields
from adapters.asic import PyasicMiner, pyasic_fields
from adapters.base import BadReply, DeviceUnreachable, ModeRequest
from adapters.payloads import parse_miner_data
from adapters.sim.braiins import BraiinsSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from tests.support.simfleet import FAST, loopback_host, run


def _sim() -> tuple[BraiinsSim, SimFleetThread]:
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST)
    return m, SimFleetThread(SimFleet([m], control_port=None))


def _settled(m: BraiinsSim) -> bool:
    m.power_and_hashrate()  # ends a ramp that is done
    return m.state.ramp is None


async def _pyasic(dev: PyasicMiner) -> Any:
    """pyasic's own reading of the fields the adapter uses (as the adapter read before)."""
    data = await dev._need().get_data(include=pyasic_fields())
    return parse_miner_data(dev.device_id, data, 0.0)


def test_a_reading_is_three_grpc_calls_and_one_api_call_and_reads_as_pyasic_reads_it() -> None:
    """The calls pyasic's get_data makes for the adapter's fields, once each (one API
    multicommand on 4028), and the same state, power, target, hashrate and temperature as
    pyasic's own reading of the same miner, running and asleep."""
    m, th = _sim()
    dev = PyasicMiner("bos/r0", m.host, timeout_s=20.0)

    async def go() -> list[tuple[Any, Any, list[str], int]]:
        await dev.connect()
        await dev.read()  # the token is in hand
        out = []
        for mode in (ModeRequest("run", 3000.0), ModeRequest("sleep")):
            await dev.apply(mode)
            async with asyncio.timeout(10.0):  # until the simulator has settled there
                while not th.call(lambda: _settled(m)):
                    await asyncio.sleep(0.05)
            grpc0 = len(th.call(lambda: list(m.grpc_calls)))
            api0 = th.call(lambda: m.commands_seen)
            ours = await dev.read()
            grpc = th.call(lambda: list(m.grpc_calls))[grpc0:]
            api = th.call(lambda: m.commands_seen) - api0
            out.append((ours, await _pyasic(dev), grpc, api))
        await dev.close()
        return out

    with th:
        readings = run(go())
    for ours, theirs, grpc, api in readings:
        assert sorted(grpc) == ["_hashboards", "_mode", "_stats"] and api == 1
        assert ours.state == theirs.state
        assert ours.target_w == theirs.target_w == 3000.0
        assert ours.power_w == pytest.approx(theirs.power_w, rel=0.1)
        assert ours.hashrate_ths == pytest.approx(theirs.hashrate_ths, rel=0.1, abs=0.01)
        assert ours.errors == theirs.errors == ()
        # pyasic truncates the firmware's double to an int; the reading keeps it
        assert len(ours.temperatures_c) == len(theirs.temperatures_c) == 1
        assert ours.temperatures_c[0] == pytest.approx(theirs.temperatures_c[0], abs=1.0)
    assert [r[0].state for r in readings] == ["running", "sleeping"]


def test_the_answers_are_read_at_the_wire_as_betterproto_reads_them() -> None:
    """Power, target and the hottest chip from the bytes pyasic's messages serialise to;
    a field the firmware left off is unknown (None), never 0 W."""
    from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
        PerformanceMode,
        PowerTargetMode,
        TunerPerformanceMode,
    )

    stats = bytes(
        GetMinerStatsResponse(
            power_stats=MinerPowerStats(approximated_consumption=Power(watt=3187))
        )
    )
    boards = bytes(
        GetHashboardsResponse(
            hashboards=[
                Hashboard(
                    id="1", highest_chip_temp=TemperatureSensor(temperature=Temperature(71.5))
                ),
                Hashboard(id="2"),  # no sensor: left out
                Hashboard(
                    id="3", highest_chip_temp=TemperatureSensor(temperature=Temperature(74.25))
                ),
            ]
        )
    )
    target = PowerTargetMode(power_target=Power(watt=2900))
    mode = bytes(PerformanceMode(tuner_mode=TunerPerformanceMode(power_target=target)))
    assert braiins_fields.power_w(stats) == 3187.0
    assert braiins_fields.chip_temps_c(boards) == (74.25,)
    assert braiins_fields.target_w(mode) == 2900.0
    # left off the wire: an empty answer (the simulator's "garble"), a target in manual mode
    assert braiins_fields.power_w(b"") is None and braiins_fields.target_w(b"") is None
    no_power = GetMinerStatsResponse(power_stats=MinerPowerStats())
    assert braiins_fields.power_w(bytes(no_power)) is None
    assert braiins_fields.chip_temps_c(b"") == ()
    with pytest.raises(ValueError, match=r"cut short|past the end"):
        braiins_fields.power_w(stats[:-1])
    with pytest.raises(ValueError, match="wire type"):
        braiins_fields.fields(b"\x0f\x01")


def test_an_answer_that_is_not_a_message_is_unreadable_and_named() -> None:
    """The miner answers, in bytes that are no protobuf message: unreadable, the call
    named, not unreachable and not a reading at 0 W."""
    m, th = _sim()
    dev = PyasicMiner("bos/r1", m.host, timeout_s=20.0)

    async def go() -> None:
        await dev.connect()
        kept = dev._grpc
        assert kept is not None
        real = kept._unary

        async def cut(path: str, request: Any) -> bytes:
            data = await real(path, request)
            return data[:-1] if path == braiins.STATS else data

        kept._unary = cut  # type: ignore[method-assign]
        with pytest.raises(BadReply, match="GetMinerStats answered no message") as err:
            await dev.read()
        assert not isinstance(err.value, DeviceUnreachable)
        await dev.close()

    with th:
        run(go())


def test_a_garbled_miner_is_unreadable_with_no_power_assumed() -> None:
    """Every answer at its defaults on gRPC and a shape pyasic cannot parse on 4028 (the
    simulator's "garble"): no power, no hashrate, so no reading, and the port answers, so
    it is unreadable, not unreachable."""
    m, th = _sim()
    dev = PyasicMiner("bos/r2", m.host, timeout_s=20.0)

    async def go() -> None:
        await dev.connect()
        await dev.read()
        th.call(lambda: m.inject(FaultKind.GARBLE, 60.0))
        with pytest.raises(BadReply) as err:
            await dev.read()
        assert not isinstance(err.value, DeviceUnreachable)
        await dev.close()

    with th:
        run(go())


def test_a_miner_that_refuses_every_connection_is_unreachable() -> None:
    """Refused on gRPC (the kept connection dropped) and on 4028: unreachable."""
    m, th = _sim()
    dev = PyasicMiner("bos/r3", m.host, timeout_s=20.0)

    async def go() -> None:
        await dev.connect()
        await dev.read()
        th.call(lambda: m.inject(FaultKind.REFUSE, 60.0))
        assert dev._grpc is not None and dev._grpc._wire is not None
        conn = dev._grpc._wire.connection
        assert conn is not None and conn.transport is not None
        conn.transport.abort()
        async with asyncio.timeout(10.0):
            while not conn.lost:
                await asyncio.sleep(0.01)
        with pytest.raises(DeviceUnreachable) as err:
            await dev.read()
        # in words, with the gRPC port: before, "ConnectionRefusedError: [Errno 111] ..."
        assert "connection refused" in str(err.value) and "gRPC at" in str(err.value), err
        assert "Error" not in str(err.value), err
        await dev.close()

    with th:
        run(go())


def test_a_part_of_the_api_command_the_miner_refuses_loses_only_that_part() -> None:
    """BOSminer answers ``tunerstatus`` with an error (a tuner not running): the hashrate
    and mining state from the same multicommand are still read, as pyasic's multicommand
    reads them by sending the parts again one by one."""
    m, th = _sim()
    dev = PyasicMiner("bos/r4", m.host, timeout_s=20.0)

    def refuse_tuner() -> None:
        m._cmd_tunerstatus = lambda _: m._status("E", 45, "Tuner is not running")  # type: ignore[method-assign]

    async def go() -> Any:
        await dev.connect()
        th.call(refuse_tuner)
        got = await dev.read()
        await dev.close()
        return got

    with th:
        t = run(go())
    assert t.hashrate_ths is not None and t.hashrate_ths > 0 and t.state == "running"
    assert t.power_w is not None and t.errors == ()


def test_a_token_the_miner_ended_is_renewed_once_for_the_reading_s_three_calls() -> None:
    """The miner forgets its session token (a restart of BOSer): the reading's three calls,
    all refused UNAUTHENTICATED at once, log on once between them and are each sent again."""
    m, th = _sim()
    dev = PyasicMiner("bos/r5", m.host, timeout_s=20.0)

    def forget() -> None:
        m._token = ""  # the next Login makes a new one

    async def go() -> tuple[Any, int]:
        await dev.connect()
        await dev.read()
        kept = dev._grpc
        assert kept is not None
        logons = 0
        real = kept.web._get_auth

        async def counted() -> Any:
            nonlocal logons
            logons += 1
            return await real()

        kept.web._get_auth = counted
        th.call(forget)
        got = await dev.read()
        await dev.close()
        return got, logons

    with th:
        t, logons = run(go())
    assert logons == 1
    assert t.power_w is not None and t.target_w == 3050.0 and t.temperatures_c
