"""Braiins OS+'s tuner power-target range: read once at connect (``ConfigurationService/
GetConstraints`` -> ``tuner_constraints.power_target`` {default, min, max}, bos-plus-api
``constraints.proto``, ``performance.proto``) into ``DeviceInfo.min_power_w`` /
``max_power_w`` (adapters/braiins.py ``tuner_range``, adapters/asic.py), and the plan's
reach bounded by it (scheduler/service/daemon/reach.py).

Before this, the adapter never asked: the planner could plan, and dispatch send, a target
outside the range, which the firmware (the simulator, by assumption) refuses with
INVALID_ARGUMENT. A firmware without the call (UNIMPLEMENTED) keeps None: nothing known
limits it, logged once, not a failure of the device.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
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
from adapters.registry import Built
from adapters.sim.braiins import BraiinsSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from models.site import parse_site
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.reach import class_reach, out_of_reach
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, run_open
from tests.support.simfleet import FAST, loopback_host, run
from tests.test_daemon_mode_reach import SITE, _now_units, _plan_at_flat_price


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


def _s19() -> Any:
    (dc,) = parse_site(tomllib.loads(SITE), "site.toml", ".").devices
    return dc  # S19j Pro: eco 2135 W, stock 3050 W, turbo 3812.5 W


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


# -- the plan's reach -------------------------------------------------------------------------


def test_a_mode_outside_the_range_read_from_the_simulator_is_out_of_reach() -> None:
    dc = _s19()
    info, _m, _calls = _connected("bos/c3", power_range_w=(2000.0, 3200.0))
    assert out_of_reach(dc, info, {}) == frozenset({"turbo"})
    other = DeviceInfo("bos/c4", "asic", "b", family="braiins-os")  # no range known
    reach = class_reach(dc, ["bos/c3", "bos/c4"], {"bos/c3": info, "bos/c4": other}.get,
                        lambda _: frozenset())  # fmt: skip
    assert reach.by_mode == {"eco": 2, "stock": 2, "turbo": 1}
    note = reach.note("s19") or ""
    assert "turbo to 1 of 2 units" in note, note
    assert "1 miners' firmware takes power targets only in [2000, 3200] W" in note, note


def test_a_mode_below_the_range_is_out_of_reach_and_each_range_is_named() -> None:
    dc = _s19()
    infos = {
        "a": DeviceInfo("a", "asic", "a", family="braiins-os", min_power_w=2500.0,
                        max_power_w=7000.0),
        "b": DeviceInfo("b", "asic", "b", family="braiins-os", min_power_w=2000.0,
                        max_power_w=3050.0),  # stock's 3050 W is in
    }  # fmt: skip
    assert out_of_reach(dc, infos["a"], {}) == frozenset({"eco"})
    assert out_of_reach(dc, infos["b"], {}) == frozenset({"turbo"})
    reach = class_reach(dc, ["a", "b"], infos.get, lambda _: frozenset())
    assert reach.by_mode == {"eco": 1, "stock": 2, "turbo": 1}
    note = reach.note("s19") or ""
    assert "[2500, 7000] W" in note and "[2000, 3050] W" in note, note


def test_a_range_that_takes_every_mode_limits_nothing() -> None:
    dc = _s19()
    info = DeviceInfo("a", "asic", "a", family="braiins-os", min_power_w=852.0,
                      max_power_w=7111.0)  # fmt: skip
    reach = class_reach(dc, ["a"], lambda _: info, lambda _: frozenset())
    assert reach.by_mode == {"eco": 1, "stock": 1, "turbo": 1} and reach.note("s19") is None


@pytest.mark.parametrize("family", ["luxos", "vnish"])
def test_presets_bounds_are_not_a_range_that_bars_modes(family: str) -> None:
    """LuxOS and VNish report their presets' bounds as min/max: a target between them or
    above them maps to a preset (adapters.payloads.choose_preset), as before; not a range.
    A target below the lowest preset is none (session 26: LuxOS refuses it, VNish would set
    the lowest preset, more than the plan counts), so eco (2,135 W) is out of reach, by the
    presets' rule, not a range's: a range would bar turbo (3,812.5 W) too."""
    dc = _s19()
    info = DeviceInfo("a", "asic", "a", family=family, power_targets_w=(2500.0, 3000.0),
                      min_power_w=2500.0, max_power_w=3000.0)  # fmt: skip
    assert out_of_reach(dc, info, {}) == frozenset({"eco"})


# -- the daemon: the plan and dispatch ------------------------------------------------------


@dataclass
class RangedMiner(MemoryDevice):
    """A miner in memory that says, on connect, the tuner's range Braiins OS+ gave."""

    range_w: tuple[float, float] | None = None

    async def connect(self) -> DeviceInfo:
        lo, hi = self.range_w or (None, None)
        self.info = DeviceInfo(
            self.device_id, "asic", self.address, make="AntMiner",
            model="Antminer S19j Pro", firmware="BOS+", family="braiins-os",
            min_power_w=lo, max_power_w=hi,
        )  # fmt: skip
        return self.info


def _daemon(tmp_path: Path, ranged: int) -> tuple[Daemon, FakeClock]:
    """10 S19j Pro on Braiins OS+; the first ``ranged`` take targets only in
    [2500, 7000] W (eco's 2135 W is below), the others reported no range."""
    config = parse_site(tomllib.loads(SITE), "site.toml", str(tmp_path))
    clock, built = FakeClock(), Built()
    (dc,) = config.devices
    for i in range(dc.count):
        dev = RangedMiner(f"s19/{i}", "memory", clock=clock, dc=dc,
                          target_w=dc.device_target_w("stock"),
                          range_w=(2500.0, 7000.0) if i < ranged else None)  # fmt: skip
        built.adapters.append(dev)
        built.groups[dev.device_id] = dc.name
    return Daemon(config, tmp_path / "state.db", clock=clock, built=built), clock


def test_the_plan_puts_in_eco_only_the_miners_whose_range_takes_it(tmp_path: Path) -> None:
    d, clock = _daemon(tmp_path, ranged=4)

    async def body() -> None:
        await d.poller.poll(dispatch=False)
        plan = await _plan_at_flat_price(d, clock)  # eco earns most at this price
        assert _now_units(d, plan, "s19") == {"eco": 6, "stock": 4, "turbo": 0}
        (note,) = [n for n in plan.notes if n.startswith("s19: modes limited")]
        assert "eco to 6 of 10 units" in note, note
        assert "4 miners' firmware takes power targets only in [2500, 7000] W" in note, note
        # dispatch sends eco (2135 W) to none of the four, even those told eco before
        for i in range(4):
            d.devices.modes[f"s19/{i}"] = "eco"
        targets = d.dispatcher.targets(clock.time())
        assert {targets[f"s19/{i}"] for i in range(4)} == {"stock"}
        assert sorted(targets[f"s19/{i}"] for i in range(4, 10)) == ["eco"] * 6
        # a miner's target is never clamped into its range (that is a GPU's power limit)
        assert d.devices.limit_w("s19/0", "eco") == 2135.0

    run_open(d, body)
