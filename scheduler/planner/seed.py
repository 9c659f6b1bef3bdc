"""Seed a cold solve with the basis of a coarser plan of the same site.

A cold 20-class plan over 576 five-minute steps is 95 % HiGHS's dual simplex walking from
the all-slack basis (about 20,000 iterations). The same site planned at 30-minute steps
solves in a tenth of the time, and its optimal basis, repeated over each coarse step's
fine steps, is close to the fine optimum: which modes run, which caps bind, which dwell
rows hold, which billed peaks are reached. HiGHS takes it as an "alien" basis (it repairs
the count and any singularity), and the fine solve needs a tenth to a twentieth of the
iterations. The objective is the fine LP's own optimum either way; the seed only changes
where the simplex starts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scheduler.planner.inputs import BatchWindow, PeakGroup, PlanInputs
from scheduler.planner.matrices import Block, LPModel
from scheduler.planner.timegrid import TimeGrid

#: Length a coarse step aims at; steps already that long stay as they are.
SEED_STEP_S = 1800
#: Seed only models of this many columns or more: below, a plain cold solve is about as
#: fast as the coarse solve it would need (docs/performance.md).
SEED_MIN_VARS = 5_000
#: ... and no more than this: each simplex iteration from a seeded basis costs more (it
#: starts dense), and at 810k columns that outweighed cutting them from 227k to 88k (76 s
#: against 71 s); at 206k columns the seed wins (1.1 s against 2.4 s).
SEED_MAX_VARS = 300_000

# HiGHS's basis statuses (HighsBasisStatus): lower, basic, upper, zero (free), nonbasic.
LOWER, BASIC, UPPER, ZERO = 0, 1, 2, 3


def coarse_groups(grid: TimeGrid, step_s: int = SEED_STEP_S) -> np.ndarray:
    """For each step, the coarse step it falls in: consecutive steps within the same
    ``step_s`` span of the horizon merge; a step as long as that stays alone."""
    span = (grid.starts_s - grid.starts_s[0]) // step_s
    long = grid.dur_s >= step_s
    new = np.ones(grid.n, dtype=bool)
    new[1:] = long[1:] | long[:-1] | (span[1:] != span[:-1])
    return np.cumsum(new) - 1


def coarse_inputs(inp: PlanInputs, group: np.ndarray) -> PlanInputs:
    """The same site over merged steps: energy-like series averaged over time, caps at
    their tightest, ramp limits scaled to the longer steps. Only a seed: it need not be
    the fine plan's exact aggregate, only close to it."""
    G = int(group.max()) + 1
    dur = inp.grid.dur_s.astype(np.float64)
    span = np.bincount(group, weights=dur, minlength=G)
    # Groups of consecutive steps numbered 0, 1, ... in order (as coarse_groups and the
    # backtest's --plan-resolution make them): a reduction per run of steps, the same
    # numbers as ufunc.at's at a fraction of its cost (issue 18: it runs every decision).
    first = np.flatnonzero(np.diff(group, prepend=-1))
    runs = len(first) == G and bool((group[first] == np.arange(G)).all())
    if runs:
        starts = np.minimum.reduceat(inp.grid.starts_s, first)
        ends = np.maximum.reduceat(inp.grid.ends_s, first)
    else:
        starts = np.full(G, np.iinfo(np.int64).max)
        np.minimum.at(starts, group, inp.grid.starts_s)
        ends = np.zeros(G, dtype=np.int64)
        np.maximum.at(ends, group, inp.grid.ends_s)

    def mean(a: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=a * dur, minlength=G) / span

    def tightest(a: np.ndarray) -> np.ndarray:
        if runs:
            return np.minimum.reduceat(np.asarray(a, dtype=np.float64), first)
        out = np.full(G, np.inf)
        np.minimum.at(out, group, a)
        return out

    def ramp(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        per_step = np.asarray(np.broadcast_to(a, (inp.T,)), dtype=np.float64)
        return tightest(per_step) * np.bincount(group, minlength=G)

    def steps(s: np.ndarray) -> np.ndarray:
        return np.unique(group[s.astype(np.int64)])

    return dataclasses.replace(
        inp,
        grid=TimeGrid(starts, ends),
        price_usd_per_mwh=mean(inp.price_usd_per_mwh),
        hashprice=mean(inp.hashprice),
        base_load_kw=mean(inp.base_load_kw),
        onsite_kw=mean(inp.onsite_kw),
        cap_kw=tightest(inp.cap_kw),
        dr_cap_kw=tightest(inp.dr_cap_kw),
        class_cap_kw=np.array([tightest(row) for row in inp.class_cap_kw]).reshape(-1, G),
        committed_tok_s=mean(inp.committed_tok_s),
        spot_tok_s=mean(inp.spot_tok_s),
        ramp_up_kw=ramp(inp.ramp_up_kw),
        ramp_down_kw=ramp(inp.ramp_down_kw),
        peaks=[
            PeakGroup(p.name, p.kind, p.usd_per_kw, p.floor_kw, steps(p.steps), p.slot)
            for p in inp.peaks
        ],
        batches=[
            BatchWindow(b.name, b.tokens, b.usd_per_mtok, steps(b.steps), b.deadline_s)
            for b in inp.batches
        ],
        notes=[],
    )


def _expand(
    fine: dict[str, Block],
    coarse: dict[str, Block],
    status: np.ndarray,
    out: np.ndarray,
    group: np.ndarray,
) -> None:
    """Copy each block's statuses: time blocks (last axis = steps) take their coarse
    step's status, and so do the entries of flat blocks that name their (key, step)
    (``Block.cells``) where the coarse block has an entry of the same key at that coarse
    step; blocks of the same shape copy; the rest keep ``out``'s default."""
    T, G = len(group), int(group.max()) + 1
    for name, fb in fine.items():
        cb = coarse.get(name)
        if cb is None or cb.size == 0 or fb.size == 0:
            continue
        src = status[cb.start : cb.stop].reshape(cb.shape)
        if fb.cells is not None and cb.cells is not None:
            (fkey, fstep), (ckey, cstep) = fb.cells, cb.cells
            at = np.full((int(max(fkey.max(), ckey.max())) + 1, G), -1)
            at[ckey, cstep] = np.arange(cb.size)
            src_at = at[fkey, group[fstep]]
            have = src_at >= 0
            out[fb.start : fb.stop][have] = src.ravel()[src_at[have]]
        elif fb.shape == cb.shape and (not fb.shape or fb.shape[-1] != T):
            out[fb.start : fb.stop] = src.ravel()
        elif fb.shape[-1:] == (T,) and cb.shape[-1:] == (G,) and fb.shape[:-1] == cb.shape[:-1]:
            out[fb.start : fb.stop] = src[..., group].ravel()


def map_basis(
    fine: LPModel,
    coarse: LPModel,
    col_status: np.ndarray,
    row_status: np.ndarray,
    group: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse optimal basis laid over the fine model (HiGHS statuses, as int8)."""
    lo_finite, hi_finite = np.isfinite(fine.col_lo), np.isfinite(fine.col_hi)
    cols = np.where(lo_finite, LOWER, np.where(hi_finite, UPPER, ZERO)).astype(np.int8)
    _expand(fine.var_blocks, coarse.var_blocks, col_status, cols, group)
    # A bound the fine column lacks cannot hold it: move it to one it has.
    cols[(cols == UPPER) & ~hi_finite] = LOWER
    free = (cols == LOWER) & ~lo_finite
    cols[free] = np.where(hi_finite[free], UPPER, ZERO)
    rows = np.full(fine.n_rows, BASIC, dtype=np.int8)  # unmapped rows: their slack is basic
    _expand(fine.con_blocks, coarse.con_blocks, row_status, rows, group)
    rows[(rows == UPPER) & ~np.isfinite(fine.row_hi)] = BASIC
    rows[(rows == LOWER) & ~np.isfinite(fine.row_lo)] = BASIC
    return cols, rows
