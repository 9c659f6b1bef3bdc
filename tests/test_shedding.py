"""The fixed shed order, by hand: which units go, how many, and what is never shed.

Mutation testing (make mutation) found 88 of shed_to_limit's mutants surviving the
planner and backtest tests: nothing checked its counts exactly. Every figure below is
worked out in the comments.

Site (PUE 1, no base load): 10 "old" miners at 3 kW for 60 TH/s (20 TH/s per kW), 10
"new" miners at 3 kW for 150 TH/s (50 TH/s per kW), 4 H100s with modes full (0.7 kW,
2,000 tok/s) and low (0.35 kW, 1,400 tok/s), idle 0.07 kW. Class-modes k: 0 old, 1 new,
2 h100 full, 3 h100 low. A woken unit adds its mode's power less idle: 3, 3, 0.63, 0.28 kW.
Everything on (10, 10, 4 full, 0 low): 4 x 0.07 + 30 + 30 + 4 x 0.63 = 62.8 kW.
"""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.planner.inputs import PlanInputs, assemble_inputs
from scheduler.planner.rounding import import_kw
from scheduler.planner.shedding import (
    downcap_order,
    mining_order,
    shed_to_limit,
    sleep_order,
    value_per_kw,
)
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import T0, flat_series, make_site

DEVICES = [
    {"name": "old", "kind": "asic", "count": 10,
     "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 60.0}]},
    {"name": "new", "kind": "asic", "count": 10,
     "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 150.0}]},
    {"name": "h100", "kind": "gpu", "count": 4, "idle_power_kw": 0.07,
     "modes": [{"name": "full", "power_kw": 0.7, "throughput_tokens_s": 2000.0},
               {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 1400.0}]},
]  # fmt: skip
ALL_ON = [10, 10, 4, 0]


def _inputs(committed: float = 0.0, steps: int = 1) -> PlanInputs:
    site = make_site(devices=DEVICES, inference={"committed_tokens_s": committed})
    grid = uniform_grid(T0, steps * 3600, 3600)
    return assemble_inputs(site, grid, flat_series([50.0] * steps))


def _shed(inp: PlanInputs, limit: list[float], n0: list[int] = ALL_ON) -> list[list[int]]:
    n = np.repeat(np.array(n0, dtype=np.int64)[:, None], inp.T, axis=1)
    before = n.copy()
    out = shed_to_limit(inp, n, np.array(limit))
    assert (n == before).all()  # the caller's array is never changed
    return out.T.tolist()


def test_the_site_is_as_the_comments_say() -> None:
    inp = _inputs()
    assert inp.marginal_kw.tolist() == pytest.approx([3.0, 3.0, 0.63, 0.28])
    n = np.array(ALL_ON)[:, None]
    assert import_kw(inp, n).tolist() == pytest.approx([62.8])


def test_miners_shed_least_hashrate_per_kw_first() -> None:
    inp = _inputs()
    assert mining_order(inp).tolist() == [0, 1]  # 20 TH/s per kW before 50
    # 62.8 - 50 = 12.8 kW over: ceil(12.8 / 3) = 5 old miners, none of the new
    assert _shed(inp, [50.0]) == [[5, 10, 4, 0]]
    # 42.8 over: all 10 old (30 kW), then ceil(12.8 / 3) = 5 new
    assert _shed(inp, [20.0]) == [[0, 5, 4, 0]]


def test_each_step_is_shed_to_its_own_limit() -> None:
    inp = _inputs(steps=3)
    assert _shed(inp, [50.0, 20.0, 100.0]) == [[5, 10, 4, 0], [0, 5, 4, 0], [10, 10, 4, 0]]


def test_a_limit_met_changes_nothing() -> None:
    inp = _inputs()
    assert _shed(inp, [62.8]) == [ALL_ON]
    assert _shed(inp, [1000.0]) == [ALL_ON]


def test_serving_units_step_down_before_sleeping_and_keep_committed_throughput() -> None:
    inp = _inputs(committed=4000.0)
    # miners all asleep leaves 0.28 + 4 x 0.63 = 2.8 kW; 0.8 over a 2 kW limit. Full -> low
    # saves 0.35 kW and loses 600 tok/s a unit; 4,000 spare tok/s allow 6; ceil(0.8 / 0.35)
    # = 3 move down: 1 full + 3 low = 6,200 tok/s
    assert _shed(inp, [2.0]) == [[0, 0, 1, 3]]


def test_serving_units_sleep_only_down_to_the_committed_floor() -> None:
    inp = _inputs(committed=4000.0)
    # 2.3 kW over a 0.5 kW limit: all 4 move down (1.4 kW; 4 x 1,400 = 5,600 tok/s), 0.9
    # over. Sleeping a low unit saves 0.28 kW and 1,400 tok/s; 1,600 spare allow one: 3 low
    # stay (4,200 >= 4,000 tok/s) and the limit is not met: committed inference wins
    out = _shed(inp, [0.5])
    assert out == [[0, 0, 0, 3]]
    assert 1400.0 * out[0][3] >= 4000.0
    # with nothing committed the same limit sleeps all four: ceil(0.9 / 0.28) = 4
    assert _shed(_inputs(committed=0.0), [0.5]) == [[0, 0, 0, 0]]


def test_value_per_kw_never_divides_by_zero() -> None:
    assert value_per_kw(np.array([10.0]), np.array([2.0])).tolist() == [5.0]
    assert np.isfinite(value_per_kw(1.0, 0.0)).all()


def _site(devices: list[dict[str, object]], committed: float = 0.0) -> PlanInputs:
    site = make_site(devices=devices, inference={"committed_tokens_s": committed})
    return assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))


