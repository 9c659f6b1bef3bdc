"""The backtest's fast path (a warm re-plan on the kept matrix) decides as a full rebuild.

Each rolling plan of the backtest differs from the last in numbers only (prices,
hashprice, caps, the state left behind), so the planner keeps the matrix and pushes
only new costs and bounds to HiGHS, re-solving from the last basis. These tests replay
a day of the example site (miners with dwell times, GPUs with an SLA, a demand charge,
coincident-peak windows, a ramp limit) and check, window by window, that the fast path
builds the very same LP as a fresh build and decides exactly as a rebuilt, cold-solved
plan does.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.market import demo_prices
from models.markets import MARKETS
from models.site import load_site
from scheduler.backtest import policies
from scheduler.backtest.engine import BacktestSetup, prepare
from scheduler.planner.build import build_model
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel
from scheduler.planner.optimize import Planner
from scheduler.planner.solvers import SolveResult
from tests.conftest import EXAMPLE, T0

DAY = 86400


def _setup() -> BacktestSetup:
    cfg = load_site(EXAMPLE)
    prices = demo_prices(T0 - 2 * DAY, T0 + 3 * DAY, cfg.site.timezone)
    return prepare(cfg, prices, T0, T0 + DAY, 3600, 12 * 3600, market=MARKETS["ERCOT"])


class _Rebuilding(Planner):
    """A planner that forgets everything between plans: every window is built from
    scratch and solved cold, as the first plan of a run is."""

    def solve(self, inp: PlanInputs) -> tuple[LPModel, SolveResult, float]:
        return Planner().solve(inp)


def _same_lp(a: LPModel, b: LPModel) -> bool:
    assert a.A is not None and b.A is not None
    same_arrays = all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("c", "col_lo", "col_hi", "row_lo", "row_hi")
    )
    return (
        same_arrays
        and a.offset == b.offset
        and a.A.shape == b.A.shape
        and (a.A != b.A).nnz == 0
        and a.var_blocks == b.var_blocks
        and a.con_blocks == b.con_blocks
    )


def test_the_fast_path_builds_the_same_lp_as_a_fresh_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _setup()
    windows: list[PlanInputs] = []

    class Recording(Planner):
        def solve(self, inp: PlanInputs) -> tuple[LPModel, SolveResult, float]:
            windows.append(inp)
            return super().solve(inp)

    monkeypatch.setattr(policies, "Planner", Recording)
    policies.rolling_scheduler(setup, progress=False)
    assert len(windows) == setup.k1 - setup.k0
    last: LPModel | None = None
    reused = 0
    for w in windows:
        fast = build_model(w, reuse=last)
        assert _same_lp(fast, build_model(w))
        reused += fast.reused
        last = fast
    # the fast path was taken: the first build has nothing to reuse, and the matrix of
    # a rolling window changes only rarely (never on this day)
    assert reused >= len(windows) - 2


def test_warm_replans_decide_as_rebuilt_cold_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup()
    fast = policies.rolling_scheduler(setup, progress=False)
    monkeypatch.setattr(policies, "Planner", _Rebuilding)
    full = policies.rolling_scheduler(setup, progress=False)
    assert fast.solver_failures == full.solver_failures == 0
    # the same whole units, batch tokens and batch money at every step, to the bit
    assert np.array_equal(fast.n, full.n)
    assert np.array_equal(fast.batch_tok_s, full.batch_tok_s)
    assert np.array_equal(fast.batch_usd, full.batch_usd)
    assert fast.n.any()  # a day in which something ran


def test_a_warm_replan_is_really_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above means something only if the fast path was used."""
    setup = _setup()
    warm: list[bool] = []

    class Spy(Planner):
        def solve(self, inp: PlanInputs) -> tuple[LPModel, SolveResult, float]:
            model, result, build_s = super().solve(inp)
            warm.append(model.reused and result.warm)
            return model, result, build_s

    monkeypatch.setattr(policies, "Planner", Spy)
    run = policies.rolling_scheduler(setup, progress=False)
    assert run.plans == len(warm)
    assert not warm[0] and sum(warm) >= len(warm) - 2
