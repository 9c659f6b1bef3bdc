"""Cold solves seeded from a coarser plan: same optimum, fewer simplex iterations."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.planner.build import build_model
from scheduler.planner.extract import extract_plan
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.invariants import check_plan
from scheduler.planner.matrices import LPModel
from scheduler.planner.optimize import Planner
from scheduler.planner.seed import coarse_groups, coarse_inputs, map_basis
from scheduler.planner.solvers import HighsSolver
from scheduler.planner.timegrid import multires_grid, uniform_grid
from tests.test_solvers import START, example_inputs


def test_coarse_groups_merge_short_steps_in_time_order() -> None:
    g = coarse_groups(uniform_grid(START, 7200, 300), 1800)
    assert g.tolist() == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    # 5-minute steps for an hour, 15 minutes to 3 h, then hours: the hours stay alone.
    grid = multires_grid(START, 6 * 3600, "5min:1h,15min:3h,1h")
    g = coarse_groups(grid, 1800)
    assert np.all(np.diff(g) >= 0) and g[0] == 0
    assert np.bincount(g).tolist() == [6, 6, 2, 2, 2, 2, 1, 1, 1]
    # A short step after long ones (a horizon cut mid-hour) is a group of its own.
    grid = multires_grid(START, 5 * 3600 + 1800, "1h")
    assert coarse_groups(grid, 1800).tolist() == list(range(grid.n))


def test_coarse_inputs_average_energy_and_keep_the_tightest_cap() -> None:
    _, inp = example_inputs(hours=2, step_s=300)
    group = coarse_groups(inp.grid, 1800)
    coarse = coarse_inputs(inp, group)
    assert coarse.T == 4
    assert coarse.grid.starts_s[1] == inp.grid.starts_s[6]
    assert coarse.grid.ends_s[-1] == inp.grid.ends_s[-1]
    assert coarse.price_usd_per_mwh[0] == pytest.approx(inp.price_usd_per_mwh[:6].mean())
    assert coarse.cap_kw[1] == inp.cap_kw[6:12].min()
    for fine, merged in zip(inp.peaks, coarse.peaks, strict=True):
        assert set(merged.steps.tolist()) == set(group[fine.steps].tolist())


def test_a_seeded_cold_plan_reaches_the_same_optimum_in_fewer_iterations() -> None:
    # The example site over 48 h of 5-minute steps, with its DR events: every family.
    cfg, inp = example_inputs(hours=48, step_s=300)
    plain = Planner()
    plain.seed_min_vars = None
    seeded = Planner()
    seeded.seed_min_vars = 0
    _, r0, _ = plain.solve(inp)
    m1, r1, b1 = seeded.solve(inp)
    assert r0.ok and r1.ok
    assert "seed" not in r0.extras
    assert r1.extras["seed"]["coarse_steps"] == 96
    assert r1.objective == pytest.approx(r0.objective, rel=1e-9, abs=1e-6)
    assert r1.iterations < r0.iterations / 2
    plan = extract_plan(inp, m1, r1, b1, cfg.site.name, cfg.site.timezone)
    assert plan.ok and check_plan(inp, m1, r1.x, plan) == []
    # The basis it ends on is the fine model's own: the next re-plan is warm from it.
    _, again, _ = seeded.solve(inp)
    assert again.warm and again.iterations == 0


def test_any_starting_basis_still_reaches_the_optimum() -> None:
    _, inp = example_inputs(hours=12, step_s=300)
    model = build_model(inp)
    best = HighsSolver().solve(model)
    rng = np.random.default_rng(7)
    for _ in range(3):
        cols = rng.integers(0, 3, model.n_vars).astype(np.int8)
        rows = rng.integers(0, 3, model.n_rows).astype(np.int8)
        result = HighsSolver().solve(model, start=(cols, rows))
        assert result.ok
        assert result.objective == pytest.approx(best.objective, rel=1e-9, abs=1e-6)


def test_a_basis_highs_refuses_falls_back_to_a_plain_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, inp = example_inputs(hours=12, step_s=300)
    plain = Planner()
    plain.seed_min_vars = None
    _, best, _ = plain.solve(inp)

    def short(*args: object) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = map_basis(*args)  # type: ignore[arg-type]
        return cols[:-1], rows  # one status short: HiGHS rejects the basis

    monkeypatch.setattr("scheduler.planner.optimize.map_basis", short)
    seeded = Planner()
    seeded.seed_min_vars = 0
    _, result, _ = seeded.solve(inp)
    assert result.ok and result.extras.get("seed_failed")
    assert result.objective == pytest.approx(best.objective, rel=1e-9, abs=1e-6)


def _seeded(
    inp: PlanInputs,
) -> tuple[
    np.ndarray, LPModel, LPModel, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]:
    """The 30-minute plan of ``inp`` solved, and its basis laid over the fine model:
    (group, fine, coarse, coarse basis, mapped basis)."""
    group = coarse_groups(inp.grid, 1800)
    fine, coarse = build_model(inp), build_model(coarse_inputs(inp, group))
    solver = HighsSolver()
    assert solver.solve(coarse).ok
    basis = solver.basis()
    assert basis is not None
    return group, fine, coarse, basis, map_basis(fine, coarse, *basis, group)


def test_the_coarse_basis_maps_onto_every_fine_block() -> None:
    _, inp = example_inputs(hours=6, step_s=300)
    group, fine, coarse, basis, (cols, rows) = _seeded(inp)
    assert len(cols) == fine.n_vars and len(rows) == fine.n_rows
    x = fine.var("x")
    cx = coarse.var("x")
    # A mode's status in each fine step is its coarse step's.
    assert np.array_equal(
        cols[x.start : x.stop].reshape(x.shape),
        basis[0][cx.start : cx.stop].reshape(cx.shape)[:, group],
    )
    # No column is held at a bound it does not have.
    assert not np.any((cols == 2) & ~np.isfinite(fine.col_hi))
    assert not np.any((cols == 0) & ~np.isfinite(fine.col_lo))


def test_rows_of_a_flat_block_take_their_coarse_steps_status() -> None:
    # Billed-peak rows are one flat block (a row per step of each peak group): without
    # their (group, step) the seed left them basic, and a demand charge that binds in
    # many steps cost the fine solve thousands of iterations to find out again. A day
    # holds the 4CP window beside the month's demand charge: two groups, one block.
    _, inp = example_inputs(hours=24, step_s=300)
    assert len(inp.peaks) == 2
    group, fine, coarse, basis, (_, rows) = _seeded(inp)
    fb, cb = fine.con("peak-charge"), coarse.con("peak-charge")
    assert fb.cells is not None and cb.cells is not None
    coarse_status = {
        (int(k), int(s)): int(v)
        for k, s, v in zip(*cb.cells, basis[1][cb.start : cb.stop], strict=True)
    }
    want = [coarse_status[int(k), int(group[s])] for k, s in zip(*fb.cells, strict=True)]
    assert rows[fb.start : fb.stop].tolist() == want
    assert set(want) != {1}  # some billed peak binds: the case this is about
