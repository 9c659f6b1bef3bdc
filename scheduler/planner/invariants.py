"""Post-solve checks of a plan against the physics and the hard limits.

Run by the tests on every solved plan; a failure is a bug in the model or the rounding.
A soft limit may be broken only where the plan reports it as a violation.
"""

from __future__ import annotations

import numpy as np

from scheduler.planner.class_caps import group_power_kw
from scheduler.planner.extract import TOL_KW, batch_by_step
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel
from scheduler.planner.plan import Plan
from scheduler.planner.rounding import units_awake

TOL = 1e-5
TOL_SLA = 1e-2  # tokens/s


def _covered(plan: Plan, names: tuple[str, ...], t: int) -> bool:
    s = plan.starts_s[t]
    return any(v.constraint in names and v.start_s <= s < v.end_s for v in plan.violations)


def plan_units(plan: Plan) -> np.ndarray:
    """The whole-unit plan as units per (class-mode, step)."""
    return np.concatenate([np.asarray(cp.units_by_mode, dtype=np.float64) for cp in plan.classes])


def check_plan(inp: PlanInputs, model: LPModel, x_all: np.ndarray, plan: Plan) -> list[str]:
    """Every broken invariant, in words; an empty list means the plan is sound."""
    bad: list[str] = []
    scale = max(1.0, float(inp.interconnect_kw))
    tol_kw = TOL * scale
    x = model.values(x_all, "x")
    imp = model.values(x_all, "grid-import")
    onsite = model.values(x_all, "onsite-used")

    def report(what: str, mask: np.ndarray | np.bool_) -> None:
        mask = np.atleast_1d(mask)
        if mask.any():
            bad.append(f"{what} at steps {np.flatnonzero(mask)[:5].tolist()}")

    load = (
        inp.pue * (float(inp.idle_kw @ inp.units) + (inp.power_kw - inp.idle_kw[inp.cm_class]) @ x)
        + inp.base_load_kw
    )
    report("LP site balance off", np.abs(imp + onsite - load) > tol_kw)
    report("LP on-site use above generation", onsite > inp.onsite_kw + tol_kw)
    on = units_awake(inp, x)
    report("LP units above units in service", (on > inp.units[:, None] + TOL).any(axis=0))
    report("LP negative units", (x < -TOL).any(axis=0))
    over = imp > inp.cap_kw + tol_kw
    report(
        "LP import above cap without a reported violation",
        over
        & ~np.array([_covered(plan, ("dr-cap", "site-import-limit"), t) for t in range(inp.T)]),
    )

    class_kw = group_power_kw(inp, x)
    for g, cls in enumerate(inp.class_cap_groups):
        uncovered = ~np.array([_covered(plan, ("class-cap",), t) for t in range(inp.T)])
        report(  # an excess under TOL_KW is not worth a violation: not one here either
            f"LP power of classes {list(cls)} above their cap without a reported violation",
            (class_kw[g] > inp.class_cap_kw[g] + max(tol_kw, TOL_KW)) & uncovered,
        )
        report(
            f"rounded power of classes {list(cls)} above their cap (and above the LP's)",
            group_power_kw(inp, plan_units(plan))[g]
            > np.maximum(inp.class_cap_kw[g], class_kw[g]) + tol_kw,
        )

    served = inp.tput_tok_s @ x
    if "slack-inference-sla" in model.var_blocks:
        spot = model.values(x_all, "spot-served")
        batch, _ = batch_by_step(inp, model, x_all)
        committed_lp = np.minimum(served - spot - batch, inp.committed_tok_s)
        short = committed_lp < inp.committed_tok_s - 1e-3 * np.maximum(inp.committed_tok_s, 1)
        # violations report what will run: an LP 9.9 units short that rounds to 10 is not
        short &= plan.served_committed_tok_s < inp.committed_tok_s - TOL_SLA
        report(
            "LP SLA short without a reported violation",
            short & ~np.array([_covered(plan, ("inference-sla",), t) for t in range(inp.T)]),
        )
        report("LP spot above demand", spot > inp.spot_tok_s + 1e-3)

    prev = np.concatenate(
        [[inp.initial_import_kw if inp.initial_import_kw is not None else imp[0]], imp[:-1]]
    )
    for name, limit, delta in (
        ("ramp-up", inp.ramp_up_kw, imp - prev),
        ("ramp-down", inp.ramp_down_kw, prev - imp),
    ):
        if limit is not None:
            report(
                f"LP {name} beyond limit without a reported violation",
                (delta > limit + tol_kw)
                & ~np.array([_covered(plan, (name,), t) for t in range(inp.T)]),
            )

    if "start" in model.var_blocks:
        wear = np.flatnonzero((inp.start_cost_usd > 0) | (inp.min_on_s > 0) | (inp.min_off_s > 0))
        start = model.values(x_all, "start")
        init = model.values(x_all, "initial-on")
        s = inp.grid.starts_s
        for w, c in enumerate(wear):
            change = np.diff(on[c], prepend=init[w])
            stop = start[w] - change
            report(
                f"LP starts below the units woken for {inp.class_names[c]}",
                start[w] < change - 1e-6 * max(1, inp.units[c]),
            )
            for dwell, moves, need_on in (
                (inp.min_on_s[c], start[w], True),
                (inp.min_off_s[c], stop, False),
            ):
                if dwell <= 0:
                    continue
                recent = np.array(
                    [moves[(s > s[t] - dwell) & (s <= s[t])].sum() for t in range(inp.T)]
                )
                have = on[c] if need_on else inp.units[c] - on[c]
                report(
                    f"LP {'min-on' if need_on else 'min-off'} broken for {inp.class_names[c]}",
                    have < recent - 1e-4 * max(1, inp.units[c]),
                )

    # the whole-unit plan
    for cp in plan.classes:
        u = cp.units_by_mode
        report(
            f"rounded units of {cp.name} not whole or negative",
            ((u != np.round(u)) | (u < 0)).any(axis=0),
        )
        report(f"rounded units of {cp.name} above units in service", u.sum(axis=0) > cp.units)
    report(
        "rounded import above the cap (and above the LP's import)",
        plan.import_kw > np.maximum(inp.cap_kw, imp) + tol_kw,
    )
    # truncating the LP's units always fits under the cap: rounding must do no worse
    floor_served = np.minimum(inp.tput_tok_s @ np.floor(x + 1e-9), inp.committed_tok_s)
    report(
        "rounded plan serves less committed inference than the LP's truncated units",
        plan.served_committed_tok_s < floor_served - 1e-6 * np.maximum(floor_served, 1),
    )
    report(
        "rounded SLA short without a reported violation",
        (plan.served_committed_tok_s < inp.committed_tok_s - TOL_SLA)
        & ~np.array([_covered(plan, ("inference-sla",), t) for t in range(inp.T)]),
    )
    return bad
