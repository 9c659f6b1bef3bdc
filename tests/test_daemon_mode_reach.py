"""The daemon's plan offers a class's units only the modes those devices can reach
(scheduler/service/daemon/reach.py).

- Stock-firmware Antminers (``Family.ANTMINER_STOCK``: no power target, no presets) are
  woken at their own setting. At a price where eco is the best mode, the plan put them in
  eco and counted eco power and hashrate while they drew full power; now they are planned
  at their own-setting mode (the catalog's ``stock``, nearest the nameplate) or asleep.
- GPUs whose SM clock locks NVML refuses: the plan put every GPU in the clock mode and
  dispatch gave the refusing one a lock-free stand-in drawing more than planned; now the
  plan puts at most the GPUs that can lock in it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from adapters.base import DeviceInfo
from adapters.registry import Built
from adapters.sim.gpu import SimGpu
from models.devices import DeviceClass
from models.site import parse_site
from scheduler.planner.plan import Plan
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.reach import (
    class_reach,
    no_power_target,
    out_of_reach,
    own_setting_mode,
)
from tests.conftest import flat_series
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, run_open
from tests.test_gpu_mode_truth import CLOCK_MODE, GPU0
from tests.test_gpu_mode_truth import _daemon as _gpu_mode_daemon
from tests.test_gpu_mode_truth import _run as _gpu_run

#: 10 S19j Pro from the catalog (eco 2.135 kW / 80 TH/s, stock 3.05 kW / 100 TH/s, turbo
#: 3.8125 kW / 112 TH/s) at 0.24 USD per TH/s per day; at 270 USD/MWh eco earns most.
SITE = """
[site]
name = "stock firmware"
interconnect_kw = 100
pue = 1.0
base_load_kw = 0

[prices]
format = "demo"

[mining]
hashprice_usd_per_ths_day = 0.24
pool_fee = 0.0

[daemon]
horizon = "2h"
step = "5min"
stage_ahead_s = 0
confirm_after_s = 0

