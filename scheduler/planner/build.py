"""inputs -> LP model: the constraint families in order, assembled into one matrix."""

from __future__ import annotations

from scheduler.planner.class_caps import define_class_caps
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


def build_model(inp: PlanInputs, integer: bool = False, reuse: LPModel | None = None) -> LPModel:
    """Build the site LP. ``reuse``: a previous model whose matrix is kept when this one's
    is the same (``ModelBuilder.build``), for a warm update of costs and bounds only."""
    b = ModelBuilder()
    x = define_units(b, inp)
    imp = define_site_balance(b, inp, x)
    define_import_limit(b, inp, imp)
    define_class_caps(b, inp, x)
    define_inference(b, inp, x)
    define_wear(b, inp, x)
    define_ramp(b, inp, imp)
    define_peaks(b, inp, imp)
    return b.build(INTEGER_BLOCKS if integer else (), reuse=reuse)
