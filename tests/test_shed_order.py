"""The daemon's shed order and what the fast path takes from it, computed by hand: no
sockets, no clock (``scheduler.service.daemon.shedorder.shed_order`` and ``choose``).

Site: pue 1.25; miners "old" (3 kW, 50 TH/s) and "new" (3 kW, 100 TH/s), idle 0.1 kW;
GPUs "gpu" full 0.7 kW / 1,000 tok/s, low 0.35 kW / 600 tok/s, idle 0.05 kW."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.base import ModeRequest
from adapters.gpu import NvmlGpu
from models.devices import DeviceKind
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.shedorder import ShedStep, choose, shed_order
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import device_classes, site_text
from tests.test_daemon_mode_reach import _gpu_daemon, _plan_at_flat_price
from tests.test_gpu_mode_truth import CLOCK_MODE, GPU0
from tests.test_gpu_mode_truth import _run as _gpu_run


def _miners(name: str, ths: float, power_kw: float = 3.0) -> dict[str, Any]:
    """Two miners of one class, idle at 0.1 kW."""
    mode = {"name": "stock", "power_kw": power_kw, "hashrate_ths": ths}
    return {"name": name, "kind": "asic", "count": 2, "idle_power_kw": 0.1, "modes": [mode]}


def _site(low_tokens_s: int = 600) -> str:
    """The site above; ``low_tokens_s``: what a GPU serves in its low mode."""
    gpu = {
        "name": "gpu",
        "kind": "gpu",
        "count": 2,
        "idle_power_kw": 0.05,
        "modes": [
            {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000},
            {"name": "low", "power_kw": 0.35, "throughput_tokens_s": low_tokens_s},
        ],
    }
    return site_text(
        "order",
        pue=1.25,
        site={"base_load_kw": 2},
        hashprice=None,
        daemon=None,
        devices=device_classes(_miners("new", 100), _miners("old", 50), gpu),
    )


SITE = _site()


def _daemon(tmp_path: Path) -> Daemon:
    return memory_daemon(SITE, tmp_path)[0]


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


def test_choose_sheds_miners_even_when_inference_is_already_below_its_floor() -> None:
    # unread GPUs can leave what is served below the commitment: miners lose no tokens
    # and still shed
    order = [_step("m", 3.0), _step("u", 3.0)]
    assert set(choose(order, 2.0, {"u"}, 500.0, 1000.0, {})) == {"m", "u"}


def test_choose_keeps_the_floor_even_for_a_fraction_of_a_token() -> None:
    order = [_step("g", 0.3, lost=0.5), _step("h", 0.3, lost=0.5)]
    assert choose(order, 0.2, set(), 1000.0, 999.8, {}) == {}
    assert choose(order, 0.2, {"g", "h"}, 1000.0, 999.8, {}) == {}


def test_choose_skips_a_step_that_breaks_the_floor_and_goes_on_to_the_next() -> None:
    order = [
        _step("g0", 0.4, lost=400.0, sleep=False),
        _step("g1", 0.2, lost=100.0, sleep=False),
        _step("x", 0.5, sleep=False),
    ]
    chosen = choose(order, 0.5, set(), 1000.0, 700.0, {})
    assert set(chosen) == {"g1", "x"}  # g0 would leave 600 < 700; g1 leaves 900


def test_choose_does_not_take_a_second_run_step_of_a_device_and_goes_on() -> None:
    order = [_step("g", 0.3), _step("g", 0.4, sleep=False), _step("a", 3.0)]
    chosen = choose(order, 1.0, set(), 0.0, 0.0, {})
    assert {k: s.mode for k, s in chosen.items()} == {"g": SLEEP, "a": SLEEP}


def test_choose_tells_unread_devices_one_by_one_within_the_floor() -> None:
    order = [
        _step("a", 3.0),
        _step("u1", 0.3, lost=300.0),
        _step("u2", 0.3, lost=300.0),
        _step("u3", 3.0),
    ]
    chosen = choose(order, 1.0, {"u1", "u2", "u3"}, 1000.0, 500.0, {})
    # u1 fits (700 left), u2 would leave 400 < 500; the miner u3 after it is still told
    assert chosen == {"a": order[0], "u1": order[1], "u3": order[3]}


#: Two GPU classes, one GPU each, idle at 0.05 kW: "a" (full, low) and "b" (full, low, trickle).
GPU_A = {
    "name": "a",
    "kind": "gpu",
    "count": 1,
    "idle_power_kw": 0.05,
    "modes": [
        {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000},
        {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 700},
    ],
}
GPU_B = {
    "name": "b",
    "kind": "gpu",
    "count": 1,
    "idle_power_kw": 0.05,
    "modes": [
        {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000},
        {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 300},
        {"name": "trickle", "power_kw": 0.15, "throughput_tokens_s": 0.5},
    ],
}


def _classes_site(*classes: dict[str, Any]) -> str:
    """A site of these device classes (PUE unset, no base load)."""
    return site_text("two", pue=None, hashprice=None, daemon=None, devices=device_classes(*classes))


def test_gpu_steps_are_ordered_by_what_they_give_up_per_kw(tmp_path: Path) -> None:
    d, _ = memory_daemon(_classes_site(GPU_A, GPU_B), tmp_path)
    d.devices.modes.update({"a/0": "full", "b/0": "full"})
    order = [(s.device_id, s.mode) for s in shed_order(d.devices)]
    # cap-downs: b loses 999.5 tok/s for 0.55 kW, a 300 for 0.35 kW: a first (less per kW);
    # sleeps: b from trickle loses 0.5 tok/s for 0.1 kW, a from low 700 for 0.3 kW: b first
    assert order == [("a/0", "low"), ("b/0", "trickle"), ("b/0", SLEEP), ("a/0", SLEEP)]


def test_gpu_cap_downs_are_ordered_by_value_whatever_the_class_order(tmp_path: Path) -> None:
    d, _ = memory_daemon(_classes_site(GPU_B, GPU_A), tmp_path)
    d.devices.modes.update({"a/0": "full", "b/0": "full"})
    order = [(s.device_id, s.mode) for s in shed_order(d.devices)]
    assert order[:2] == [("a/0", "low"), ("b/0", "trickle")]


SITE_MIXED = _classes_site(GPU_A, GPU_B, _miners("s19", 90), _miners("s9", 13.5, power_kw=1.4))


def test_the_daemons_order_is_the_planners_shedding_order_on_a_mixed_fleet(
    tmp_path: Path,
) -> None:
    """The shed order is written over class-modes in the planner (shedding.py: rounding,
    baselines) and over devices in the daemon's fast path; both rank with the same
    value_per_kw in the same three tiers. Pinned here on miners and two GPU classes."""
    from models.market import demo_prices
    from scheduler.planner.inputs import assemble_inputs
    from scheduler.planner.shedding import downcap_order, mining_order, sleep_order
    from scheduler.planner.timegrid import uniform_grid

    clock = FakeClock()
    d, _ = memory_daemon(SITE_MIXED, tmp_path, clock)
    config = d.config
    top = {dc.name: max(dc.modes, key=lambda m: m.power_kw).name for dc in config.devices}
    d.devices.modes.update({i: top[i.split("/")[0]] for i in d.fleet.status})
    daemon: list[tuple[str, str]] = []
    for step in shed_order(d.devices):
        dc = d.devices.class_of(step.device_id)
        tier = "mine" if dc.kind is DeviceKind.ASIC else "sleep" if step.mode == SLEEP else "down"
        key = (tier, dc.name)
        if key not in daemon:
            daemon.append(key)
    t0 = int(clock.time()) // 300 * 300
    inp = assemble_inputs(config, uniform_grid(t0, 3600, 300), demo_prices(t0, t0 + 3600, "UTC"))
    name = [inp.class_names[c] for c in inp.cm_class]
    lows = {low for _, low in downcap_order(inp)}
    planner = [("mine", name[k]) for k in mining_order(inp)]
    planner += [("down", name[k]) for k, _ in downcap_order(inp)]
    planner += [("sleep", name[k]) for k in sleep_order(inp) if k in lows]  # from their lows
    dedup: list[tuple[str, str]] = []
    for key in planner:
        if key not in dedup:
            dedup.append(key)
    assert daemon == dedup
    assert daemon[:2] == [("mine", "s9"), ("mine", "s19")]  # least TH/s per kW first


def test_the_daemon_works_its_order_out_again_only_when_a_mode_changed(tmp_path: Path) -> None:
    """Every poll asks for the order; it is the same list until a device's mode changes,
    however the mode was set (a command, a reading, a drift), and then follows it."""
    d = _daemon(tmp_path)
    d.devices.modes.update({i: "stock" for i in ("new/0", "new/1", "old/0", "old/1")})
    d.devices.modes.update({"gpu/0": "full", "gpu/1": "full"})
    d.shedder.refresh()
    kept = d.shedder.order
    d.shedder.refresh()  # nothing changed: not worked out again
    assert d.shedder.order is kept
    assert [s.device_id for s in kept[:4]] == ["old/0", "old/1", "new/0", "new/1"]
    d.devices.modes["old/0"] = SLEEP  # set in place, as a poll's reading does
    d.shedder.refresh()
    assert d.shedder.order == shed_order(d.devices)
    assert [s.device_id for s in d.shedder.order[:3]] == ["old/1", "new/0", "new/1"]
    d.devices.modes["gpu/1"] = "low"
    d.shedder.refresh()
    assert [(s.device_id, s.mode) for s in d.shedder.order if s.device_id == "gpu/1"] == [
        ("gpu/1", SLEEP)
    ]


def test_a_gpu_refused_its_clock_lock_is_never_stepped_down_into_the_clock_mode(
    tmp_path: Path,
) -> None:
    """Two simulated H100s in 350 W; GPU0 refuses SM clock locks. Its cap down goes to the
    200 W mode (0.20 kW), not the clock mode (0.19 kW, the lowest): a lock it would refuse
    in the middle of a curtail. Once its lock retry is due, the order is worked out again
    with no mode changed, and the clock mode is its step down again."""
    d, sims = _gpu_daemon(tmp_path)
    sims[0].fault = "clocks_unsupported"
    clock = d.clock
    assert isinstance(clock, FakeClock)

    def down(device_id: str) -> str:
        (step,) = [s for s in d.shedder.order if s.device_id == device_id and s.mode != SLEEP]
        return step.mode

    async def body() -> None:
        await _plan_at_flat_price(d, clock)
        await d.dispatch()
        await d.poll(dispatch=False)
        assert d.devices.barred(GPU0) == {CLOCK_MODE}
        modes = dict(d.devices.modes)
        assert modes[GPU0] == "infer@350W"
        assert down(GPU0) == "infer@200W"
        adapter = d.fleet.by_id[GPU0]
        assert isinstance(adapter, NvmlGpu)
        adapter.lock_retry_s = 0.0  # the retry is due (the adapter's own monotonic clock)
        assert not d.devices.barred(GPU0)
        d.shedder.refresh()
        assert d.devices.modes == modes and down(GPU0) == CLOCK_MODE

    _gpu_run(d, body)


def test_miners_shed_before_a_gpu_cap_down_that_loses_no_tokens(tmp_path: Path) -> None:
    """A cap down that serves as much (decode is memory-bound) is worth 0 per kW, less than
    any miner's hashrate: it still comes after every miner (the planner's order)."""
    d = memory_daemon(_site(low_tokens_s=1000), tmp_path)[0]
    d.devices.modes.update({"new/0": "stock", "old/0": "stock", "gpu/0": "full"})
    d.devices.modes.update({"new/1": SLEEP, "old/1": SLEEP, "gpu/1": SLEEP})
    order = shed_order(d.devices)
    assert [(s.device_id, s.mode) for s in order] == [
        ("old/0", SLEEP),
        ("new/0", SLEEP),
        ("gpu/0", "low"),
        ("gpu/0", SLEEP),
    ]
    assert order[2].tokens_lost == 0.0