[[devices]]
name = "s19"
kind = "asic"
count = 10
model = "S19j Pro"
"""
PRICE = 270.0


@dataclass
class IdentifiedMiner(MemoryDevice):
    """A miner in memory that says who it is on connect, as the pyasic adapter does."""

    family: str = ""
    presets_w: tuple[float, ...] = ()

    async def connect(self) -> DeviceInfo:
        self.info = DeviceInfo(
            self.device_id,
            "asic",
            self.address,
            make="AntMiner",
            model="Antminer S19j Pro",
            firmware="Stock" if self.family == "antminer-stock" else "LuxOS",
            family=self.family,
            power_targets_w=self.presets_w,
        )
        return self.info


def _stock_daemon(tmp_path: Path, stock: int) -> tuple[Daemon, FakeClock]:
    """The site above; its first ``stock`` miners stock firmware, the rest LuxOS (presets)."""
    config = parse_site(tomllib.loads(SITE), "site.toml", str(tmp_path))
    clock = FakeClock()
    built = Built()
    (dc,) = config.devices
    for i in range(dc.count):
        lux = i >= stock
        dev = IdentifiedMiner(
            f"s19/{i}",
            "memory",
            clock=clock,
            dc=dc,
            target_w=dc.device_target_w("stock"),
            family="luxos" if lux else "antminer-stock",
            presets_w=tuple(m.power_kw * 1000.0 for m in dc.modes) if lux else (),
        )
        built.adapters.append(dev)
        built.groups[dev.device_id] = dc.name
    return Daemon(config, tmp_path / "state.db", clock=clock, built=built), clock


def _now_units(d: Daemon, plan: Plan, name: str) -> dict[str, int]:
    k = d.plans.index(d.clock.time())
    assert k is not None
    (cp,) = [c for c in plan.classes if c.name == name]
    return cp.units_at(k)


async def _plan_at_flat_price(d: Daemon, clock: FakeClock) -> Plan:
    start = int(clock.time()) - 3600
    d.feeds.prices = flat_series([PRICE] * 8, start_s=start, label="flat test prices")
    plan = await d.replan("test")
    assert plan is not None and plan.ok, None if plan is None else plan.notes
    return plan


def test_a_stock_firmware_class_is_planned_at_its_own_setting_never_eco(
    tmp_path: Path,
) -> None:
    d, clock = _stock_daemon(tmp_path, stock=10)

    async def body() -> None:
        plan = await _plan_at_flat_price(d, clock)
        units = _now_units(d, plan, "s19")
        assert units["eco"] == 0 and units["turbo"] == 0
        assert units["stock"] == 10  # at this price stock still pays: every miner runs
        (note,) = [n for n in plan.notes if n.startswith("s19: modes limited")]
        assert "eco to 0" in note and "turbo to 0" in note and "of 10 units" in note
        assert "10 stock-firmware miners: no power target" in note and "10 at stock" in note

    run_open(d, body)


def test_a_mixed_firmware_class_plans_no_more_units_in_eco_than_have_presets(
    tmp_path: Path,
) -> None:
    d, clock = _stock_daemon(tmp_path, stock=3)

    async def body() -> None:
        plan = await _plan_at_flat_price(d, clock)
        assert _now_units(d, plan, "s19") == {"eco": 7, "stock": 3, "turbo": 0}

    run_open(d, body)


def test_every_miner_with_presets_reaches_every_mode(tmp_path: Path) -> None:
    d, clock = _stock_daemon(tmp_path, stock=0)

    async def body() -> None:
        plan = await _plan_at_flat_price(d, clock)
        assert _now_units(d, plan, "s19") == {"eco": 10, "stock": 0, "turbo": 0}
        assert not [n for n in plan.notes if "modes limited" in n]

    run_open(d, body)


def test_the_own_setting_mode_is_the_one_nearest_the_nameplate() -> None:
    config = parse_site(tomllib.loads(SITE), "site.toml", ".")
    (dc,) = config.devices
    assert own_setting_mode(dc, None) == "stock"  # 3.05 kW: the catalog's S19j Pro
    # modes of the site file's own, the model reported by the miner: nearest 3,050 W
    own = DeviceClass.model_validate(
        {"name": "x", "kind": "asic", "count": 1,
         "modes": [{"name": "low", "power_kw": 2.0, "hashrate_ths": 70},
                   {"name": "mid", "power_kw": 3.1, "hashrate_ths": 100},
                   {"name": "high", "power_kw": 3.6, "hashrate_ths": 110}]}
    )  # fmt: skip
    info = DeviceInfo("x/0", "asic", "a", model="Antminer S19j Pro", family="antminer-stock")
    assert own_setting_mode(own, info) == "mid"
    # no model known anywhere: the highest-power mode (never less power than it may draw)
    assert own_setting_mode(own, None) == "high"
    # a miner not yet identified reaches every mode
    reach = class_reach(own, ["x/0"], lambda _: None, lambda _: frozenset())
    assert reach.by_mode == {"low": 1, "mid": 1, "high": 1} and reach.note("x") is None


def _gpu_daemon(tmp_path: Path) -> tuple[Daemon, list[SimGpu]]:
    """tests/test_gpu_mode_truth.py's two simulated H100s, committed to 800 tok/s: two
    GPUs' worth in the clock mode (452 tok/s at 0.19 kW, the least kW per token)."""
    return _gpu_mode_daemon(tmp_path, committed_tokens_s=800)


def test_gpus_refused_clock_locks_are_not_planned_in_the_clock_mode(tmp_path: Path) -> None:
    d, sims = _gpu_daemon(tmp_path)
    sims[0].fault = "clocks_unsupported"  # NVML NOT_SUPPORTED on GPU0's clock locks

    async def body() -> None:
        plan = await _plan_at_flat_price(d, d.clock)  # type: ignore[arg-type]
        (cp,) = [c for c in plan.classes if c.name == "h100"]
        clock_row = cp.modes.index(CLOCK_MODE)
        # the plan wants both GPUs in the clock mode: GPU0's lock is then refused
        assert cp.units_by_mode[clock_row, 0] == 2
        await d.dispatch()
        await d.poll(dispatch=False)
        assert d.devices.barred(GPU0) == {CLOCK_MODE}
        again = await d.replan("test")
        assert again is not None and again.ok
        (cp,) = [c for c in again.classes if c.name == "h100"]
        assert int(np.max(cp.units_by_mode[cp.modes.index(CLOCK_MODE)])) <= 1
        # the other GPU serves in a lock-free mode the plan counts as it draws
        assert int(np.min(cp.units_by_mode.sum(axis=0))) == 2
        (note,) = [n for n in again.notes if n.startswith("h100: modes limited")]
        assert f"{CLOCK_MODE} to 1 of 2 units" in note
        assert "1 GPUs refuse SM clock locks" in note

    _gpu_run(d, body)


@pytest.mark.parametrize("family", ["luxos", "braiins-os", "vnish", ""])
def test_families_with_a_power_target_or_no_family_are_not_limited(family: str) -> None:
    config = parse_site(tomllib.loads(SITE), "site.toml", ".")
    (dc,) = config.devices
    info = DeviceInfo("s19/0", "asic", "a", family=family)
    reach = class_reach(dc, ["s19/0"], lambda _: info, lambda _: frozenset())
    assert reach.by_mode == {"eco": 1, "stock": 1, "turbo": 1}


