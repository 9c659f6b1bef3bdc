"""Assemble the LP: named blocks of variables and constraints, one sparse matrix.

Constraint families add rows as COO triples over whole index arrays; the map from a
block's name to its columns or rows stays beside the matrix, so extraction, diagnostics
and tests address ``model.var("grid-import")`` instead of raw offsets.

The LP is ``min c@x + offset`` s.t. ``row_lo <= A@x <= row_hi``, ``col_lo <= x <= col_hi``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

INF = np.inf


@dataclass(frozen=True)
class Block:
    name: str
    start: int
    shape: tuple[int, ...]
    #: For a flat block whose entries each belong to one step (a row per group member,
    #: a row per (class, step) that needs one): each entry's (key, step), so that a basis
    #: can be carried between horizons of different steps (``scheduler.planner.seed``). Blocks
    #: shaped (..., T) carry their steps in their shape and leave this None.
    cells: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        # math.prod, not np.prod: called for every block of every build, and numpy's
        # reduction over a small tuple costs ~20 times more (issue 18: backtest speed)
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.start + self.size

    def index(self) -> np.ndarray:
        return np.arange(self.start, self.stop).reshape(self.shape)


@dataclass
class LPModel:
    c: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    A: sp.csc_matrix | None
    offset: float
    var_blocks: dict[str, Block]
    con_blocks: dict[str, Block]
    integer_blocks: tuple[str, ...] = ()
    #: The (row, col, coef) triples the matrix was assembled from, in the order the
    #: constraint families added them: a later build compares its own with these to
    #: decide whether ``A`` can be reused (``ModelBuilder.build(reuse=...)``).
    triples: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, compare=False, repr=False
    )
    #: True when ``A`` is the matrix of the model passed as ``reuse``.
    reused: bool = False

    @property
    def n_vars(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return len(self.row_lo)

    def var(self, name: str) -> Block:
        return self.var_blocks[name]

    def con(self, name: str) -> Block:
        return self.con_blocks[name]

    def values(self, x: np.ndarray, name: str) -> np.ndarray:
        b = self.var_blocks.get(name)
        if b is None:
            return np.zeros(0)
        return x[b.start : b.stop].reshape(b.shape)

    def rows(self, y: np.ndarray, name: str) -> np.ndarray:
        b = self.con_blocks.get(name)
        if b is None:
            return np.zeros(0)
        return y[b.start : b.stop].reshape(b.shape)

    def with_col_bounds(self, lower: np.ndarray, upper: np.ndarray) -> LPModel:
        """The same LP with other column bounds (fixing decisions, trivial plans)."""
        return replace(self, col_lo=lower, col_hi=upper, integer_blocks=())

    def integrality(self) -> np.ndarray:
        flags = np.zeros(self.n_vars, dtype=np.int8)
        for name in self.integer_blocks:
            if name in self.var_blocks:
                b = self.var_blocks[name]
                flags[b.start : b.stop] = 1
        return flags

    def describe(self) -> str:
        nnz = 0 if self.A is None else self.A.nnz
        return f"{self.n_vars} variables, {self.n_rows} constraints, {nnz} nonzeros"


def _full(value: float | np.ndarray, n: int) -> np.ndarray:
    if isinstance(value, (int, float)):  # the common scalar: np.full skips broadcast_to
        return np.full(n, float(value))
    arr = np.asarray(value, dtype=np.float64)
    return np.full(n, float(arr)) if arr.ndim == 0 else arr.reshape(-1).astype(np.float64)


@dataclass
class ModelBuilder:
    """Collects blocks, then assembles costs, bounds and the matrix in one place."""

    _c: list[np.ndarray] = field(default_factory=list)
    _lo: list[np.ndarray] = field(default_factory=list)
    _hi: list[np.ndarray] = field(default_factory=list)
    _rlo: list[np.ndarray] = field(default_factory=list)
    _rhi: list[np.ndarray] = field(default_factory=list)
    _rows: list[np.ndarray] = field(default_factory=list)
    _cols: list[np.ndarray] = field(default_factory=list)
    _vals: list[np.ndarray] = field(default_factory=list)
    var_blocks: dict[str, Block] = field(default_factory=dict)
    con_blocks: dict[str, Block] = field(default_factory=dict)
    offset: float = 0.0
    n_vars: int = 0
    n_rows: int = 0

    def add_vars(
        self,
        name: str,
        shape: tuple[int, ...],
        lower: float | np.ndarray = 0.0,
        upper: float | np.ndarray = INF,
        cost: float | np.ndarray = 0.0,
    ) -> np.ndarray:
        if name in self.var_blocks:
            raise ValueError(f"variable block {name!r} defined twice")
        block = Block(name, self.n_vars, shape)
        n = block.size
        self._c.append(_full(cost, n))
        self._lo.append(_full(lower, n))
        self._hi.append(_full(upper, n))
        self.var_blocks[name] = block
        self.n_vars += n
        return block.index()

    def add_cons(
        self,
        name: str,
        shape: tuple[int, ...],
        terms: list[tuple[np.ndarray, np.ndarray, np.ndarray | float]],
        lower: float | np.ndarray = -INF,
        upper: float | np.ndarray = INF,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Rows ``lower <= sum(coef * x[col]) <= upper``; each term gives (row, col, coef)
        arrays with row numbers local to this block. ``cells``: see ``Block.cells``."""
        if name in self.con_blocks:
            raise ValueError(f"constraint block {name!r} defined twice")
        block = Block(name, self.n_rows, shape, cells)
        n = block.size
        self._rlo.append(_full(lower, n))
        self._rhi.append(_full(upper, n))
        for rows, cols, coef in terms:
            r = np.asarray(rows, dtype=np.int64)
            self._rows.append(r.reshape(-1) + block.start)
            self._cols.append(np.asarray(cols, dtype=np.int64).reshape(-1))
            if isinstance(coef, (int, float)):  # most terms: np.full skips broadcast_to
                self._vals.append(np.full(r.size, float(coef)))
            else:
                self._vals.append(
                    np.broadcast_to(np.asarray(coef, dtype=np.float64), r.shape).reshape(-1)
                )
        self.con_blocks[name] = block
        self.n_rows += n
        return block.index()

    def build(self, integer_blocks: tuple[str, ...] = (), reuse: LPModel | None = None) -> LPModel:
        """The model. With ``reuse``, its matrix is kept when this model's would be the
        same one (same blocks, same triples in the same order): a warm re-plan then
        changes only costs and bounds. What decides is the matrix itself, so no input
        that alters it can be overlooked."""
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(self._cols) if self._cols else np.zeros(0, dtype=np.int64)
        vals = np.concatenate(self._vals) if self._vals else np.zeros(0)
        A: sp.csc_matrix | None = None
        if reuse is not None and _same_matrix(reuse, self, rows, cols, vals):
            A = reuse.A
            rows, cols, vals = reuse.triples or (rows, cols, vals)
        reused = A is not None
        if A is None:
            keep = vals != 0.0
            A = sp.csc_matrix(
                (vals[keep], (rows[keep], cols[keep])), shape=(self.n_rows, self.n_vars)
            )
            A.sum_duplicates()
        cat = np.concatenate
        return LPModel(
            c=cat(self._c) if self._c else np.zeros(0),
            col_lo=cat(self._lo) if self._lo else np.zeros(0),
            col_hi=cat(self._hi) if self._hi else np.zeros(0),
            row_lo=cat(self._rlo) if self._rlo else np.zeros(0),
            row_hi=cat(self._rhi) if self._rhi else np.zeros(0),
            A=A,
            offset=self.offset,
            var_blocks=dict(self.var_blocks),
            con_blocks=dict(self.con_blocks),
            integer_blocks=integer_blocks,
            triples=(rows, cols, vals),
            reused=reused,
        )


def _same_matrix(
    old: LPModel, new: ModelBuilder, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray
) -> bool:
    if old.A is None or old.triples is None:
        return False
    if old.A.shape != (new.n_rows, new.n_vars):
        return False
    if old.var_blocks != new.var_blocks or old.con_blocks != new.con_blocks:
        return False
    o_rows, o_cols, o_vals = old.triples
    return (
        np.array_equal(o_rows, rows)
        and np.array_equal(o_cols, cols)
        and np.array_equal(o_vals, vals)
    )