def test_the_order_is_by_value_not_by_the_order_classes_are_listed() -> None:
    inp = _site([DEVICES[1], DEVICES[0]])  # new (50 TH/s per kW) listed before old (20)
    assert mining_order(inp).tolist() == [1, 0]
    # 60.28 kW with both classes on; 10.28 over a 50 kW limit: ceil(10.28 / 3) = 4 old
    n = np.array([[10], [10]])
    assert shed_to_limit(inp, n, np.array([50.0]))[:, 0].tolist() == [10, 6]


def test_equal_value_sheds_in_the_order_listed() -> None:
    twin = {**DEVICES[0], "name": "old2"}
    inp = _site([DEVICES[0], twin])
    assert mining_order(inp).tolist() == [0, 1]
    n = np.array([[10], [10]])
    assert shed_to_limit(inp, n, np.array([54.0]))[:, 0].tolist() == [8, 10]


def test_a_mode_that_adds_no_power_is_never_shed() -> None:
    idle_only = {
        "name": "warm",
        "kind": "asic",
        "count": 5,
        "idle_power_kw": 1.0,
        "modes": [{"name": "warm", "power_kw": 1.0, "hashrate_ths": 1.0}],
    }
    inp = _site([idle_only, DEVICES[0]])
    assert mining_order(inp).tolist() == [1]  # shedding it would save nothing
    n = np.array([[5], [10]])
    # 5 x 1 kW idle + 30 kW = 35 kW; 3 over a 32 kW limit: one old miner, the 5 stay
    assert shed_to_limit(inp, n, np.array([32.0]))[:, 0].tolist() == [5, 9]


