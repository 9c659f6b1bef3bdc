"""The optimiser pipeline: inputs -> build -> solve -> extract -> Plan.

``Planner`` keeps the last model and solver so that a re-plan whose structure is unchanged
(new prices, hashprice, caps or demand over the same grid) is a warm update, not a rebuild.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from scheduler.planner.build import build_model
from scheduler.planner.extract import extract_plan
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel
from scheduler.planner.plan import Plan
from scheduler.planner.seed import (
    SEED_MAX_VARS,
    SEED_MIN_VARS,
    coarse_groups,
    coarse_inputs,
    map_basis,
)
from scheduler.planner.solvers import HighsSolver, Solver, SolverError, SolveResult, get_solver


class Planner:
    """Plans a site; re-plans warm when only numbers changed.

    ``integer=True`` solves the MILP (whole units, exact dwell) for small fleets; the
    import limit's value then comes from the LP with the integer decisions fixed.
    """

    def __init__(
        self, solver: str = "highs", options: dict[str, Any] | None = None, integer: bool = False
    ) -> None:
        self.solver_name = solver
        self.options = options
        self.integer = integer
        #: Seed cold solves of models with at least this many columns from a coarser
        #: plan's basis (``scheduler.planner.seed``); None never seeds.
        self.seed_min_vars: int | None = SEED_MIN_VARS
        #: False: HiGHS solves leave ``row_duals`` None (a caller that reads only ``x``,
        #: as the backtest's rolling decisions do, saves converting them).
        self.duals = True
        self._solver: Solver = get_solver(solver, options)
        self._model: LPModel | None = None

    def solve(self, inp: PlanInputs) -> tuple[LPModel, SolveResult, float]:
        t0 = time.perf_counter()
        can_warm = not self.integer and isinstance(self._solver, HighsSolver)
        model = build_model(inp, integer=self.integer, reuse=self._model if can_warm else None)
        warm = model.reused
        build_s = time.perf_counter() - t0
        if warm and isinstance(self._solver, HighsSolver):
            result = self._solver.solve(model, warm=True, duals=self.duals)
            if not result.ok:  # a stale basis must never cost a plan: solve again, cold
                model = build_model(inp, integer=self.integer)
                result = self._solver.solve(model, duals=self.duals)
                result.extras["warm_failed"] = True
        elif isinstance(self._solver, HighsSolver) and not self.integer:
            result = self._seeded(inp, model, self._solver)
        else:
            result = self._solver.solve(model, warm=warm)
        if self.integer and result.ok:
            result = self._duals_of_fixed(model, result)
        self._model = model if result.ok else None
        return model, result, build_s

    def _seeded(self, inp: PlanInputs, model: LPModel, solver: HighsSolver) -> SolveResult:
        """A cold solve that starts from the basis of the same site planned over coarser
        steps (``scheduler.planner.seed``); a plain one when the model is small, the horizon too
        short to coarsen by half, or the seed fails."""
        t0 = time.perf_counter()
        group = coarse_groups(inp.grid)
        G = int(group.max()) + 1
        if (
            self.seed_min_vars is None
            or not self.seed_min_vars <= model.n_vars <= SEED_MAX_VARS
            or 2 * G > inp.T
        ):
            return solver.solve(model, duals=self.duals)
        coarse = build_model(coarse_inputs(inp, group))
        helper = HighsSolver(self.options)
        first = helper.solve(coarse)
        basis = helper.basis() if first.ok else None
        if basis is None:
            return solver.solve(model, duals=self.duals)
        start = map_basis(model, coarse, *basis, group)
        seed_s = time.perf_counter() - t0
        try:
            seeded: SolveResult | None = solver.solve(model, start=start, duals=self.duals)
        except SolverError:  # HiGHS refused the basis
            seeded = None
        if seeded is None or not seeded.ok:  # a seed must never cost a plan
            result = solver.solve(model, duals=self.duals)
            result.extras["seed_failed"] = True
            return result
        seeded.runtime_s += seed_s
        seeded.extras["seed"] = {
            "coarse_steps": G,
            "coarse_iterations": first.iterations,
            "seconds": round(seed_s, 4),
        }
        return seeded

    def _duals_of_fixed(self, model: LPModel, mip: SolveResult) -> SolveResult:
        """Fix the integer decisions and re-solve the LP for the import limit's duals."""
        flags = model.integrality().astype(bool)
        whole = np.round(mip.x)
        fixed = model.with_col_bounds(
            np.where(flags, whole, model.col_lo), np.where(flags, whole, model.col_hi)
        )
        lp = HighsSolver().solve(fixed)
        if lp.ok:
            mip.row_duals = lp.row_duals
        return mip

    def plan(self, inp: PlanInputs, site: str = "", timezone: str = "UTC") -> Plan:
        model, result, build_s = self.solve(inp)
        return extract_plan(inp, model, result, build_s, site, timezone)
