from __future__ import annotations

import numpy as np
import pytest

from models.market import demo_prices
from models.signals import load_events
from models.site import load_site
from scheduler.planner.build import build_model
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.solvers import HighsSolver, SolverError, get_solver
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import EXAMPLE, ROOT, make_site, solve

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

START = 1691643600  # 2023-08-10T05:00:00Z


def example_inputs(hours: int = 24, step_s: int = 900):  # type: ignore[no-untyped-def]
    cfg = load_site(EXAMPLE)
    grid = uniform_grid(START, hours * 3600, step_s)
    events = load_events(ROOT / "deploy" / "examples" / "events-2023-08-10.json")
    return cfg, assemble_inputs(cfg, grid, demo_prices(START, START + hours * 3600), events)


def test_pulp_cbc_path_reaches_the_same_objective() -> None:
    _, inp = example_inputs()
    model = build_model(inp)
    highs = HighsSolver().solve(model)
    cbc = get_solver("cbc").solve(model)
    assert highs.ok and cbc.ok
    assert abs(highs.objective - cbc.objective) <= 1e-6 * max(1.0, abs(highs.objective))


def test_pulp_path_on_a_toy_gives_the_same_plan() -> None:
    site = make_site(site={"interconnect_kw": 15.0})
    _, a = solve(site, [200.0, 400.0])
    _, b = solve(site, [200.0, 400.0], planner=Planner("cbc"))
    assert b.solver == "cbc"
    assert a.objective == pytest.approx(b.objective, abs=1e-6)
    assert np.allclose(a.import_value_usd_per_mwh, b.import_value_usd_per_mwh)


def test_unknown_and_missing_solvers_are_named() -> None:
    with pytest.raises(SolverError, match="unknown solver 'nope'; valid: highs, cbc"):
        get_solver("nope")
    with pytest.raises(SolverError, match="not installed"):
        get_solver("cplex")


def test_highs_option_pass_through_and_rejection() -> None:
    HighsSolver({"threads": 1, "time_limit": 30.0})
    with pytest.raises(SolverError, match="rejected option"):
        HighsSolver({"not_an_option": 1})


def test_example_plan_is_sound_and_multires_is_close() -> None:
    from scheduler.planner.extract import extract_plan
    from scheduler.planner.invariants import check_plan
    from scheduler.planner.timegrid import multires_grid

    cfg, inp = example_inputs(48, 300)
    planner = Planner()
    model, result, build_s = planner.solve(inp)
    plan = extract_plan(inp, model, result, build_s, cfg.site.name, cfg.site.timezone)
    assert plan.ok and not check_plan(inp, model, result.x, plan)
    grid = multires_grid(START, 48 * 3600, "5min:2h,15min:12h,1h")
    inp2 = assemble_inputs(
        cfg,
        grid,
        demo_prices(START, START + 48 * 3600),
        load_events(ROOT / "deploy" / "examples" / "events-2023-08-10.json"),
    )
    model2, result2, build2 = Planner().solve(inp2)
    plan2 = extract_plan(inp2, model2, result2, build2, cfg.site.name, cfg.site.timezone)
    assert plan2.ok and not check_plan(inp2, model2, result2.x, plan2)
    assert grid.n == 24 + 40 + 36
    assert plan2.money.profit == pytest.approx(plan.money.profit, rel=0.05)