@pytest.mark.parametrize("family", ["whatsminer", "whatsminer-v3"])
def test_a_whatsminer_reaches_no_mode_above_its_standard_power(family: str) -> None:
    """pyasic's adjust_power_limit: "Cannot be higher than the ordinary power of the
    machine" (API v3 alike: the least of the user's limit and the standard power). The
    simulator held the turbo target (1.25 x nameplate) before session 25; a real miner
    runs at its standard power, and the read-back never shows turbo: the plan counted a
    mode the firmware cannot reach."""
    from scheduler.service.daemon.reach import out_of_reach

    config = parse_site(tomllib.loads(SITE), "site.toml", ".")
    (dc,) = config.devices
    ids = ["s19/0", "s19/1"]
    infos = {
        "s19/0": DeviceInfo("s19/0", "asic", "a", family=family),
        "s19/1": DeviceInfo("s19/1", "asic", "b", family="luxos"),
    }
    reach = class_reach(dc, ids, infos.__getitem__, lambda _: frozenset())
    assert reach.by_mode == {"eco": 2, "stock": 2, "turbo": 1}
    note = reach.note("s19") or ""
    assert "turbo to 1 of 2 units" in note and "standard power" in note, note
    assert out_of_reach(dc, infos["s19/0"], {}) == frozenset({"turbo"})
    assert out_of_reach(dc, infos["s19/1"], {}) == frozenset()


def test_dispatch_gives_eco_only_to_the_miners_that_can_take_it(tmp_path: Path) -> None:
    """The plan's 7 eco places go to the 7 miners with presets; the 3 stock-firmware ones
    get the stock places, even where they were told eco before (a stock miner sent eco
    runs at its own setting while dispatch counts it at eco)."""
    d, clock = _stock_daemon(tmp_path, stock=3)

    async def body() -> None:
        await d.poller.poll(dispatch=False)
        for i in range(3):  # the stock miners as a plan before the bound left them
            d.devices.modes[f"s19/{i}"] = "eco"
        await _plan_at_flat_price(d, clock)
        targets = d.dispatcher.targets(clock.time())
        assert {targets[f"s19/{i}"] for i in range(3)} == {"stock"}
        assert sorted(targets[f"s19/{i}"] for i in range(3, 10)) == ["eco"] * 7

    run_open(d, body)


def test_dispatch_gives_a_gpu_refused_its_lock_the_lock_free_twin_of_the_clock_mode(
    tmp_path: Path,
) -> None:
    """The plan made before GPU0's refusal wants both GPUs in the clock mode: dispatch
    sends the lock to GPU1 alone, and GPU0 its lock-free twin (``DeviceModes.instead``)."""
    d, sims = _gpu_daemon(tmp_path)
    sims[0].fault = "clocks_unsupported"

    async def body() -> None:
        await _plan_at_flat_price(d, d.clock)  # type: ignore[arg-type]
        await d.dispatch()
        await d.poll(dispatch=False)
        assert d.devices.barred(GPU0) == {CLOCK_MODE}
        twin = d.devices.instead["h100"][CLOCK_MODE]
        assert twin != CLOCK_MODE
        targets = d.dispatcher.targets(d.clock.time())
        (gpu1,) = [i for i in targets if i != GPU0]
        assert targets == {GPU0: twin, gpu1: CLOCK_MODE}

    _gpu_run(d, body)


def test_the_own_setting_mode_looks_at_the_reported_model_when_the_class_model_is_unknown() -> None:
    own = DeviceClass.model_validate(
        {"name": "x", "kind": "asic", "count": 1,
         "modes": [{"name": "low", "power_kw": 2.0, "hashrate_ths": 70},
                   {"name": "mid", "power_kw": 3.1, "hashrate_ths": 100},
                   {"name": "high", "power_kw": 3.6, "hashrate_ths": 110}]}
    )  # fmt: skip
    info = DeviceInfo("x/0", "asic", "a", model="Antminer S19j Pro", family="antminer-stock")
    unknown = own.model_copy(update={"model": "no such miner"})
    assert own_setting_mode(unknown, info) == "mid"  # the miner's own model, 3,050 W
    # the miner's model, not the class's highest-power mode, bars all but its own
    assert out_of_reach(own, info, {}) == {"low", "high"}
    # presets reported: every mode at or above the lowest preset is reachable, whatever
    # the family says
    with_presets = DeviceInfo(
        "x/0", "asic", "a", model="Antminer S19j Pro", family="antminer-stock",
        power_targets_w=(2000.0, 3000.0),
    )  # fmt: skip
    assert not no_power_target(with_presets) and out_of_reach(own, with_presets, {}) == set()


