"""Random sites: the plan is always returned, sound, and never worse than a trivial plan."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.signals import GridEvent
from models.site import parse_site
from scheduler.planner.extract import extract_plan
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.invariants import check_plan
from scheduler.planner.matrices import LPModel
from scheduler.planner.optimize import Planner
from scheduler.planner.solvers import HighsSolver
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import T0, flat_series

floats = st.floats


@st.composite
def sites(draw: st.DrawFn) -> tuple[dict[str, Any], list[float], list[GridEvent]]:
    n_cls = draw(st.integers(1, 3))
    devices = []
    for c in range(n_cls):
        gpu = draw(st.booleans())
        modes = []
        for m in range(draw(st.integers(1, 3))):
            mode: dict[str, Any] = {"name": f"m{m}", "power_kw": draw(floats(0.2, 5.0))}
            if gpu:
                mode["throughput_tokens_s"] = draw(floats(50, 3000))
            else:
                mode["hashrate_ths"] = draw(floats(10, 300))
            modes.append(mode)
        devices.append(
            {
                "name": f"c{c}",
                "kind": "gpu" if gpu else "asic",
                "count": draw(st.integers(0, 40)),
                "modes": modes,
                "idle_power_kw": draw(floats(0, 0.1)),
                "start_cost_usd": draw(st.sampled_from([0.0, 0.05, 1.0])),
                "min_on_s": draw(st.sampled_from([0, 900, 3600])),
                "min_off_s": draw(st.sampled_from([0, 900])),
            }
        )
    site: dict[str, Any] = {
        "site": {
            "name": "random",
            "interconnect_kw": draw(floats(5, 200)),
            "pue": draw(floats(1.0, 1.4)),
            "base_load_kw": draw(floats(0, 10)),
            "timezone": "America/Chicago",
        },
        "mining": {"hashprice_usd_per_ths_day": draw(floats(0.01, 0.3))},
        "inference": {
            "committed_tokens_s": draw(st.sampled_from([0.0, 500.0, 20000.0])),
            "committed_usd_per_mtok": 0.5,
            "spot_tokens_s": draw(floats(0, 5000)),
            "spot_usd_per_mtok": 0.3,
        },
        "tariff": {
            "demand_charge_usd_per_kw_month": draw(st.sampled_from([0.0, 5.0])),
            "billing_peak_so_far_kw": draw(floats(0, 100)),
        },
        "devices": devices,
    }
    if draw(st.booleans()):
        site["site"]["ramp_up_kw_per_min"] = draw(floats(0.5, 20))
        site["site"]["current_load_kw"] = draw(floats(0, 50))
    prices = draw(st.lists(floats(-60, 3000), min_size=12, max_size=12))
    events = []
    if draw(st.booleans()):
        start = T0 + 900 * draw(st.integers(0, 10))
        events.append(
            GridEvent(
                id="dr",
                type="curtail",  # type: ignore[arg-type]
                start=np.datetime64(start, "s").astype(object).isoformat() + "Z",
                duration="30min",
                limit_kw=draw(floats(0, 50)),
            )
        )
    return site, prices, events


def _objective_with_x_fixed(model: LPModel, x_value: np.ndarray) -> float:
    b = model.var("x")
    lo, hi = model.col_lo.copy(), model.col_hi.copy()
    lo[b.start : b.stop] = hi[b.start : b.stop] = x_value.ravel()
    res = HighsSolver().solve(model.with_col_bounds(lo, hi))
    assert res.ok, res.termination  # every trivial plan is feasible: limits are soft
    return res.objective


#: Found by Hypothesis (2026-12-02): a seeded solve stopped 1.75e-5 USD from the plain one,
#: a difference below the solver's tolerances, which the check used to call a different
#: optimum.
_ONE_GPU_AT_NO_PRICE: tuple[dict[str, Any], list[float], list[GridEvent]] = (
    {
        "site": {
            "name": "random",
            "interconnect_kw": 5.0,
            "pue": 1.0,
            "base_load_kw": 0.0,
            "timezone": "America/Chicago",
        },
        "mining": {"hashprice_usd_per_ths_day": 0.25},
        "inference": {
            "committed_tokens_s": 500.0,
            "committed_usd_per_mtok": 0.5,
            "spot_tokens_s": 0.0,
            "spot_usd_per_mtok": 0.3,
        },
        "tariff": {"demand_charge_usd_per_kw_month": 0.0, "billing_peak_so_far_kw": 0.0},
        "devices": [
            {
                "name": "c0",
                "kind": "asic",
                "count": 0,
                "modes": [
                    {"name": "m0", "power_kw": 1.0, "hashrate_ths": 10.0},
                    {"name": "m1", "power_kw": 1.0, "hashrate_ths": 10.0},
                    {"name": "m2", "power_kw": 1.0, "hashrate_ths": 10.0},
                ],
                "idle_power_kw": 0.0,
                "start_cost_usd": 0.0,
                "min_on_s": 0,
                "min_off_s": 0,
            },
            {
                "name": "c1",
                "kind": "asic",
                "count": 0,
                "modes": [
                    {"name": "m0", "power_kw": 1.0, "hashrate_ths": 10.0},
                    {"name": "m1", "power_kw": 1.0, "hashrate_ths": 10.0},
                    {"name": "m2", "power_kw": 1.0, "hashrate_ths": 10.0},
                ],
                "idle_power_kw": 0.0,
                "start_cost_usd": 0.0,
                "min_on_s": 0,
                "min_off_s": 0,
            },
            {
                "name": "c2",
                "kind": "gpu",
                "count": 1,
                "modes": [
                    {"name": "m0", "power_kw": 0.25, "throughput_tokens_s": 50.0},
                    {"name": "m1", "power_kw": 0.375, "throughput_tokens_s": 675.0},
                ],
                "idle_power_kw": 0.0,
                "start_cost_usd": 0.0,
                "min_on_s": 0,
                "min_off_s": 0,
            },
        ],
    },
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0],
    [],
)


@settings(
    max_examples=int(__import__("os").environ.get("GRIDSCHED_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sites())
@example(_ONE_GPU_AT_NO_PRICE)
def test_random_sites_plan_soundly_and_beat_trivial_plans(
    case: tuple[dict[str, Any], list[float], list[GridEvent]],
) -> None:
    raw, prices, events = case
    cfg = parse_site(raw, "random")
    grid = uniform_grid(T0, 12 * 900, 900)
    inp = assemble_inputs(cfg, grid, flat_series(prices, 900), events)
    plain = Planner()
    plain.seed_min_vars = None
    model, result, build_s = plain.solve(inp)
    assert result.ok, result.termination  # soft limits: a plan always exists
    seeded = Planner()
    seeded.seed_min_vars = 0  # from the 30-minute plan's basis: the same optimum
    _, from_seed, _ = seeded.solve(inp)
    assert from_seed.ok and "seed" in from_seed.extras
    # The same optimum to within what the solver can tell apart: each variable's value is
    # known to HiGHS's primal feasibility tolerance (1e-7), so two optimal solutions may
    # differ by that times each cost (the example above: one SLA slack of cost 1,250 at
    # 1.4e-8 against 0, 1.75e-5 USD apart).
    close = 1e-6 + 1e-7 * float(np.abs(model.c).sum())
    assert from_seed.objective == pytest.approx(result.objective, rel=1e-7, abs=close)
    plan = extract_plan(inp, model, result, build_s, "random", "America/Chicago")
    assert check_plan(inp, model, result.x, plan) == []
    asleep = np.zeros((inp.K, inp.T))
    first_mode = np.zeros((inp.K, inp.T))
    first = np.searchsorted(inp.cm_class, np.arange(inp.C))
    first_mode[first] = inp.units[:, None]
    for trivial in (asleep, first_mode):
        assert result.objective <= _objective_with_x_fixed(model, trivial) + 1e-6 * max(
            1.0, abs(result.objective)
        )
