"""Braiins OS+'s tuner power-target range: read once at connect (``ConfigurationService/
GetConstraints`` -> ``tuner_constraints.power_target`` {default, min, max}, bos-plus-api
``constraints.proto``, ``performance.proto``) into ``DeviceInfo.min_power_w`` /
``max_power_w`` (adapters/braiins.py ``tuner_range``, adapters/asic.py).

Before this, the adapter never asked: the planner could plan, and dispatch send, a target
outside the range, which the firmware (the simulator, by assumption) refuses with
INVALID_ARGUMENT. A firmware without the call (UNIMPLEMENTED) keeps None: nothing known
limits it, logged once, not a failure of the device.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
    GetConstraintsResponse,
    Power,
    PowerConstraints,
    TunerConstraints,
)

from adapters import braiins
from adapters.asic import PyasicMiner
from adapters.base import DeviceInfo, ModeRequest
from adapters.sim.braiins import BraiinsSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from tests.support.simfleet import FAST, loopback_host, run


def _connected(device_id: str, **sim: Any) -> tuple[DeviceInfo, BraiinsSim, list[str]]:
    """Connect the pyasic adapter to one simulated Braiins OS+ miner (twice: a reconnect),
    then set a power target; the identity, the simulator and its gRPC calls."""
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST, **sim)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner(device_id, m.host, timeout_s=20.0)

    async def go() -> DeviceInfo:
        await dev.connect()
        info = await dev.connect()
        await dev.read()
        await dev.apply(ModeRequest("run", 3000.0))
        await dev.close()
        return info

    with th:
        info = run(go())
        calls = th.call(lambda: list(m.grpc_calls))
    return info, m, calls


# -- the adapter reads the range -------------------------------------------------------------


def test_the_adapter_reads_the_tuners_power_range_into_its_identity() -> None:
    info, m, calls = _connected("bos/c0")
    lo, hi = m.power_range()
    assert (lo, hi) == (852.0, 7111.0)  # the S19j Pro's by the S19k Pro's shares
    assert (info.min_power_w, info.max_power_w) == (lo, hi)
    assert info.family == "braiins-os" and info.power_targets_w == ()
    assert calls.count("_constraints") == 1  # once: the reconnect keeps what it read


def test_a_narrow_range_set_on_the_simulator_is_the_one_read() -> None:
    info, _m, _calls = _connected("bos/c1", power_range_w=(2000.0, 3200.0))
    assert (info.min_power_w, info.max_power_w) == (2000.0, 3200.0)


def test_firmware_without_get_constraints_keeps_no_range_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Older firmware answers UNIMPLEMENTED: nothing known limits the miner (None), the
    miner is driven as before, and the log says it once, not as an error."""
    with caplog.at_level(logging.INFO, logger="gridsched"):
        info, m, calls = _connected("bos/c2", constraints=False)
    assert info.min_power_w is None and info.max_power_w is None
    assert calls.count("_set_power_target") == 1 and m.target_w == 3000.0
    said = [r for r in caplog.records if "GetConstraints" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.INFO and "bos/c2" in said[0].getMessage()


def test_the_range_is_read_at_the_wire_as_betterproto_writes_it() -> None:
    target = PowerConstraints(default=Power(2760), min=Power(771), max=Power(6435))
    data = bytes(GetConstraintsResponse(tuner_constraints=TunerConstraints(power_target=target)))
    assert braiins.range_w(data) == (771.0, 6435.0)
    assert braiins.range_w(b"") is None  # none named (proto3: left off the wire)
    upside = PowerConstraints(min=Power(5000), max=Power(1000))
    bad = bytes(GetConstraintsResponse(tuner_constraints=TunerConstraints(power_target=upside)))
    assert braiins.range_w(bad) is None  # a range that is none
    with pytest.raises(ValueError):
        braiins.range_w(b"\x0a\x05\x0a")  # cut short


def test_a_range_not_read_for_a_passing_reason_is_asked_again_with_a_reading(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An INTERNAL status (or a timeout) at connect is no answer about the range: the miner
    is driven without one, and a reading RANGE_RETRY_S later asks again and keeps it."""
    from grpclib import GRPCError, Status

    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    dev = PyasicMiner("bos/c5", m.host, timeout_s=20.0)
    unary, failed = braiins.KeptChannel._unary, list[str]()

    async def once_failing(kept: braiins.KeptChannel, path: str, request: bytes) -> bytes:
        if path == braiins.CONSTRAINTS and not failed:
            failed.append(path)
            raise GRPCError(Status.INTERNAL, "busy")
        return await unary(kept, path, request)

    monkeypatch.setattr(braiins.KeptChannel, "_unary", once_failing)

    async def go() -> list[DeviceInfo | None]:
        seen: list[DeviceInfo | None] = [await dev.connect()]
        await dev.read()  # the retry is not due yet: not asked
        seen.append(dev.info)
        assert dev._grpc is not None
        dev._grpc.range_asked_at -= braiins.RANGE_RETRY_S
        await dev.read()
        seen.append(dev.info)
        await dev.close()
        return seen

    with caplog.at_level(logging.WARNING, logger="gridsched"), th:
        at_connect, early, later = run(go())
        calls = th.call(lambda: list(m.grpc_calls))
    assert at_connect is not None and at_connect.min_power_w is None
    assert early is not None and early.max_power_w is None
    assert later is not None and (later.min_power_w, later.max_power_w) == m.power_range()
    assert calls.count("_constraints") == 1  # the failed call never reached the simulator
    assert any("INTERNAL" in r.getMessage() for r in caplog.records)
