"""Solvers by name: HiGHS through highspy (default, warm-startable), or any solver PuLP
drives, handed the same model as an MPS file: the registry that picks one.

Outcomes are ``SolveResult``s with a ``SolveStatus``; callers act on ``result.ok``, never on
solver-specific strings.

The back-ends are :mod:`scheduler.planner.highs` and :mod:`scheduler.planner.pulp_solvers`;
the outcome types are in :mod:`scheduler.planner.solve_result`, importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scheduler.planner.highs import HighsSolver
from scheduler.planner.pulp_solvers import PULP_SOLVERS, PulpSolver
from scheduler.planner.solve_result import Solver, SolverError, SolveResult, SolveStatus

# the outcome types and HighsSolver are imported from here by the planner, the daemon and
# the tests
__all__ = [
    "SOLVERS",
    "HighsSolver",
    "SolveResult",
    "SolveStatus",
    "Solver",
    "SolverError",
    "available_solvers",
    "get_solver",
    "solver_names",
]


def solver_names() -> list[str]:
    return ["highs", *PULP_SOLVERS]


def available_solvers() -> list[str]:
    import pulp

    have = set(pulp.listSolvers(onlyAvailable=True))
    return ["highs", *(n for n, cls in PULP_SOLVERS.items() if cls in have)]


def _pulp_factory(name: str) -> Callable[[dict[str, Any] | None], Solver]:
    def make(options: dict[str, Any] | None) -> Solver:
        return PulpSolver(name, options)

    return make


SOLVERS: dict[str, Callable[[dict[str, Any] | None], Solver]] = {
    "highs": HighsSolver,
    **{n: _pulp_factory(n) for n in PULP_SOLVERS},
}


def get_solver(name: str = "highs", options: dict[str, Any] | None = None) -> Solver:
    """A solver by name; raises ``SolverError`` naming the valid and installed ones."""
    try:
        factory = SOLVERS[name]
    except KeyError:
        raise SolverError(
            f"unknown solver {name!r}; valid: {', '.join(solver_names())}; "
            f"installed here: {', '.join(available_solvers())}"
        ) from None
    return factory(options)
