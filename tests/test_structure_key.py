"""The warm re-plan reuses the previous matrix only when the new one is the same matrix.

Before, a hand-kept ``PlanInputs.structure_key()`` decided it: an input it forgot gave a
plan solved on a stale matrix, without an error. Now the model builder compares the
matrix it would build with the cached one, so no input can be forgotten.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scheduler.planner.build import build_model
from scheduler.planner.inputs import PlanInputs, assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import GPU, T0, flat_series, make_site


def _inputs(**sections: object) -> PlanInputs:
    site = make_site(**sections)
    grid = uniform_grid(T0, 4 * 3600, 3600)
    return assemble_inputs(site, grid, flat_series([100.0, 250.0, 420.0, 30.0]))


def _same_as_cold(planner: Planner, inp: PlanInputs) -> bool:
    _, warm, _ = planner.solve(inp)
    _, cold, _ = Planner().solve(inp)
    assert warm.ok and cold.ok
    return bool(np.isclose(warm.objective, cold.objective, rtol=1e-9, atol=1e-9))


def test_committed_demand_appearing_on_a_site_without_serving_rebuilds_the_matrix() -> None:
    """A miners-only site: the inference rows exist only once committed demand does.
    The old key (no demand in it) reused the matrix without those rows."""
    inp = _inputs()
    planner = Planner()
    planner.solve(inp)
    more = dataclasses.replace(inp, committed_tok_s=np.full(inp.T, 500.0))
    model, result, _ = planner.solve(more)
    assert result.ok
    assert "inference-sla" in model.con_blocks
    assert model.A is not None and model.A.shape == (model.n_rows, model.n_vars)
    assert _same_as_cold(planner, more)


def _perturbations(inp: PlanInputs) -> dict[str, PlanInputs]:
    """Every numeric input changed a little, one at a time."""
    out: dict[str, PlanInputs] = {}
    for f in dataclasses.fields(inp):
        value = getattr(inp, f.name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
            bumped = np.where(np.isfinite(value), value * 1.1 + 0.5, value)
            out[f.name] = dataclasses.replace(inp, **{f.name: bumped})
        elif isinstance(value, float) and f.name != "initial_import_kw":
            out[f.name] = dataclasses.replace(inp, **{f.name: value * 1.1 + 0.5})
    return out


@pytest.mark.parametrize("gpus", [False, True])
def test_the_matrix_is_reused_exactly_when_it_is_the_same(gpus: bool) -> None:
    devices = [
        {
            "name": "asic",
            "kind": "asic",
            "count": 10,
            "min_on_s": 7200,
            "start_cost_usd": 0.1,
            "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}],
        }
    ]
    if gpus:
        devices.append(dict(GPU))
    inp = _inputs(
        devices=devices,
        site={"ramp_up_kw_per_min": 1.0, "current_load_kw": 0.0},
        inference={"committed_tokens_s": 2000.0} if gpus else {},
        tariff={"demand_charge_usd_per_kw_month": 5.0},
    )
    base = build_model(inp)
    assert base.A is not None
    seen_rebuilt = seen_reused = 0
    for name, other in _perturbations(inp).items():
        fresh = build_model(other)
        reused = build_model(other, reuse=base)
        assert fresh.A is not None and reused.A is not None
        same = fresh.A.shape == base.A.shape and (fresh.A != base.A).nnz == 0
        assert reused.A is base.A if same else reused.A is not base.A, name
        # whatever was decided, the model handed to the solver is the fresh one's matrix
        assert reused.A.shape == fresh.A.shape and (reused.A != fresh.A).nnz == 0, name
        seen_rebuilt += not same
        seen_reused += same
        planner = Planner()
        planner.solve(inp)
        assert _same_as_cold(planner, other), name
    assert seen_rebuilt and seen_reused  # both paths were exercised
