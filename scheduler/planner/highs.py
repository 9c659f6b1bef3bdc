"""The HiGHS back-end through highspy (the default solver): a whole model passed as arrays,
a warm re-solve that pushes only the costs and bounds that changed, a starting basis, and
the model written as MPS for the other back-ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from scheduler.planner.matrices import LPModel
from scheduler.planner.solve_result import SolverError, SolveResult, SolveStatus

if TYPE_CHECKING:
    import highspy


__all__ = ["HighsSolver", "write_mps"]

_STDOUT_LOCK = threading.Lock()


def _quiet_highs(hs: Any) -> highspy.Highs:
    """A ``highspy.Highs`` with its output off, its banner kept off stdout.

    highspy 1.16 logs "Running HiGHS ..." from the constructor, before any option can be
    set, with C stdio on file descriptor 1, so ``--json`` output would not be JSON. The
    descriptor is pointed at the null device for the construction only (the banner says
    nothing ``pip show highspy`` does not; on stderr it would clutter every error).
    """
    with _STDOUT_LOCK:
        sys.stdout.flush()
        try:
            saved = os.dup(1)
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:  # no stdout at all: nothing to keep clean
            h = hs.Highs()
        else:
            try:
                os.dup2(null, 1)
                os.close(null)
                h = hs.Highs()
                h.setOptionValue("output_flag", False)
                _flush_c_stdio()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers, so text the library buffered goes where fd 1 points now."""
    # no libc symbol table (e.g. Windows): nothing of ours is buffered there
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def _raw(model: LPModel) -> dict[str, np.ndarray]:
    """Copies of the model's costs and bounds as the model has them (the next warm
    update compares with these)."""
    return {
        "cost": np.array(model.c, dtype=np.float64),
        "col_lo": np.array(model.col_lo, dtype=np.float64),
        "col_hi": np.array(model.col_hi, dtype=np.float64),
        "row_lo": np.array(model.row_lo, dtype=np.float64),
        "row_hi": np.array(model.row_hi, dtype=np.float64),
    }


