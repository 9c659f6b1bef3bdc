"""Braiins OS+ over gRPC: one kept channel per miner (adapters/braiins.py), through the real
pyasic adapter and the Braiins simulator (adapters/sim/braiins.py) over TCP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import ControlRejected, DeviceUnreachable, ModeRequest
from adapters.braiins import KeptChannel
from adapters.sim.braiins import BraiinsSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from tests.support.simfleet import FAST, loopback_host, run


def _connection(kept: KeptChannel | None) -> Any:
    assert kept is not None and kept._wire is not None
    return kept._wire.connection  # adapters.grpc_wire.Connection: one per TCP connection


def test_commands_share_one_connection_and_it_is_made_again_when_lost() -> None:
    """pyasic opened a new channel (TCP, HTTP/2 handshake) per call; the kept one serves the
    miner's commands and readings, and connects again after its connection dropped."""
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    # a reading is many calls: 2 s timed out on a loaded machine; the deadline is not what
    # this test is about
    dev = PyasicMiner("bos/0", m.host, timeout_s=20.0)

    async def go() -> None:
        info = await dev.connect()
        assert info.family == "braiins-os"
        await dev.apply(ModeRequest("sleep"))
        first = _connection(dev._grpc)
        await dev.read()
        await dev.apply(ModeRequest("run", 3000.0))
        assert _connection(dev._grpc) is first
        first.transport.abort()  # the connection drops (a reboot, a cable)
        async with asyncio.timeout(10.0):
            while not first.lost:
                await asyncio.sleep(0.01)
        await dev.apply(ModeRequest("sleep"))
        assert _connection(dev._grpc) is not first
        await dev.close()
        assert dev._grpc is None

    with th:
        run(go())
        calls = th.call(lambda: list(m.grpc_calls))
    assert calls.count("_pause") == 2 and calls.count("_resume") == 1


# -- writes: the firmware's own answer decides, with no dict built for pyasic ----------------


def _drop(kept: KeptChannel | None) -> Any:
    """Drop the kept connection, as a reboot or a cable would."""
    conn = _connection(kept)
    conn.transport.abort()
    return conn


def test_a_write_to_a_miner_that_cannot_be_reached_is_unreachable_not_a_refusal() -> None:
    """pyasic's stop_mining answers False for every APIError, a refused connection too, so
    the adapter called a miner it could not reach one that "refused"; nothing was refused."""
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("bos/1", m.host, timeout_s=20.0)

    async def go() -> None:
        await dev.connect()
        await dev.apply(ModeRequest("sleep"))
        th.call(lambda: m.inject(FaultKind.REFUSE, 60.0))
        conn = _drop(dev._grpc)
        async with asyncio.timeout(10.0):
            while not conn.lost:
                await asyncio.sleep(0.01)
        with pytest.raises(DeviceUnreachable):
            await dev.apply(ModeRequest("run", 3000.0))
        await dev.close()

    with th:
        run(go())


def test_a_power_target_the_firmware_refuses_is_a_refusal_in_its_words() -> None:
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("bos/2", m.host, timeout_s=20.0)

    async def go() -> None:
        await dev.connect()
        kept = dev._grpc
        assert kept is not None
        with pytest.raises(ControlRejected, match=r"INVALID_ARGUMENT.*out of range"):
            await kept.write("bos/2", "set_power_limit", (0,), 20.0)
        await kept.write("bos/2", "set_power_limit", (3000,), 20.0)
        await kept.write("bos/2", "stop_mining", (), 20.0)
        await kept.write("bos/2", "resume_mining", (), 20.0)
        await dev.close()

    with th:
        run(go())
        calls = th.call(lambda: list(m.grpc_calls))
        target = th.call(lambda: m.target_w)
    assert calls[-3:] == ["_set_power_target", "_pause", "_resume"]
    assert target == 3000.0


def test_the_simulators_power_target_is_decoded_once_per_request_and_refusals_stay() -> None:
    """The simulator keeps what each SetPowerTarget request's bytes decoded to; a body that
    is no message and a target out of range are refused each time, never kept as a value."""
    from grpclib import GRPCError, Status

    from adapters.braiins import target_request

    m = BraiinsSim("127.0.0.1", web_port=None, **FAST)
    for _ in range(2):
        assert m._set_power_target(target_request(3100)) == m._set_power_target(
            target_request(3100)
        )
        assert m.target_w == 3100.0
        with pytest.raises(GRPCError) as bad:
            m._set_power_target(b"\x12\x03\x08")  # cut short
        assert bad.value.status is Status.INTERNAL
        with pytest.raises(GRPCError) as zero:
            m._set_power_target(target_request(0))
        assert zero.value.status is Status.INVALID_ARGUMENT
    m._set_power_target(target_request(2900))
    assert m.target_w == 2900.0