def test_each_gpu_class_steps_down_to_its_own_lowest_mode() -> None:
    a100 = {
        "name": "a100",
        "kind": "gpu",
        "count": 2,
        "idle_power_kw": 0.05,
        "modes": [
            {"name": "full", "power_kw": 0.4, "throughput_tokens_s": 900.0},
            {"name": "low", "power_kw": 0.1, "throughput_tokens_s": 200.0},
        ],
    }
    inp = _site([DEVICES[2], a100], committed=100.0)
    # k: 0 h100 full, 1 h100 low, 2 a100 full, 3 a100 low; marginal 0.63 0.28 0.35 0.05.
    # All full: 0.28 + 0.1 idle + 4 x 0.63 + 2 x 0.35 = 3.6 kW; a 3.0 kW limit is 0.6 over.
    # Stepping down loses 600 / 0.35 = 1,714 tok/s per kW on an H100, 700 / 0.3 = 2,333 on
    # an A100: two H100s step down (0.7 kW) to the H100's low mode, none to the A100's
    n = np.array([[4], [0], [2], [0]])
    assert shed_to_limit(inp, n, np.array([3.0]))[:, 0].tolist() == [2, 2, 2, 0]


def test_stepping_down_stops_at_the_committed_floor_too() -> None:
    inp = _inputs(committed=7000.0)
    # 8,000 tok/s served, 7,000 committed: 1,000 spare allows one H100 down (600 tok/s),
    # not the three that 0.8 kW over a 2 kW limit would take; sleeping a unit would lose
    # more than the 400 left, so the limit stays unmet and inference is kept
    out = _shed(inp, [2.0])
    assert out == [[0, 0, 3, 1]]
    assert 2000.0 * out[0][2] + 1400.0 * out[0][3] >= 7000.0


A100 = {
    "name": "a100",
    "kind": "gpu",
    "count": 2,
    "idle_power_kw": 0.05,
    "modes": [
        {"name": "full", "power_kw": 0.4, "throughput_tokens_s": 900.0},
        {"name": "low", "power_kw": 0.1, "throughput_tokens_s": 200.0},
    ],
}


def test_units_already_in_the_low_mode_stay_there_when_others_join() -> None:
    inp = _inputs(committed=0.0)
    # 2 full + 2 low: 0.28 + 2 x 0.63 + 2 x 0.28 = 2.1 kW; 0.3 over 1.8 kW: one full steps
    # down (0.35 kW) and joins the two already low
    assert _shed(inp, [1.8], [0, 0, 2, 2]) == [[0, 0, 1, 3]]


def test_no_unit_steps_down_when_the_committed_floor_leaves_no_room() -> None:
    inp = _inputs(committed=7800.0)
    # 8,000 served, 7,800 committed: 200 spare is less than the 600 a step down loses
    assert _shed(inp, [2.0]) == [[0, 0, 4, 0]]


def test_the_cheaper_step_down_goes_first_whatever_the_listing() -> None:
    inp = _site([A100, DEVICES[2]], committed=0.0)
    # k: 0 a100 full, 1 a100 low, 2 h100 full, 3 h100 low; marginal 0.35 0.05 0.63 0.28.
    # Stepping down loses 2,333 tok/s per kW on an A100 and 1,714 on an H100: the H100s go
    # first although listed second. All full: 0.1 + 0.28 + 0.7 + 2.52 = 3.6 kW; 0.5 over
    # 3.1 kW: ceil(0.5 / 0.35) = 2 H100s down
    n = np.array([[2], [0], [4], [0]])
    assert shed_to_limit(inp, n, np.array([3.1]))[:, 0].tolist() == [2, 0, 2, 2]


def test_a_single_mode_gpu_class_is_put_to_sleep_when_it_must() -> None:
    one_mode = {
        "name": "l4",
        "kind": "gpu",
        "count": 4,
        "idle_power_kw": 0.02,
        "modes": [{"name": "serve", "power_kw": 0.07, "throughput_tokens_s": 300.0}],
    }
    inp = _site([one_mode], committed=0.0)
    # 4 x 0.02 + 4 x 0.05 = 0.28 kW; 0.1 over 0.18 kW: ceil(0.1 / 0.05) = 2 sleep
    assert shed_to_limit(inp, np.array([[4]]), np.array([0.18]))[:, 0].tolist() == [2]


