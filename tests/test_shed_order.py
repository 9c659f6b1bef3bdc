"""The daemon's shed order and what the fast path takes from it, computed by hand: no
sockets, no clock (``scheduler.service.daemon.fastpath.shed_order`` and ``choose``).

Site: pue 1.25; miners "old" (3 kW, 50 TH/s) and "new" (3 kW, 100 TH/s), idle 0.1 kW;
GPUs "gpu" full 0.7 kW / 1,000 tok/s, low 0.35 kW / 600 tok/s, idle 0.05 kW."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from adapters.base import ModeRequest
from models.site import parse_site
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.fastpath import ShedStep, choose, shed_order
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_fleet

SITE = """
[site]
name = "order"
interconnect_kw = 100
pue = 1.25
base_load_kw = 2

[prices]
format = "demo"

[[devices]]
name = "new"
kind = "asic"
count = 2
idle_power_kw = 0.1
modes = [{ name = "stock", power_kw = 3.0, hashrate_ths = 100 }]

[[devices]]
name = "old"
kind = "asic"
count = 2
idle_power_kw = 0.1
modes = [{ name = "stock", power_kw = 3.0, hashrate_ths = 50 }]

[[devices]]
name = "gpu"
kind = "gpu"
count = 2
idle_power_kw = 0.05
modes = [
  { name = "full", power_kw = 0.7, throughput_tokens_s = 1000 },
  { name = "low", power_kw = 0.35, throughput_tokens_s = 600 },
]
"""


def _daemon(tmp_path: Path) -> Daemon:
    config = parse_site(tomllib.loads(SITE), "order.toml", str(tmp_path))
    clock = FakeClock()
    built, _ = memory_fleet(config.devices, clock)
    return Daemon(config, tmp_path / "s.db", clock=clock, built=built)


def test_miners_least_efficient_first_then_gpu_cap_downs_then_gpu_sleeps(
    tmp_path: Path,
) -> None:
    d = _daemon(tmp_path)
    d.devices.modes.update(
        {"new/0": "stock", "new/1": "stock", "old/0": "stock", "old/1": SLEEP, "gpu/0": "full"}
    )  # gpu/1 never read: counted at its top mode; old/1 asleep: nothing to shed
    order = shed_order(d.devices)
    assert [s.device_id for s in order] == [
        "old/0",
        "new/0",
        "new/1",
        "gpu/0",  # cap down
        "gpu/1",  # cap down
        "gpu/0",  # sleep
        "gpu/1",  # sleep
    ]
    miner = order[0]
    assert miner.request == ModeRequest("sleep") and miner.mode == SLEEP
    assert miner.saves_kw == pytest.approx(1.25 * (3.0 - 0.1))  # at the meter, no base load
    assert miner.tokens_lost == 0.0 and miner.alone is None
    down = order[3]
    assert down.mode == "low" and down.request == ModeRequest("run", 350.0)
    assert down.saves_kw == pytest.approx(1.25 * 0.35)
    assert down.tokens_lost == pytest.approx(400.0)
    sleep = order[5]
    assert sleep.mode == SLEEP and sleep.request == ModeRequest("sleep")
    assert sleep.saves_kw == pytest.approx(1.25 * (0.35 - 0.05))
    assert sleep.tokens_lost == pytest.approx(600.0)
    assert sleep.alone == pytest.approx((1.25 * (0.7 - 0.05), 1000.0))


def test_a_gpu_in_its_lowest_mode_has_only_its_sleep_step(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    d.devices.modes.update({"gpu/0": "low", "gpu/1": SLEEP})
    d.devices.modes.update({i: SLEEP for i in ("new/0", "new/1", "old/0", "old/1")})
    order = shed_order(d.devices)
    assert [(s.device_id, s.mode) for s in order] == [("gpu/0", SLEEP)]
    assert order[0].alone == pytest.approx((1.25 * 0.3, 600.0))


def _step(
    device: str,
    saves: float,
    lost: float = 0.0,
    sleep: bool = True,
    alone: tuple[float, float] | None = None,
) -> ShedStep:
    request = ModeRequest("sleep") if sleep else ModeRequest("run", 350.0)
    return ShedStep(device, request, SLEEP if sleep else "low", saves, lost, alone)


def test_choose_stops_once_the_excess_is_shed() -> None:
    order = [_step("a", 3.0), _step("b", 3.0), _step("c", 3.0)]
    assert list(choose(order, 3.0, set(), 0.0, 0.0, {})) == ["a"]
    assert list(choose(order, 3.5, set(), 0.0, 0.0, {})) == ["a", "b"]
    assert list(choose(order, 0.0, set(), 0.0, 0.0, {})) == []


def test_choose_keeps_committed_inference_and_counts_a_gpu_slept_whole() -> None:
    order = [
        _step("g0", 0.4, lost=400.0, sleep=False),
        _step("g1", 0.4, lost=400.0, sleep=False),
        _step("g0", 0.3, lost=600.0, alone=(0.8, 1000.0)),
        _step("g1", 0.3, lost=600.0, alone=(0.8, 1000.0)),
    ]
    # 2,000 tok/s served, 1,500 committed: one cap-down (1,600 left), no second, no sleep
    chosen = choose(order, 5.0, set(), 2000.0, 1500.0, {})
    assert {k: s.mode for k, s in chosen.items()} == {"g0": "low"}
    # nothing committed: both cap down, then both sleep (the sleep step replaces the first)
    chosen = choose(order, 5.0, set(), 2000.0, 0.0, {})
    assert {k: s.mode for k, s in chosen.items()} == {"g0": SLEEP, "g1": SLEEP}
    # a GPU whose cap-down was skipped sleeps from full: it saves and loses its whole mode
    chosen = choose(order[2:], 0.7, set(), 2000.0, 1000.0, {})
    assert {k: s.mode for k, s in chosen.items()} == {"g0": SLEEP}  # 0.8 kW >= 0.7 kW
    chosen = choose(order[2:], 0.7, set(), 2000.0, 1001.0, {})
    assert chosen == {}  # sleeping g0 whole would leave 1,000 < 1,001 tok/s


def test_choose_adds_what_a_device_draws_above_its_mode() -> None:
    order = [_step("a", 3.0), _step("b", 3.0)]
    assert list(choose(order, 4.0, set(), 0.0, 0.0, {"a": 1.0})) == ["a"]
    assert list(choose(order, 4.0, set(), 0.0, 0.0, {"a": 0.9})) == ["a", "b"]


def test_choose_tells_unread_devices_within_the_floor_but_counts_nothing_from_them() -> None:
    order = [
        _step("u", 3.0),
        _step("a", 3.0),
        _step("g", 0.3, lost=600.0),
    ]
    chosen = choose(order, 3.0, {"u", "g"}, 1000.0, 500.0, {})
    # "a" sheds the 3 kW; "u" is told too; unread "g" would break the floor: not told
    assert set(chosen) == {"a", "u"}
    chosen = choose(order, 3.0, {"u", "g"}, 1000.0, 400.0, {})
    assert set(chosen) == {"a", "u", "g"}
