"""The plan offers a mode only as many units as can reach it (``PlanInputs.mode_units_max``).

A stock-firmware Antminer has no power target: woken, it runs at its own setting, so a plan
that counts it in ``eco`` counts eco power and hashrate while it draws full power. A GPU
whose clock locks NVML refuses cannot take a clock-locked mode. The LP bounds each
(class, mode) column by the units that reach it, and rounding never puts more whole units
in a mode than that bound (the refill steps add units; they keep to it).

Rounding figures are those of tests/test_rounding.py's site: class-modes 0 "old" miners,
1 "new" miners, 2 H100 full (0.63 kW a unit above idle, 2,000 tok/s), 3 H100 low (0.28 kW,
1,400 tok/s; the most tokens per kW, so the refill tries it first).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.site import SiteConfig
from scheduler.planner.extract import extract_plan
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.invariants import check_plan
from scheduler.planner.optimize import Planner
from scheduler.planner.plan import Plan
from scheduler.planner.rounding import largest_remainder, round_plan
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import T0, flat_series, make_site, solve
from tests.test_shedding import _inputs

# -- the LP ---------------------------------------------------------------------------------

#: 10 S19j Pro (catalog: eco 2.135 kW / 80 TH/s, stock 3.05 kW / 100 TH/s, turbo 3.8125 kW /
#: 112 TH/s) at 0.24 USD per TH/s per day. At 270 USD/MWh a stock unit earns 1 USD/h for
#: 0.82 USD of power, an eco unit 0.8 USD/h for 0.58 USD: eco is the best mode.
S19 = {"name": "s19", "kind": "asic", "count": 10, "model": "S19j Pro"}
PRICE = 270.0


def _units(plan: Plan, name: str) -> dict[str, int]:
    (cp,) = [c for c in plan.classes if c.name == name]
    return {m: int(cp.units_by_mode[i].max()) for i, m in enumerate(cp.modes)}


def _bounded(site: SiteConfig, bound: list[int] | None) -> dict[str, int]:
    """The S19 class's units per mode (the most over the steps), planned with ``bound``."""
    grid = uniform_grid(T0, 7200, 3600)
    inp = assemble_inputs(site, grid, flat_series([PRICE, PRICE]))
    assert inp.mode_names == ["eco", "stock", "turbo"]
    if bound is not None:
        inp.mode_units_max = np.array(bound, dtype=np.float64)
    model, result, build_s = Planner().solve(inp)
    plan = extract_plan(inp, model, result, build_s, "toy", "UTC")
    assert plan.ok, plan.notes
    assert not check_plan(inp, model, result.x, plan)
    return _units(plan, "s19")


def test_without_a_bound_eco_is_the_best_mode_at_this_price() -> None:
    site = make_site(devices=[S19])
    assert _bounded(site, None) == {"eco": 10, "stock": 0, "turbo": 0}
    _, plan = solve(site, [PRICE, PRICE])  # and the plan is sound
    assert _units(plan, "s19") == {"eco": 10, "stock": 0, "turbo": 0}


def test_the_lp_puts_no_more_units_in_a_mode_than_reach_it() -> None:
    site = make_site(devices=[S19])
    # 7 units can reach eco (stock firmware on 3): 7 eco, the other 3 at stock
    assert _bounded(site, [7, 10, 10]) == {"eco": 7, "stock": 3, "turbo": 0}
    # none can: every unit at its own setting (stock), none in eco
    assert _bounded(site, [0, 10, 10]) == {"eco": 0, "stock": 10, "turbo": 0}
    # a bound above the class's units is the class's units
    assert _bounded(site, [25, 25, 25]) == {"eco": 10, "stock": 0, "turbo": 0}


def test_a_bound_of_the_wrong_shape_or_sign_is_refused_by_name() -> None:
    inp = _inputs()
    with pytest.raises(ValueError, match="mode_units_max"):
        dataclasses.replace(inp, mode_units_max=np.array([1.0, 2.0])).mode_units_cap  # noqa: B018
    with pytest.raises(ValueError, match="mode_units_max"):
        dataclasses.replace(inp, mode_units_max=np.array([1.0, -1.0, 2, 2])).mode_units_cap  # noqa: B018