def test_sleeping_serving_units_stops_once_the_limit_is_met_across_classes() -> None:
    inp = _site([DEVICES[2], A100], committed=0.0)
    # k: 0 h100 full, 1 h100 low, 2 a100 full, 3 a100 low. Already low everywhere:
    # 0.28 + 0.1 + 4 x 0.28 + 2 x 0.05 = 1.6 kW; 0.5 over 1.1 kW. Sleeping order, fewest
    # tok/s per kW first: h100 low (5,000), then a100 low (4,000)? No: a100 low is 200 /
    # 0.05 = 4,000 < 5,000, so the A100s sleep first (0.1 kW), then ceil(0.4 / 0.28) = 2
    # H100s; nothing more
    n = np.array([[0], [4], [0], [2]])
    assert shed_to_limit(inp, n, np.array([1.1]))[:, 0].tolist() == [0, 2, 0, 0]


def test_a_miner_that_adds_under_one_kw_is_shed_like_any_other() -> None:
    # small miners: 0.9 kW for 13.5 TH/s (15 TH/s per kW), listed after the new ones (50):
    # 9 + 30 = 39 kW, 2 over a 37 kW limit: ceil(2 / 0.9) = 3 small ones go, no new one
    small = {"name": "small", "kind": "asic", "count": 10,
             "modes": [{"name": "stock", "power_kw": 0.9, "hashrate_ths": 13.5}]}  # fmt: skip
    inp = _site([DEVICES[1], small])
    assert mining_order(inp).tolist() == [1, 0]
    n = np.array([[10], [10]])
    assert shed_to_limit(inp, n, np.array([37.0]))[:, 0].tolist() == [10, 7]


def _many(template: list[dict[str, object]], classes: int) -> list[dict[str, object]]:
    """``classes`` device classes, alternating between the templates, named apart."""
    return [{**template[c % len(template)], "name": f"rack{c:02d}"} for c in range(classes)]


def test_equal_value_keeps_the_listed_order_on_a_site_of_many_classes() -> None:
    # numpy's default sort reorders equal keys once there are more than 16 of them; the
    # order must not depend on that: 20 racks alternating old (20 TH/s per kW) and new
    # (50): the old ones first, each kind in the order listed
    inp = _site(_many([DEVICES[0], DEVICES[1]], 20))
    assert mining_order(inp).tolist() == [*range(0, 20, 2), *range(1, 20, 2)]
    # 20 GPU classes alternating H100s and A100s; class c has modes 2c (full), 2c + 1 (low).
    # Sleep order by tok/s per kW: A100 full 2,571, H100 full 3,175, A100 low 4,000, H100
    # low 5,000; stepping down loses 1,714 per kW on an H100, 2,333 on an A100
    inp = _site(_many([DEVICES[2], A100], 20))
    h100s, a100s = range(0, 20, 2), range(1, 20, 2)
    assert sleep_order(inp).tolist() == [
        *(2 * c for c in a100s),
        *(2 * c for c in h100s),
        *(2 * c + 1 for c in a100s),
        *(2 * c + 1 for c in h100s),
    ]
    assert downcap_order(inp) == [(2 * c, 2 * c + 1) for c in [*h100s, *a100s]]


def test_a_site_without_gpus_has_nothing_to_step_down_or_put_to_sleep() -> None:
    inp = _inputs()
    miners_only = _site([DEVICES[0], DEVICES[1]])
    assert downcap_order(miners_only) == [] and sleep_order(miners_only).tolist() == []
    assert downcap_order(inp) == [(2, 3)] and sleep_order(inp).tolist() == [2, 3]


