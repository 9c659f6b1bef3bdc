"""Any solver PuLP drives (CBC, GLPK, Gurobi, ...), handed the same model as an MPS file."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from scheduler.planner.highs import write_mps
from scheduler.planner.matrices import LPModel
from scheduler.planner.solve_result import SolverError, SolveResult, SolveStatus

__all__ = ["PULP_SOLVERS", "PulpSolver"]

PULP_SOLVERS: dict[str, str] = {
    "cbc": "PULP_CBC_CMD",  # the CBC binary bundled with PuLP 2-3; COIN_CMD for a system CBC
    "coin": "COIN_CMD",
    "glpk": "GLPK_CMD",
    "gurobi": "GUROBI_CMD",
    "cplex": "CPLEX_CMD",
    "scip": "SCIP_CMD",
    "xpress": "XPRESS",
    "copt": "COPT_CMD",
    "mosek": "MOSEK",
    "highs-cmd": "HiGHS_CMD",
    "pulp-highs": "HiGHS",
}


class PulpSolver:
    """Any solver PuLP drives, fed the same LP through an MPS file."""

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        import pulp

        # the names (the selection's) for the errors; solvers imports this module
        from scheduler.planner.solvers import available_solvers, solver_names

        if name not in PULP_SOLVERS:
            raise SolverError(f"unknown solver {name!r}; valid: {', '.join(solver_names())}")
        self.name = name
        self._pulp = pulp
        self._solver = pulp.getSolver(PULP_SOLVERS[name], msg=False, **(options or {}))
        if not self._solver.available():
            raise SolverError(
                f"solver {name!r} ({PULP_SOLVERS[name]}) is not installed here; "
                f"available: {', '.join(available_solvers())}"
            )

    def solve(self, model: LPModel, warm: bool = False) -> SolveResult:
        pulp = self._pulp
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gridsched-") as tmp:
            path = os.path.join(tmp, "model.mps")
            write_mps(model, path)
            variables, prob = pulp.LpProblem.fromMPS(path, sense=pulp.LpMinimize)
        prob.solve(self._solver)
        runtime = time.perf_counter() - t0
        status = {
            pulp.LpStatusOptimal: SolveStatus.OPTIMAL,
            pulp.LpStatusInfeasible: SolveStatus.INFEASIBLE,
            pulp.LpStatusUnbounded: SolveStatus.UNBOUNDED,
        }.get(prob.status, SolveStatus.ERROR)
        x = np.zeros(model.n_vars)
        for name, var in variables.items():
            x[int(name[1:])] = var.value() or 0.0
        duals = np.zeros(model.n_rows)
        have_duals = not model.integer_blocks
        cons = prob.constraints
        for con in cons() if callable(cons) else cons.values():
            if con.pi is None:
                have_duals = False
                break
            duals[int(con.name[1:])] = con.pi
        objective = float(model.c @ x + model.offset)
        return SolveResult(
            status,
            pulp.LpStatus[prob.status],
            objective,
            x,
            duals if have_duals else None,
            self.name,
            runtime,
        )