# -- rounding -------------------------------------------------------------------------------


def _round(
    x: list[float],
    cap_kw: float,
    bound: list[int] | None,
    committed: float,
    served: float | None = None,
) -> list[int]:
    inp = _inputs(committed)
    inp = dataclasses.replace(
        inp,
        cap_kw=np.array([cap_kw]),
        mode_units_max=None if bound is None else np.array(bound, dtype=np.float64),
    )
    xs = np.array(x, dtype=np.float64)[:, None]
    lp_served = inp.tput_tok_s @ xs if served is None else np.array([served])
    lp_import = float(np.maximum(inp.fixed_kw + inp.marginal_kw @ xs, 0.0)[0])
    n = round_plan(inp, xs, np.array([lp_import]), lp_served)
    if bound is not None:
        assert (n[:, 0] <= np.array(bound)).all()
    return [int(v) for v in n[:, 0]]


def test_the_refill_of_tokens_lost_to_rounding_skips_a_mode_at_its_bound() -> None:
    # 2.4 full units round to 2: 800 of the 4,800 committed tok/s short. Unbounded, one low
    # unit makes it up (tests/test_rounding.py); no unit reaches low: a full one instead
    assert _round([0, 0, 2.4, 0], 1000.0, None, 4800.0) == [0, 0, 2, 1]
    assert _round([0, 0, 2.4, 0], 1000.0, [10, 10, 4, 0], 4800.0) == [0, 0, 3, 0]
    # three units reach full and none low: full takes its third, no more
    assert _round([0, 0, 2.4, 0], 1000.0, [10, 10, 3, 0], 9000.0, 9000.0) == [0, 0, 3, 0]


def test_moving_units_up_to_the_faster_mode_stops_at_its_bound() -> None:
    # 2.4 full + 1.6 low: 4 units, rounded 2 + 2 (6,800 tok/s), none free. Against 9,000
    # committed and served, unbounded, both low units move up to full; 3 reach full: one
    assert _round([0, 0, 2.4, 1.6], 1000.0, None, 9000.0, 9000.0) == [0, 0, 4, 0]
    assert _round([0, 0, 2.4, 1.6], 1000.0, [10, 10, 3, 4], 9000.0, 9000.0) == [0, 0, 3, 1]


def test_the_refill_after_the_cap_shed_skips_a_mode_at_its_bound() -> None:
    # committed 8,000 tok/s served by 4 full; the 2 kW cap sheds two full (1.54 kW) and the
    # 0.46 kW left takes one low unit (tests/test_rounding.py); none reaches low: none
    inp = dataclasses.replace(_inputs(8000.0), cap_kw=np.array([2.0]))
    xs = np.array([[0.0], [0.0], [4.0], [0.0]])
    n = round_plan(inp, xs, np.array([1.9]), inp.tput_tok_s @ xs)
    assert n[:, 0].tolist() == [0, 0, 2, 1]
    inp = dataclasses.replace(inp, mode_units_max=np.array([10.0, 10.0, 4.0, 0.0]))
    n = round_plan(inp, xs, np.array([1.9]), inp.tput_tok_s @ xs)
    assert n[:, 0].tolist() == [0, 0, 2, 0]


def test_largest_remainder_never_rounds_a_mode_above_its_bound() -> None:
    # an LP answer over its bound (none should be; rounding does not rely on it): 2.7 full
    # units where 2 reach full, 0.6 low. Unbounded, the class's spare unit goes to the
    # larger remainder, full (3); bounded, full is taken at 2 and the spare goes to low
    x = np.array([[2.7], [0.6]])
    cls = np.array([0, 0])
    assert largest_remainder(x, cls, np.array([4]))[:, 0].tolist() == [3, 0]
    n = largest_remainder(x, cls, np.array([4]), np.array([2.0, 4.0]))
    assert n[:, 0].tolist() == [2, 1]
    inp = dataclasses.replace(_inputs(), mode_units_max=np.array([10.0, 10.0, 2.0, 4.0]))
    xs = np.array([[0.0], [0.0], [2.7], [0.6]])
    assert round_plan(inp, xs, np.array([1000.0]), np.zeros(1))[:, 0].tolist() == [0, 0, 2, 1]
