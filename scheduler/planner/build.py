"""inputs -> LP model: the constraint families in order, assembled into one matrix."""

from __future__ import annotations

from scheduler.planner.constraints import (
    define_import_limit,
    define_inference,
    define_peaks,
    define_ramp,
    define_site_balance,
    define_units,
    define_wear,
)
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel, ModelBuilder

INTEGER_BLOCKS = ("x", "on", "start", "initial-on")


def build_model(inp: PlanInputs, with_matrix: bool = True, integer: bool = False) -> LPModel:
    """Build the site LP. ``with_matrix=False`` computes only costs and bounds, for a warm
    update of a model whose structure (``inp.structure_key()``) is unchanged."""
    b = ModelBuilder(with_matrix=with_matrix)
    x = define_units(b, inp)
    imp = define_site_balance(b, inp, x)
    define_import_limit(b, inp, imp)
    define_inference(b, inp, x)
    define_wear(b, inp, x)
    define_ramp(b, inp, imp)
    define_peaks(b, inp, imp)
    return b.build(INTEGER_BLOCKS if integer else ())
