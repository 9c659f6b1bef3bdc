"""What a solve returns, whichever back-end ran it: a ``SolveResult`` with a ``SolveStatus``
(callers act on ``result.ok``, never on solver-specific strings), the ``SolverError`` of a
solver that is unknown, missing or failed, and the ``Solver`` protocol the back-ends
(:mod:`scheduler.planner.highs`, :mod:`scheduler.planner.pulp_solvers`) follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from scheduler.planner.matrices import LPModel

__all__ = ["SolveResult", "SolveStatus", "Solver", "SolverError"]


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    TIME_LIMIT = "time_limit"
    ERROR = "error"


@dataclass
class SolveResult:
    status: SolveStatus
    termination: str
    objective: float
    x: np.ndarray
    row_duals: np.ndarray | None
    solver: str
    runtime_s: float
    warm: bool = False
    iterations: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is SolveStatus.OPTIMAL


class SolverError(RuntimeError):
    """The solver is unknown, not installed, or failed to run."""


class Solver(Protocol):
    name: str

    def solve(self, model: LPModel, warm: bool = False) -> SolveResult: ...