def test_the_step_down_order_is_by_tokens_lost_per_kw_saved() -> None:
    # a class whose low mode saves little: full 1.0 kW, 3,000 tok/s; low 0.9 kW, 2,700
    # tok/s (300 tok/s lost for 0.1 kW: 3,000 per kW); the H100's step down loses 1,714
    # per kW, so it goes first although it saves more kW (0.35 against 0.1)
    hot = {"name": "hot", "kind": "gpu", "count": 2,
           "modes": [{"name": "full", "power_kw": 1.0, "throughput_tokens_s": 3000.0},
                     {"name": "low", "power_kw": 0.9, "throughput_tokens_s": 2700.0}]}  # fmt: skip
    inp = _site([hot, DEVICES[2]])
    assert downcap_order(inp) == [(2, 3), (0, 1)]
    # 2 + 0.28 + 2.52 = 4.8 kW, 0.5 over 4.3 kW: ceil(0.5 / 0.35) = 2 H100s down
    n = np.array([[2], [0], [4], [0]])
    assert shed_to_limit(inp, n, np.array([4.3]))[:, 0].tolist() == [2, 0, 2, 2]


def test_a_serving_mode_that_adds_no_power_is_not_put_to_sleep() -> None:
    # 5 warm miners (their one mode draws the 1 kW idle: a unit adds 0 kW) and the H100s:
    # 5 + 0.28 + 2.52 = 7.8 kW, 1.8 over 6 kW. No miner to shed (sleeping a warm one saves
    # nothing); all 4 H100s step down (1.4 kW), then ceil(0.4 / 0.28) = 2 sleep
    warm = {"name": "warm", "kind": "asic", "count": 5, "idle_power_kw": 1.0,
            "modes": [{"name": "warm", "power_kw": 1.0, "hashrate_ths": 1.0}]}  # fmt: skip
    inp = _site([warm, DEVICES[2]])
    assert sleep_order(inp).tolist() == [1, 2]
    n = np.array([[5], [4], [0]])
    assert shed_to_limit(inp, n, np.array([6.0]))[:, 0].tolist() == [5, 0, 2]


def test_a_step_down_that_loses_no_tokens_is_taken_at_the_committed_floor() -> None:
    # decode is memory-bound: a mode at 0.5 kW serves the 2,000 tok/s of full (0.7 kW).
    # Committed 8,000 = all served: no spare, yet moving down loses nothing. 0.28 + 4 x
    # 0.63 = 2.8 kW, 0.3 over 2.5 kW: ceil(0.3 / 0.2) = 2 units step down
    modes = [
        {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 2000.0},
        {"name": "tuned", "power_kw": 0.5, "throughput_tokens_s": 2000.0},
    ]
    tuned = {**DEVICES[2], "modes": modes}
    inp = _site([tuned], committed=8000.0)
    assert shed_to_limit(inp, np.array([[4], [0]]), np.array([2.5]))[:, 0].tolist() == [2, 2]


def test_stepping_down_may_go_exactly_to_the_committed_floor() -> None:
    inp = _inputs(committed=6800.0)
    # 8,000 served, 1,200 spare: exactly two step downs (600 each), not one. 0.8 kW over
    # 2 kW wants three; two leave 0.1 over, and nothing can sleep with no spare left
    out = _shed(inp, [2.0])
    assert out == [[0, 0, 2, 2]]
    assert 2000.0 * out[0][2] + 1400.0 * out[0][3] == 6800.0


def test_a_step_down_goes_to_a_serving_mode_never_to_one_that_serves_nothing() -> None:
    # a GPU class that may also mine (0.3 kW for 5 TH/s, the least power of its modes):
    # stepping down from full goes to low (the lowest-power mode that serves), and low has
    # nothing below it; a unit moved to mining would serve nothing
    modes = [
        {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 2000.0},
        {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 1400.0},
        {"name": "mine", "power_kw": 0.3, "hashrate_ths": 5.0},
    ]
    flex = {**DEVICES[2], "modes": modes}
    inp = _site([flex])
    assert inp.tput_tok_s.tolist() == [2000.0, 1400.0, 0.0]
    assert downcap_order(inp) == [(0, 1)]
    # 0.28 + 4 x 0.63 = 2.8 kW, 0.3 over 2.5 kW: ceil(0.3 / 0.35) = 1 unit to low
    n = np.array([[4], [0], [0]])
    assert shed_to_limit(inp, n, np.array([2.5]))[:, 0].tolist() == [3, 1, 0]