def test_the_own_setting_mode_is_nearest_to_the_watt() -> None:
    """3,050 W (the catalog's S19j Pro) lies 252 W above 2,798 W and 248 W below 3,298 W."""
    dc = DeviceClass.model_validate(
        {"name": "x", "kind": "asic", "count": 1,
         "modes": [{"name": "a", "power_kw": 2.798, "hashrate_ths": 90},
                   {"name": "b", "power_kw": 3.298, "hashrate_ths": 100}]}
    )  # fmt: skip
    info = DeviceInfo("x/0", "asic", "a", model="Antminer S19j Pro", family="antminer-stock")
    assert own_setting_mode(dc, info) == "b"


def test_an_offline_plan_bounds_simulated_firmware_and_says_what_it_cannot_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mixed-fleet walk (session 25, D3): `gridsched plan` on the mixed example counted
    stock Antminers in turbo and eco and Whatsminers in turbo, which their firmware never
    reaches, with no note; the daemon's own plan limited them. A simulated class's
    firmware is known from the site file: bounded the same way; a pyasic class's is not:
    said."""
    import json

    from scheduler.cli.main import main

    example = Path(__file__).resolve().parents[1] / "deploy/examples/mixed-firmware-site.toml"
    assert main(["plan", "--config", str(example), "--horizon", "2h", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    notes = " ".join(plan["notes"])
    assert "s19jpro-stock: modes limited (eco to 0, turbo to 0" in notes, notes
    assert "m50-whatsminer: modes limited (turbo to 0" in notes, notes
    site = tmp_path / "site.toml"
    site.write_text(
        example.read_text()
        .replace(
            'kind = "sim"\nsim_firmware = "antminer"',
            'kind = "pyasic"\nhosts = ["10.0.0.1-10.0.0.12"]',
        )
        .replace('sim_base = "127.7.1.0"\n', "")
    )
    assert main(["plan", "--config", str(site), "--horizon", "2h", "--json"]) == 0
    notes = " ".join(json.loads(capsys.readouterr().out)["notes"])
    assert "s19jpro-stock: the firmware is known once the miners answer" in notes, notes


def test_presets_round_a_mode_down_and_a_mode_below_the_lowest_is_out_of_reach() -> None:
    """A miner that sets power by presets (LuxOS profiles, VNish presets) runs a mode at the
    highest preset at or below its power (pyasic's ``set_power_limit``): turbo (3,812.5 W)
    at 3,627 W. The plan said nothing of it (session 25's walk). A mode below the lowest
    preset is none of them: LuxOS's adapter refuses it, another sets the lowest preset,
    more than the plan counts; so it is out of reach."""
    from scheduler.service.daemon.reach import out_of_reach

    config = parse_site(tomllib.loads(SITE), "site.toml", ".")
    (dc,) = config.devices
    presets = (2500.0, 3050.0, 3627.0)
    infos = {
        "s19/0": DeviceInfo("s19/0", "asic", "a", family="luxos", power_targets_w=presets),
        "s19/1": DeviceInfo("s19/1", "asic", "b", family="luxos", power_targets_w=presets),
        "s19/2": DeviceInfo("s19/2", "asic", "c", family="braiins-os"),
    }
    reach = class_reach(dc, list(infos), infos.__getitem__, lambda _: frozenset())
    assert reach.by_mode == {"eco": 1, "stock": 3, "turbo": 3}
    note = reach.note("s19") or ""
    assert "eco to 1 of 3 units" in note, note
    assert "2 miners set power by presets" in note, note
    assert "eco (2135 W) is below the lowest preset (2500 W)" in note, note
    assert "turbo (3812.5 W) runs at 3627 W" in note, note
    assert out_of_reach(dc, infos["s19/0"], {}) == frozenset({"eco"})
    assert out_of_reach(dc, infos["s19/2"], {}) == frozenset()


def test_presets_that_only_round_are_said_in_the_notes_without_a_limit() -> None:
    config = parse_site(tomllib.loads(SITE), "site.toml", ".")
    (dc,) = config.devices
    info = DeviceInfo("s19/0", "asic", "a", family="vnish", power_targets_w=(2100.0, 3050.0))
    reach = class_reach(dc, ["s19/0"], lambda _: info, lambda _: frozenset())
    assert reach.by_mode == {"eco": 1, "stock": 1, "turbo": 1}
    note = reach.note("s19") or ""
    assert "modes limited" not in note and "1 miners set power by presets" in note, note
    assert "eco (2135 W) runs at 2100 W" in note and "turbo (3812.5 W) runs at 3050 W" in note
    assert note.endswith("(modes at the presets' powers plan what the miners draw)"), note