class HighsSolver:
    """HiGHS through highspy. Keeps the last model: ``solve(model, warm=True)`` with the
    same structure pushes only new costs and bounds and re-solves from the last basis."""

    name = "highs"
    #: The site LP is built without redundancy; HiGHS's presolve cost more than it saved
    #: on it (20 x 5 x 576: 1.0 s with it, 0.5 s without; docs/performance.md).
    DEFAULTS: ClassVar[dict[str, Any]] = {"presolve": "off"}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        import highspy

        self._hs = highspy
        self._h = _quiet_highs(highspy)
        for key, value in {**self.DEFAULTS, **(options or {})}.items():
            status = self._h.setOptionValue(key, value)
            if status != highspy.HighsStatus.kOk:
                raise SolverError(f"HiGHS rejected option {key}={value!r}")
        self._shape: tuple[int, int] | None = None
        self._held: dict[str, np.ndarray] = {}
        self._offset = 0.0

    def _pass(self, model: LPModel) -> None:
        """Hand HiGHS the whole model, as arrays (the ``HighsLp`` route converts the matrix
        element by element: 50 ms instead of 8 ms at 260k nonzeros)."""
        hs = self._hs
        if model.A is None:
            raise SolverError("a cold solve needs the model's matrix")
        held = self._arrays(model)
        A = model.A
        integrality = (
            model.integrality().astype(np.int32)
            if model.integer_blocks
            else np.zeros(model.n_vars, dtype=np.int32)  # all continuous: an LP
        )
        self._h.clearSolver()
        status = self._h.passModel(
            model.n_vars,
            model.n_rows,
            int(A.nnz),
            int(hs.MatrixFormat.kColwise),
            int(hs.ObjSense.kMinimize),
            float(model.offset),
            held["cost"],
            held["col_lo"],
            held["col_hi"],
            held["row_lo"],
            held["row_hi"],
            np.ascontiguousarray(A.indptr, dtype=np.int32),
            np.ascontiguousarray(A.indices, dtype=np.int32),
            np.ascontiguousarray(A.data, dtype=np.float64),
            integrality,
        )
        if status != hs.HighsStatus.kOk:
            raise SolverError("HiGHS refused the model")
        self._shape = (model.n_vars, model.n_rows)
        self._held, self._offset = _raw(model), model.offset

    def _update(self, model: LPModel) -> None:
        """Push to HiGHS only the costs and bounds that differ from what it holds: a price
        change touches a few hundred columns, and every change HiGHS takes costs it time.
        The model's own arrays are compared with the last model's, and only the entries
        that changed are converted to HiGHS's infinity (issue 18: converting them all took
        half of this at every backtest decision)."""
        h, held = self._h, self._held
        now = _raw(model)

        def changed(*names: str) -> np.ndarray:
            diff = now[names[0]] != held[names[0]]
            for name in names[1:]:
                diff |= now[name] != held[name]
            return np.flatnonzero(diff).astype(np.int32)

        inf = self._hs.kHighsInf

        def lower(a: np.ndarray) -> np.ndarray:
            return np.where(np.isinf(a), -inf, a)

        def upper(a: np.ndarray) -> np.ndarray:
            return np.where(np.isinf(a), inf, a)

        if len(idx := changed("cost")):
            h.changeColsCost(len(idx), idx, now["cost"][idx])
        if len(idx := changed("col_lo", "col_hi")):
            h.changeColsBounds(len(idx), idx, lower(now["col_lo"][idx]), upper(now["col_hi"][idx]))
        if len(idx := changed("row_lo", "row_hi")):
            h.changeRowsBounds(  # type: ignore[attr-defined]  # missing from highspy's stubs
                len(idx), idx, lower(now["row_lo"][idx]), upper(now["row_hi"][idx])
            )
        if model.offset != self._offset:
            h.changeObjectiveOffset(model.offset)
        self._held, self._offset = now, model.offset

    def _arrays(self, model: LPModel) -> dict[str, np.ndarray]:
        """Costs and bounds as HiGHS holds them (with its own infinity)."""
        inf = self._hs.kHighsInf
        return {
            "cost": np.array(model.c, dtype=np.float64),
            "col_lo": np.where(np.isinf(model.col_lo), -inf, model.col_lo),
            "col_hi": np.where(np.isinf(model.col_hi), inf, model.col_hi),
            "row_lo": np.where(np.isinf(model.row_lo), -inf, model.row_lo),
            "row_hi": np.where(np.isinf(model.row_hi), inf, model.row_hi),
        }

    def basis(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last solve's basis: column and row statuses as HiGHS numbers them
        (0 lower, 1 basic, 2 upper, 3 zero), or None when it has none."""
        b = self._h.getBasis()
        if not b.valid:
            return None
        return (
            np.fromiter((int(v) for v in b.col_status), dtype=np.int8, count=len(b.col_status)),
            np.fromiter((int(v) for v in b.row_status), dtype=np.int8, count=len(b.row_status)),
        )

    def _start_from(self, cols: np.ndarray, rows: np.ndarray) -> None:
        """Start the next solve from these statuses, as an "alien" basis: HiGHS completes
        or trims it to a nonsingular one."""
        hs = self._hs
        status = [hs.HighsBasisStatus(i) for i in range(5)]
        b = hs.HighsBasis()
        b.col_status = [status[v] for v in cols.tolist()]
        b.row_status = [status[v] for v in rows.tolist()]
        b.alien = True
        b.valid = True
        if self._h.setBasis(b) != hs.HighsStatus.kOk:
            raise SolverError("HiGHS refused the starting basis")

    def solve(
        self,
        model: LPModel,
        warm: bool = False,
        start: tuple[np.ndarray, np.ndarray] | None = None,
        duals: bool = True,
    ) -> SolveResult:
        """Solve; ``warm`` re-solves the last model with this one's costs and bounds from
        the last basis (the matrix must be the same); ``start`` gives a cold solve a
        basis to begin from (column and row statuses, as ``basis()`` returns them).
        ``duals=False`` leaves ``row_duals`` None: highspy hands each vector over as a
        Python list, and a caller that reads only ``x`` (the backtest) saves converting
        the rows' (about 0.3 ms of a 10 ms decision)."""
        hs = self._hs
        t0 = time.perf_counter()
        warm = warm and self._shape == (model.n_vars, model.n_rows)
        if warm:
            self._update(model)
        else:
            self._pass(model)
            if start is not None:
                self._start_from(*start)
        self._h.run()
        runtime = time.perf_counter() - t0
        ms = self._h.getModelStatus()
        status = {
            hs.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
            hs.HighsModelStatus.kInfeasible: SolveStatus.INFEASIBLE,
            hs.HighsModelStatus.kUnbounded: SolveStatus.UNBOUNDED,
            hs.HighsModelStatus.kUnboundedOrInfeasible: SolveStatus.INFEASIBLE,
            hs.HighsModelStatus.kTimeLimit: SolveStatus.TIME_LIMIT,
        }.get(ms, SolveStatus.ERROR)
        info = self._h.getInfo()
        sol = self._h.getSolution()
        x = np.asarray(sol.col_value, dtype=np.float64)
        row_duals = np.asarray(sol.row_dual, dtype=np.float64) if duals and sol.dual_valid else None
        return SolveResult(
            status,
            self._h.modelStatusToString(ms),
            float(info.objective_function_value),
            x,
            row_duals,
            self.name,
            runtime,
            warm,
            int(info.simplex_iteration_count),
        )


def write_mps(model: LPModel, path: str | Path) -> None:
    """Write the model (without its constant offset) as free MPS through HiGHS."""
    scratch = HighsSolver()
    offset = model.offset
    model.offset = 0.0
    try:
        scratch._pass(model)
    finally:
        model.offset = offset
    scratch._h.writeModel(str(path))
