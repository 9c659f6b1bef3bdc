"""Rounding the LP's fractional units to whole ones, by hand: each figure worked out below.

Mutation testing (make mutation) of ``scheduler/planner/rounding.py`` showed what the
planner tests leave unchecked: they check plans are sound, not which unit rounding adds
or sheds. Site, as in ``tests/test_shedding.py`` (PUE 1, no base load): class-modes k: 0
"old" miners (3 kW, 20 TH/s per kW), 1 "new" miners (3 kW, 50 TH/s per kW), 2 H100 full
(0.7 kW, 2,000 tok/s), 3 H100 low (0.35 kW, 1,400 tok/s); 4 H100s idle at 0.07 kW. A woken
unit adds 3, 3, 0.63, 0.28 kW (2,000 / 0.63 = 3,175 tok/s per kW for full, 1,400 / 0.28 =
5,000 for low); the H100s' idle power is 0.28 kW. Everything on (10, 10, 4, 0): 62.8 kW.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.rounding import (
    import_kw,
    it_load_kw,
    largest_remainder,
    round_plan,
    sum_by_class,
    units_awake,
    units_woken,
)
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import T0, flat_series, make_site
from tests.test_shedding import DEVICES, _inputs


def _round(
    x: list[float],
    cap_kw: float,
    lp_import_kw: float,
    committed: float = 0.0,
    peak_kw: float | None = None,
) -> list[int]:
    """One step: round ``x`` (units per class-mode) under ``cap_kw``, the LP having
    imported ``lp_import_kw`` and served what ``x`` serves."""
    inp = dataclasses.replace(_inputs(committed), cap_kw=np.array([cap_kw]))
    xs = np.array(x, dtype=np.float64)[:, None]
    served = inp.tput_tok_s @ xs
    peak = None if peak_kw is None else np.array([peak_kw])
    n = round_plan(inp, xs, np.array([lp_import_kw]), served, peak)
    assert n.dtype == np.int64
    return [int(v) for v in n[:, 0]]


def _kw(n: list[int]) -> float:
    return float(import_kw(_inputs(), np.array(n)[:, None])[0])


# -- largest remainder ---------------------------------------------------------------------


def test_each_class_keeps_its_nearest_whole_total_and_the_largest_fractions_get_it() -> None:
    cls = np.array([0, 0, 0, 1, 1])
    x = np.array([[2.5], [1.5], [0.6], [0.3], [0.3]])
    # class 0: 4.6 -> 5; floors 2 + 1 + 0 leave 2 spare: 0.6 first, then the first 0.5
    # class 1: 0.6 -> 1; equal remainders: the first mode gets it
    n = largest_remainder(x, cls, np.array([9, 9]))
    assert n[:, 0].tolist() == [3, 1, 1, 1, 0] and n.dtype == np.int64
    # never more than the class has: 4 units, so one spare only (to the 0.6)
    assert largest_remainder(x, cls, np.array([4, 9]))[:, 0].tolist() == [2, 1, 1, 1, 0]
    # a hair over half a unit rounds up, half down; nothing from a negative LP answer
    assert largest_remainder(np.array([[0.5001], [-0.2]]), np.array([0, 1]), np.array([9, 9]))[
        :, 0
    ].tolist() == [1, 0]
    assert largest_remainder(np.array([[0.5]]), np.array([0]), np.array([9]))[0, 0] == 0
    # whole numbers a float's width off stay what they are
    x = np.array([[3.0 - 1e-9, 2.0 + 1e-9], [1e-9, 7.0]])
    assert largest_remainder(x, np.array([0, 1]), np.array([9, 9])).tolist() == [[3, 2], [0, 7]]


def test_remainders_are_ranked_per_step_and_per_class() -> None:
    cls = np.array([0, 0, 1, 1])
    x = np.array([[0.7, 0.2], [0.3, 0.8], [1.4, 0.0], [0.6, 0.0]])
    n = largest_remainder(x, cls, np.array([1, 2]))
    assert n.tolist() == [[1, 0], [0, 1], [1, 0], [1, 0]]


def test_a_negative_lp_answer_rounds_to_no_units_never_below() -> None:
    # past solver noise: -0.6 would floor to -1 with 0.4 left over, and its class's
    # rounded total (-1) would keep it there; -1.7 to -2
    x = np.array([[-0.6], [-1.7], [0.2], [-0.6]])
    n = largest_remainder(x, np.array([0, 1, 2, 2]), np.array([9, 9, 9]))
    assert n[:, 0].tolist() == [0, 0, 0, 0]


def test_equal_remainders_go_in_the_listed_order_in_a_class_of_many_modes() -> None:
    # numpy's default sort reorders equal keys once there are more than 16 of them: 20
    # modes alternating 0.2 and 0.3 (5 units in all): the first five 0.3s, as listed
    x = np.array([0.2, 0.3] * 10)[:, None]
    n = largest_remainder(x, np.zeros(20, dtype=np.int64), np.array([20]))
    assert np.flatnonzero(n[:, 0]).tolist() == [1, 3, 5, 7, 9]


def test_a_site_without_class_modes_rounds_to_nothing() -> None:
    n = largest_remainder(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0))
    assert n.shape == (0, 3) and n.dtype == np.int64


def test_the_helpers_sum_by_class_and_count_wake_ups() -> None:
    inp = _inputs(steps=3)
    n = np.array([[10, 4, 4], [0, 0, 2], [4, 1, 3], [0, 2, 0]])
    assert sum_by_class(n, inp.cm_class, inp.C).tolist() == [[10, 4, 4], [0, 0, 2], [4, 3, 3]]
    assert units_awake(inp, n).tolist() == [[10, 4, 4], [0, 0, 2], [4, 3, 3]]
    # unknown units before the horizon: the first step counts as no change
    assert units_woken(inp, n).tolist() == [[0, -6, 0], [0, 0, 2], [0, -1, 0]]
    known = dataclasses.replace(inp, initial_on=np.array([3, 5, -1]))
    assert units_woken(known, n).tolist() == [[7, -6, 0], [-5, 0, 2], [0, -1, 0]]
    # a class known to start fully asleep (0 awake, not unknown): all its first step's
    # units are wake-ups, which the ramp limit must count
    asleep = dataclasses.replace(inp, initial_on=np.array([0, 0, -1]))
    assert units_woken(asleep, n).tolist() == [[10, -6, 0], [0, 0, 2], [0, -1, 0]]
    assert it_load_kw(inp, n).tolist() == pytest.approx([32.8, 13.47, 20.17])
    sunny = dataclasses.replace(inp, onsite_kw=np.array([30.0, 30.0, 0.0]))
    assert import_kw(sunny, n).tolist() == pytest.approx([2.8, 0.0, 20.17])


# -- the hard cap: shed in the fixed order ----------------------------------------------------


def test_rounding_up_over_the_cap_sheds_the_least_valuable_miner() -> None:
    # 9.6, 9.6 round to 10, 10: 62.8 kW over a 60 kW cap by 2.8: one old miner (3 kW) goes
    assert _round([9.6, 9.6, 4, 0], 60.0, 59.0) == [9, 10, 4, 0]
    # 5.8 kW over: two old miners
    assert _round([9.6, 9.6, 4, 0], 57.0, 56.0) == [8, 10, 4, 0]
    # 32.8 kW over: all ten old, then one new miner (30 + 3)
    assert _round([9.6, 9.6, 4, 0], 30.0, 29.0) == [0, 9, 4, 0]


def test_the_cap_binds_at_its_value_not_a_hair_above() -> None:
    assert _kw([10, 10, 4, 0]) == pytest.approx(62.8)
    assert _round([9.6, 9.6, 4, 0], 62.8, 61.0) == [10, 10, 4, 0]  # exactly at the cap
    assert _round([9.6, 9.6, 4, 0], 62.79, 61.0) == [9, 10, 4, 0]  # 0.01 kW over


def test_where_the_lp_broke_the_cap_rounding_holds_the_lps_import() -> None:
    # the LP imports 62.8 kW against a 50 kW cap (it could not do better): rounding keeps
    # what the LP chose, and sheds only what rounding added above it
    assert _round([10, 10, 4, 0], 50.0, 62.8) == [10, 10, 4, 0]
    assert _round([9.6, 9.6, 4, 0], 50.0, 61.0) == [9, 10, 4, 0]


def test_past_the_miners_the_cap_sheds_fewest_tokens_per_kw_first() -> None:
    # no miners; 4 full = 2.8 kW against a 2 kW cap: full units go (3,175 tok/s per kW
    # against low's 5,000), two of them (0.8 / 0.63 -> 2): 1.54 kW
    assert _round([0, 0, 4, 0], 2.0, 1.9) == [0, 0, 2, 0]
    # a mode that rounding left at 0 is skipped; the low units go after full
    assert _round([0, 0, 1, 3], 0.5, 0.4) == [0, 0, 0, 0]


def test_committed_inference_shed_by_the_cap_is_refilled_with_what_fits() -> None:
    # committed 8,000 tok/s, the LP served it with 4 full; the cap (2 kW) sheds two full
    # (1.54 kW, 4,000 tok/s); 0.46 kW of headroom takes one low unit (0.28 kW), not two
    assert _round([0, 0, 4, 0], 2.0, 1.9, committed=8000.0) == [0, 0, 2, 1]
    # with room for more, more: 3 kW cap, nothing shed (2.8 kW)
    assert _round([0, 0, 4, 0], 3.0, 2.8, committed=8000.0) == [0, 0, 4, 0]


# -- committed inference lost to rounding -----------------------------------------------------


def test_committed_tokens_lost_to_rounding_down_are_restored() -> None:
    # 2.4 full units round to 2: 4,000 of the 4,800 committed tok/s; the shortfall (800)
    # is made up by the most tokens per kW: one low unit (1,400 tok/s)
    assert _round([0, 0, 2.4, 0], 1000.0, 2.0, committed=4800.0) == [0, 0, 2, 1]
    # uncommitted tokens lost to rounding are not restored
    assert _round([0, 0, 2.4, 0], 1000.0, 2.0, committed=0.0) == [0, 0, 2, 0]
    # committed above what the LP served: rounding restores what the LP served, no more
    assert _round([0, 0, 2.4, 0], 1000.0, 2.0, committed=9000.0) == [0, 0, 2, 1]


def test_with_every_unit_awake_committed_tokens_move_units_to_the_faster_mode() -> None:
    # 3.4 full + 0.6 low: the class rounds to 4 units, the low one keeps its 0.6 -> 3 + 1:
    # 7,400 tok/s against the 7,640 committed; no unit is free, so the low unit is moved
    # up to full (+600): 4 full, 8,000 tok/s
    assert _round([0, 0, 3.4, 0.6], 1000.0, 3.0, committed=7640.0) == [0, 0, 4, 0]
    assert _round([0, 0, 3.4, 0.6], 1000.0, 3.0, committed=0.0) == [0, 0, 3, 1]


def test_moving_units_to_the_faster_mode_stays_in_the_class_and_the_step_that_is_short() -> None:
    # step 0: 2.4 full + 1.6 low with 5 + 5 miners on: the H100 class rounds to 4 units, the
    # low mode's 0.6 takes the spare one: 2 full + 2 low, 6,800 tok/s against the 7,040 the
    # LP served (committed 7,640): 240 short, no unit free, so one low unit moves up (+600),
    # one only, and never a miner (a miner "moved" to full would be a fifth H100).
    # step 1: 2 full + 2 low serve 6,800 against 5,000 committed: 1,800 over, which is no
    # reason to move or drop a unit there
    inp = _inputs(steps=2)
    inp = dataclasses.replace(
        inp, cap_kw=np.array([1000.0, 1000.0]), committed_tok_s=np.array([7640.0, 5000.0])
    )
    x = np.array([[5.0, 5.0], [5.0, 5.0], [2.4, 2.0], [1.6, 2.0]])
    n = round_plan(inp, x, import_kw(inp, x), inp.tput_tok_s @ x)
    assert n.T.tolist() == [[5, 5, 3, 1], [5, 5, 2, 2]]


def test_with_three_modes_the_fastest_mode_takes_units_from_the_slowest_first() -> None:
    # a class of 4 GPUs with three serving modes: full (0.7 kW, 2,000 tok/s), mid (0.5,
    # 1,800), low (0.35, 1,400). 1.3 + 1.3 + 1.4 rounds to 1 + 1 + 2 (the 0.4 takes the
    # spare unit): 6,600 tok/s against the 6,900 the LP served, 300 short, no unit free.
    # The fastest mode takes one unit from the slowest (+600, the most per unit moved),
    # and that is enough: nothing more moves (not low to mid, not mid to full)
    gpus = {
        "name": "x", "kind": "gpu", "count": 4, "idle_power_kw": 0.07,
        "modes": [{"name": "full", "power_kw": 0.7, "throughput_tokens_s": 2000.0},
                  {"name": "mid", "power_kw": 0.5, "throughput_tokens_s": 1800.0},
                  {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 1400.0}],
    }  # fmt: skip
    site = make_site(devices=[gpus], inference={"committed_tokens_s": 9000.0})
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    x = np.array([[1.3], [1.3], [1.4]])
    assert (inp.tput_tok_s @ x).tolist() == pytest.approx([6900.0])
    n = round_plan(inp, x, import_kw(inp, x), inp.tput_tok_s @ x)
    assert n[:, 0].tolist() == [2, 1, 1]


# -- a billed peak binds only modes that serve nothing -----------------------------------------


def test_a_billed_peak_sheds_miners_but_never_inference() -> None:
    # rounding up takes the import to 62.8 kW; the LP settled on a 61 kW peak
    assert _round([9.6, 9.6, 4, 0], 1000.0, 61.0, peak_kw=61.0) == [9, 10, 4, 0]
    # a peak exactly at what rounding imports: nothing shed either
    assert _round([9.6, 9.6, 4, 0], 1000.0, 61.0, peak_kw=62.8) == [10, 10, 4, 0]
    # a peak above what rounding imports: nothing shed
    assert _round([9.6, 9.6, 4, 0], 1000.0, 61.0, peak_kw=63.0) == [10, 10, 4, 0]
    # the LP's import above the peak (it chose to raise it): held, as for the cap
    assert _round([9.6, 9.6, 4, 0], 1000.0, 62.8, peak_kw=50.0) == [10, 10, 4, 0]
    # only GPUs over the peak: they stay (a peak is money, committed inference is not)
    assert _round([0, 0, 3.6, 0], 1000.0, 2.5, peak_kw=2.5) == [0, 0, 4, 0]
    # the hard cap below the peak still binds every mode
    assert _round([0, 0, 3.6, 0], 2.0, 1.9, peak_kw=2.5) == [0, 0, 2, 0]


def test_each_step_is_rounded_against_its_own_limit() -> None:
    inp = _inputs(steps=3)
    inp = dataclasses.replace(inp, cap_kw=np.array([1000.0, 60.0, 30.0]))
    x = np.repeat(np.array([9.6, 9.6, 4.0, 0.0])[:, None], 3, axis=1)
    n = round_plan(inp, x, np.array([61.6, 59.0, 29.0]), inp.tput_tok_s @ x)
    assert n.T.tolist() == [[10, 10, 4, 0], [9, 10, 4, 0], [0, 9, 4, 0]]
    assert (import_kw(inp, n) <= np.maximum(inp.cap_kw, [61.6, 59.0, 29.0]) + 1e-6).all()


def test_committed_tokens_restored_before_the_shed_push_a_miner_out() -> None:
    # the LP runs 10 new miners and 2.4 full GPUs: 30 + 0.28 + 1.512 = 31.792 kW under a
    # 31.8 kW cap. Rounding gives 2 full (31.54 kW), 800 tok/s short of the committed
    # 4,800: one low unit is woken (31.82 kW, over the cap), and the shed that follows
    # puts a miner to sleep for it; waking only into the headroom (0.26 kW) could not
    assert _round([0, 10, 2.4, 0], 31.8, 31.792, committed=4800.0) == [0, 9, 2, 1]


def test_the_shed_order_is_by_value_not_by_the_site_files_order() -> None:
    # the same fleet with the valuable miners listed first: the old ones still go first
    site = make_site(devices=[DEVICES[1], DEVICES[0], DEVICES[2]])
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    inp = dataclasses.replace(inp, cap_kw=np.array([57.0]))
    x = np.array([[9.6], [9.6], [4.0], [0.0]])
    n = round_plan(inp, x, np.array([56.0]), inp.tput_tok_s @ x)
    assert n[:, 0].tolist() == [10, 8, 4, 0]  # new, old, full, low
    # and under a billed peak
    inp = dataclasses.replace(inp, cap_kw=np.array([1000.0]))
    n = round_plan(inp, x, np.array([61.0]), inp.tput_tok_s @ x, np.array([61.0]))
    assert n[:, 0].tolist() == [10, 9, 4, 0]


def test_value_per_kw_orders_the_shed_when_units_draw_differently() -> None:
    # big miners: 3 kW for 100 TH/s (33 per kW); small: 1 kW for 60 (60 per kW). Ten of
    # each is 40 kW; 1.5 kW over a 38.5 kW cap: one big miner goes (not two small ones,
    # which a sort by TH/s x kW, or by TH/s alone, would pick)
    big = {"name": "big", "kind": "asic", "count": 10,
           "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}]}  # fmt: skip
    small = {"name": "small", "kind": "asic", "count": 10,
             "modes": [{"name": "stock", "power_kw": 1.0, "hashrate_ths": 60.0}]}  # fmt: skip
    site = make_site(devices=[big, small])
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    inp = dataclasses.replace(inp, cap_kw=np.array([38.5]))
    x = np.array([[9.6], [9.6]])
    assert round_plan(inp, x, np.array([38.4]), np.zeros(1))[:, 0].tolist() == [9, 10]
    # GPUs alike: 2 full and 2 low (2.1 kW) over a 1.9 kW cap: a full one goes (3,175
    # tok/s per kW against 5,000), not a low one
    assert _round([0, 0, 2, 2], 1.9, 1.8) == [0, 0, 1, 2]


def test_a_mode_that_adds_no_power_is_passed_over_and_the_shed_goes_on() -> None:
    # 5 "warm" miners whose only mode draws their idle 1 kW (a unit adds 0 kW: asleep or
    # awake, the same), 10 old miners, 4 H100s: 5.28 kW idle + 30 + 2.52 = 37.8 kW against
    # a 6 kW cap: the 10 old miners (30 kW), the warm ones kept (sleeping them saves
    # nothing), then 3 full GPUs (1.8 kW over: 3 x 0.63): 5.91 kW
    warm = {"name": "warm", "kind": "asic", "count": 5, "idle_power_kw": 1.0,
            "modes": [{"name": "warm", "power_kw": 1.0, "hashrate_ths": 1.0}]}  # fmt: skip
    site = make_site(devices=[warm, DEVICES[0], DEVICES[2]])
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    assert inp.marginal_kw.tolist() == pytest.approx([0.0, 3.0, 0.63, 0.28])
    inp = dataclasses.replace(inp, cap_kw=np.array([6.0]))
    x = np.array([[5.0], [10.0], [4.0], [0.0]])
    n = round_plan(inp, x, np.array([5.9]), np.zeros(1))
    assert n[:, 0].tolist() == [5, 0, 1, 0]


def test_gpu_classes_shed_by_tokens_per_kw_whatever_their_listing() -> None:
    # an efficient GPU class listed first (0.5 kW, 5,000 tok/s: 10,000 per kW) and the
    # H100s (full: 3,175 per kW): 0.28 + 2 x 0.5 + 2 x 0.63 = 2.54 kW, 0.34 over a 2.2 kW
    # cap: one H100 at full goes, the efficient ones stay
    eff = {"name": "eff", "kind": "gpu", "count": 2,
           "modes": [{"name": "full", "power_kw": 0.5, "throughput_tokens_s": 5000.0}]}  # fmt: skip
    site = make_site(devices=[eff, DEVICES[2]])
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    inp = dataclasses.replace(inp, cap_kw=np.array([2.2]))
    x = np.array([[2.0], [2.0], [0.0]])
    assert round_plan(inp, x, np.array([2.1]), np.zeros(1))[:, 0].tolist() == [2, 1, 0]


def test_the_refill_takes_the_least_of_units_free_tokens_short_and_kw_left() -> None:
    # 4 full (2.8 kW) over a 2.15 kW cap by 0.65: two full go (1.54 kW), 0.61 kW left,
    # room for two low units (0.56 kW); two units free
    # - committed 5,000: 1,000 short, one low unit makes it up
    assert _round([0, 0, 4, 0], 2.15, 2.1, committed=5000.0) == [0, 0, 2, 1]
    # - committed 8,000: 4,000 short (three low units' worth), two fit
    assert _round([0, 0, 4, 0], 2.15, 2.1, committed=8000.0) == [0, 0, 2, 2]
    # 0.05 kW over a 2.75 kW cap: one full goes (2.17 kW), 0.58 kW left (two low units'
    # worth), 2,000 tok/s short (two low units' worth), but only one unit is free
    assert _round([0, 0, 4, 0], 2.75, 2.7, committed=8000.0) == [0, 0, 3, 1]


def test_the_refill_adds_nothing_to_a_step_that_is_not_short() -> None:
    # step 0 as above (two low units refill it); step 1 serves what the LP served (two
    # full, 4,000 tok/s, all the LP gave), with units free and kW to spare: it stays
    inp = dataclasses.replace(_inputs(committed=8000.0, steps=2), cap_kw=np.array([2.15, 2.15]))
    x = np.array([[0.0, 0.0], [0.0, 0.0], [4.0, 2.0], [0.0, 0.0]])
    n = round_plan(inp, x, np.array([2.1, 2.1]), inp.tput_tok_s @ x)
    assert n.T.tolist() == [[0, 0, 2, 2], [0, 0, 2, 0]]


# -- the refill under a cap on the GPUs' own class, and across GPU classes --------------------

A100S = {"name": "a100", "kind": "gpu", "count": 4, "idle_power_kw": 0.05,
         "modes": [{"name": "full", "power_kw": 0.4, "throughput_tokens_s": 900.0},
                   {"name": "low", "power_kw": 0.1, "throughput_tokens_s": 200.0}]}  # fmt: skip


def _round_mixed(
    x: list[float],
    cap_kw: float,
    committed: float,
    h100_cap_kw: float | None = None,
    a100_count: int = 4,
    lp_import_kw: float | None = None,
) -> list[int]:
    """One step on a site of the 4 H100s and the A100s; k: 0 H100 full, 1 H100 low, 2 A100
    full, 3 A100 low (a woken unit adds 0.63, 0.28, 0.35, 0.05 kW: 3,175, 5,000, 2,571 and
    4,000 tok/s per kW). ``h100_cap_kw``: a cap on the H100 class alone (meter kW); the LP
    imported ``lp_import_kw`` (else what ``x`` draws)."""
    site = make_site(
        devices=[DEVICES[2], {**A100S, "count": a100_count}],
        inference={"committed_tokens_s": committed},
    )
    inp = assemble_inputs(site, uniform_grid(T0, 3600, 3600), flat_series([50.0]))
    inp = dataclasses.replace(inp, cap_kw=np.array([cap_kw]))
    if h100_cap_kw is not None:
        inp = dataclasses.replace(
            inp, class_cap_groups=[(0,)], class_cap_kw=np.array([[h100_cap_kw]])
        )
    xs = np.array(x, dtype=np.float64)[:, None]
    lp_import = import_kw(inp, xs) if lp_import_kw is None else np.array([lp_import_kw])
    n = round_plan(inp, xs, lp_import, inp.tput_tok_s @ xs)
    assert (import_kw(inp, n) <= np.maximum(inp.cap_kw, lp_import) + 1e-6).all()
    return [int(v) for v in n[:, 0]]


def test_the_refill_keeps_to_a_cap_on_the_gpus_class_and_wakes_another_class() -> None:
    # the LP: 3.3 H100s full, 0.25 low: 0.28 + 2.079 + 0.07 = 2.429 kW for the H100 class,
    # its cap; 6,950 tok/s. Rounded to 4 full (2.8 kW): one goes (2.17 kW), 950 tok/s short.
    # The H100 low mode (most tok/s per kW) does not fit in the 0.259 kW the class cap
    # leaves; the A100s' low mode is next: all 4 free units (800 tok/s), 150 still short;
    # nothing for the H100 full (0.63 kW) nor the A100 full (no unit free)
    assert _round_mixed([3.3, 0.25, 0, 0], 1000.0, 6950.0, h100_cap_kw=2.429) == [3, 0, 0, 4]
    # without the class cap nothing is shed: the 4 full H100s serve 8,000
    assert _round_mixed([3.3, 0.25, 0, 0], 1000.0, 6950.0) == [4, 0, 0, 0]


def test_once_one_mode_has_made_up_the_shortfall_the_refill_stops() -> None:
    # as above with 6,300 committed: 300 short after the shed; two A100 low units (400)
    # make it up, and the A100 full mode after them adds none (two units are still free)
    assert _round_mixed([3.3, 0.25, 0, 0], 1000.0, 6300.0, h100_cap_kw=2.429) == [3, 0, 0, 2]


def test_the_refill_shares_the_kw_left_under_the_hard_limit_between_modes() -> None:
    # 10 A100s asleep (0.5 kW idle) and 4 H100s full: 3.3 kW, 0.23 over a 3.07 kW cap (the
    # LP imported 3.0 kW, under it): one H100 full goes (2.67 kW), 2,000 tok/s short, 0.4
    # kW left. H100 low first: one unit
    # (the one free; 0.28 kW); 0.12 kW left takes two A100 low units (0.1 kW), not the
    # three the 600 tok/s still short would want: 3.05 kW, 200 tok/s short
    out = _round_mixed([4, 0, 0, 0], 3.07, 8000.0, a100_count=10, lp_import_kw=3.0)
    assert out == [3, 1, 0, 2]
