"""What the backtest does to decide faster (issue 18) and what it leaves alone.

- Solves that skip the row duals (the backtest reads only the columns) give the same
  columns and objective, to the bit.
- ``--plan-resolution`` plans the far horizon on coarser steps: the grouping it uses,
  the specs it refuses (with the flag's name), a replay that keeps its matrix between
  decisions, and a spec of the decision step alone deciding exactly as the default.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from models.market import demo_prices
from models.markets import MARKETS
from models.site import load_site
from scheduler.backtest import policies
from scheduler.backtest.engine import BacktestSetup, prepare
from scheduler.backtest.horizon import PlanResolution
from scheduler.planner.build import build_model
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel
from scheduler.planner.optimize import Planner
from scheduler.planner.solvers import HighsSolver, SolveResult
from tests.conftest import EXAMPLE, T0

DAY = 86400
QUARTER = 900


def _setup(hours: int = 6, horizon_h: int = 12) -> BacktestSetup:
    cfg = load_site(EXAMPLE)
    prices = demo_prices(T0 - 2 * DAY, T0 + 3 * DAY, cfg.site.timezone)
    return prepare(
        cfg,
        prices,
        T0,
        T0 + hours * 3600,
        QUARTER,
        horizon_h * 3600,
        market=MARKETS["ERCOT"],
    )


class _Recording(Planner):
    windows: ClassVar[list[PlanInputs]] = []
    models: ClassVar[list[LPModel]] = []

    def solve(self, inp: PlanInputs) -> tuple[LPModel, SolveResult, float]:
        model, result, build_s = super().solve(inp)
        _Recording.windows.append(inp)
        _Recording.models.append(model)
        return model, result, build_s


def _record(monkeypatch: pytest.MonkeyPatch) -> type[_Recording]:
    _Recording.windows, _Recording.models = [], []
    monkeypatch.setattr(policies, "Planner", _Recording)
    return _Recording


def test_a_solve_without_duals_has_the_same_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _record(monkeypatch)
    policies.rolling_scheduler(_setup(hours=1), progress=False)
    model = build_model(rec.windows[-1])
    with_duals = HighsSolver().solve(model)
    without = HighsSolver().solve(model, duals=False)
    assert with_duals.ok and without.ok
    assert with_duals.row_duals is not None and without.row_duals is None
    assert np.array_equal(with_duals.x, without.x)
    assert with_duals.objective == without.objective


def test_the_grouping_fine_near_and_hourly_far() -> None:
    res = PlanResolution("15min:8h,1h", QUARTER)
    group = res.groups(192)
    assert group[:32].tolist() == list(range(32))  # 8 hours of quarter hours
    assert group[32:].tolist() == [32 + i // 4 for i in range(160)]  # then whole hours
    assert int(group[-1]) + 1 == 72
    # a window cut by the end of the data ends on a shorter last step
    assert PlanResolution("15min:1h,1h", QUARTER).groups(10).tolist() == [
        0, 1, 2, 3, 4, 4, 4, 4, 5, 5,
    ]  # fmt: skip
    assert "72 steps for 192" in res.describe(192)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("1h", "the first part's step must be the decision step (15min)"),
        ("15min:8h,20min", "not a whole number of decision steps"),
        ("15min:8h,1h:4h,2h", "part 2 must end after the one before it"),
        ("15min:8h,1h:9h30min,2h", "part 2 must end after the one before it"),
        ("15min,1h", "only the last part may omit"),
    ],
)
def test_specs_it_refuses_say_why(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match="--plan-resolution") as err:
        PlanResolution(spec, QUARTER)
    assert says in str(err.value)


def test_a_coarse_replay_keeps_its_matrix_and_decides_the_applied_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _setup()
    rec = _record(monkeypatch)
    run = policies.rolling_scheduler(setup, progress=False, plan_resolution="15min:2h,1h")
    assert run.solver_failures == 0 and run.n.any()
    assert any("plan steps 15min:2h,1h (18 steps for 48)" in n for n in run.notes)
    for w in rec.windows:  # 8 quarter hours, then 10 hours; the first is the decision's
        assert w.T == 18
        assert int(w.grid.dur_s[0]) == QUARTER
        assert w.grid.dur_s[8:].tolist() == [3600] * 10
    reused = sum(m.reused for m in rec.models)
    assert reused >= len(rec.models) - 2  # coarse steps counted from the decision


def test_the_decision_step_alone_decides_as_the_default() -> None:
    setup = _setup(hours=3)
    default = policies.rolling_scheduler(setup, progress=False)
    same = policies.rolling_scheduler(setup, progress=False, plan_resolution="15min")
    assert np.array_equal(default.n, same.n)
    assert np.array_equal(default.batch_tok_s, same.batch_tok_s)


def test_the_command_refuses_a_bad_spec_before_reading_prices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scheduler.cli.main import main

    code = main(
        [
            "backtest",
            "--config",
            str(EXAMPLE),
            "--prices",
            "/nonexistent/prices.csv",
            "--price-column",
            "HB_WEST",
            "--from",
            "2023-08-01",
            "--to",
            "2023-08-02",
            "--plan-resolution",
            "1h",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--plan-resolution '1h'" in err and "decision step" in err


def test_coarse_far_steps_see_no_price_of_the_step_being_decided() -> None:
    """Coarse steps average forecasts, never realised prices: perturbing every realised
    price from the step decided on leaves that decision and those before it unchanged."""
    from tests.test_backtest import toy_setup

    rng = np.random.default_rng(3)
    base = rng.uniform(100, 500, 24 + 24 + 6)
    cut = 24 + 10
    other = base.copy()
    other[cut:] = rng.uniform(0, 1000, len(other) - cut)
    site: dict[str, Any] = {
        "devices": [
            {
                "name": "a",
                "kind": "asic",
                "count": 10,
                "initial_on": 0,
                "modes": [
                    {"name": "eco", "power_kw": 2.0, "hashrate_ths": 80.0},
                    {"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0},
                ],
            }
        ]
    }
    spec = "1h:2h,2h"  # hourly decisions; the 6-hour horizon as 2 hours then 2 x 2 hours
    a = policies.rolling_scheduler(toy_setup(list(base), **site), False, plan_resolution=spec)
    b = policies.rolling_scheduler(toy_setup(list(other), **site), False, plan_resolution=spec)
    assert any("4 steps for 6" in n for n in a.notes)
    assert (a.n[:, :11] == b.n[:, :11]).all()
    assert not (a.n == b.n).all()  # the perturbation does matter once settled


def test_coarse_inputs_on_runs_of_steps_equal_the_general_reduction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-run reductions ``coarse_inputs`` takes for groups of consecutive steps give
    the very numbers of the general ``ufunc.at`` path."""
    from scheduler.planner.seed import coarse_inputs

    rec = _record(monkeypatch)
    policies.rolling_scheduler(_setup(hours=1), progress=False)
    w = rec.windows[-1]
    w.cap_kw = w.cap_kw.copy()
    w.cap_kw[5] = 1234.5  # a cap inside a merged step
    w.dr_cap_kw = np.where(np.arange(w.T) == 30, 999.0, w.dr_cap_kw)
    group = PlanResolution("15min:1h,1h", QUARTER).groups(w.T)
    out = coarse_inputs(w, group)
    G = int(group.max()) + 1

    def at_min(a: np.ndarray) -> np.ndarray:
        ref = np.full(G, np.inf)
        np.minimum.at(ref, group, a)
        return ref

    assert np.array_equal(out.cap_kw, at_min(w.cap_kw)) and out.cap_kw.min() == 1234.5
    assert np.array_equal(out.dr_cap_kw, at_min(w.dr_cap_kw))
    for c in range(w.class_cap_kw.shape[0]):
        assert np.array_equal(out.class_cap_kw[c], at_min(w.class_cap_kw[c]))
    ends = np.zeros(G, dtype=np.int64)
    np.maximum.at(ends, group, w.grid.ends_s)
    assert np.array_equal(out.grid.ends_s, ends)
    assert np.array_equal(out.grid.starts_s, w.grid.starts_s[np.unique(group, True)[1]])
    # a grouping that is not runs in order still takes the general path
    shuffled = group[::-1].copy()
    back = coarse_inputs(w, shuffled)
    ref = np.full(G, np.inf)
    np.minimum.at(ref, shuffled, w.cap_kw)
    assert np.array_equal(back.cap_kw, ref)


def test_a_warm_update_leaves_highs_holding_the_new_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pushing only the entries that changed (compared on the model's own arrays) leaves
    HiGHS with every cost and bound of the new model, window after window."""
    rec = _record(monkeypatch)
    policies.rolling_scheduler(_setup(hours=2), progress=False)
    solver = HighsSolver()
    pushed = 0
    for i, model in enumerate(rec.models):
        # a bound that goes infinite and comes back: converted where it changed
        model.col_hi = model.col_hi.copy()
        model.col_hi[i % 7] = np.inf if i % 2 else model.col_hi[i % 7]
        result = solver.solve(model, warm=i > 0)
        assert result.ok and result.warm == (i > 0)
        lp = solver._h.getLp()
        want = solver._arrays(model)
        for name, got in (
            ("cost", lp.col_cost_),
            ("col_lo", lp.col_lower_),
            ("col_hi", lp.col_upper_),
            ("row_lo", lp.row_lower_),
            ("row_hi", lp.row_upper_),
        ):
            assert np.array_equal(np.asarray(got), want[name]), (i, name)
        pushed += i > 0
    assert pushed >= 7
