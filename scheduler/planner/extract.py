"""Solved LP -> Plan: whole units, settled money, the import limit's value, and the
soft limits broken, in words."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from models.economics import mining_revenue_usd_per_hour
from scheduler.planner.constraints import TOK_PER_MTOK
from scheduler.planner.dwell import stopped_early
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import LPModel
from scheduler.planner.plan import ClassPlan, Money, Plan, Violation
from scheduler.planner.rounding import it_load_kw, round_plan, units_woken
from scheduler.planner.solvers import SolveResult

TOL_KW = 1e-3
TOL_TOK = 1e-2


@dataclass
class Settlement:
    import_kw: np.ndarray
    onsite_kw: np.ndarray
    load_kw: np.ndarray
    committed_served: np.ndarray
    spot_served: np.ndarray
    batch_served: np.ndarray
    money: Money


def settle(
    inp: PlanInputs, n: np.ndarray, batch_tok_s: np.ndarray, batch_usd: np.ndarray
) -> Settlement:
    """Money and power of running ``n`` units per (class-mode, step).

    Throughput goes to committed demand first, then to the batch jobs the LP scheduled
    (``batch_tok_s``, worth ``batch_usd`` per step), then to spot demand.
    """
    dt_h, tok = inp.grid.dt_h, inp.grid.dur_s.astype(np.float64)
    load = it_load_kw(inp, n)
    onsite = np.minimum(inp.onsite_kw, load)
    imp = load - onsite
    avail = inp.tput_tok_s @ n
    committed = np.minimum(inp.committed_tok_s, avail)
    left = avail - committed
    batch = np.minimum(batch_tok_s, left)
    spot = np.minimum(inp.spot_tok_s, left - batch)
    m = Money()
    m.mining_revenue = float(
        (mining_revenue_usd_per_hour(inp.hashrate_ths @ n, inp.hashprice) * dt_h).sum()
    )
    m.inference_committed_revenue = float(
        inp.committed_usd_per_mtok * (committed * tok).sum() / TOK_PER_MTOK
    )
    m.inference_spot_revenue = float(inp.spot_usd_per_mtok * (spot * tok).sum() / TOK_PER_MTOK)
    share = np.divide(batch, batch_tok_s, out=np.zeros_like(batch), where=batch_tok_s > 0)
    m.inference_batch_revenue = float((batch_usd * share).sum())
    dr = np.isfinite(inp.dr_cap_kw)
    m.dr_payment = float(
        inp.dr_payment_usd_per_mwh * ((inp.dr_baseline_kw - imp) * dt_h * dr).sum() / 1000.0
    )
    m.energy_cost = float((inp.price_usd_per_mwh * imp * dt_h).sum() / 1000.0)
    m.onsite_cost = float((inp.onsite_usd_per_mwh * onsite * dt_h).sum() / 1000.0)
    for g in inp.peaks:
        peak = max(g.floor_kw, float(imp[g.steps].max()) if len(g.steps) else 0.0)
        if g.kind == "demand-charge":
            m.demand_charge += g.usd_per_kw * (peak - g.floor_kw)
        else:
            m.coincident_peak_charge += g.usd_per_kw * peak
    starts = np.maximum(units_woken(inp, n), 0.0)
    m.start_cost = float((inp.start_cost_usd[:, None] * starts).sum())
    return Settlement(imp, onsite, load, committed, spot, batch, m)


def batch_by_step(
    inp: PlanInputs, model: LPModel, x_all: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Batch tokens/s the LP serves in each step, and what they earn (USD per step)."""
    if "batch-served" not in model.var_blocks:
        return np.zeros(inp.T), np.zeros(inp.T)
    served = model.values(x_all, "batch-served")  # (J, T)
    price = np.array([bw.usd_per_mtok for bw in inp.batches])
    usd = (served * price[:, None]).sum(axis=0) * inp.grid.dur_s / TOK_PER_MTOK
    return served.sum(axis=0), usd


def lp_peak_kw(inp: PlanInputs, model: LPModel, x_all: np.ndarray) -> np.ndarray:
    """Per step, the lowest billed peak the LP settled on for a group holding the step
    (inf where none)."""
    out = np.full(inp.T, np.inf)
    if "peak" not in model.var_blocks:
        return out
    peaks = model.values(x_all, "peak")
    for g, group in enumerate(inp.peaks):
        value = peaks[group.slot if inp.peak_slots is not None else g]
        out[group.steps] = np.minimum(out[group.steps], value)
    return out


def whole_units(
    inp: PlanInputs, model: LPModel, x_all: np.ndarray, peak_kw: np.ndarray | None = None
) -> np.ndarray:
    """The LP's units per (class-mode, step), rounded to whole units (scheduler/rounding)."""
    x = model.values(x_all, "x")
    return round_plan(inp, x, model.values(x_all, "grid-import"), inp.tput_tok_s @ x, peak_kw)


def _when(ts_s: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(float(ts_s), tz).strftime("%Y-%m-%d %H:%M %Z")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [i, j) runs where mask is true."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _mw(kw: float) -> str:
    """A power in words: MW from 1,000 kW, whole kW from 10, else three figures (a 0.29 kW
    excess over a 0.01 kW cap read "0 kW over a cap of 0 kW": the docs walk, session 25)."""
    if abs(kw) >= 1000:
        return f"{kw / 1000:.2f} MW"
    return f"{kw:.0f} kW" if abs(kw) >= 10 else f"{kw:.3g} kW"


def committed_floor_kw(inp: PlanInputs) -> np.ndarray:
    """Site load needed to serve committed inference alone, at the most efficient modes."""
    marginal = inp.marginal_kw
    serving = inp.tput_tok_s > 0
    base = inp.fixed_kw
    if not serving.any():
        return base
    best = float((marginal[serving] / inp.tput_tok_s[serving]).min())
    return base + inp.committed_tok_s * best


def class_cap_words(inp: PlanInputs, g: int) -> object:
    """Words for a cap on part of the site broken (``scheduler.planner.class_caps``)."""
    names = [inp.class_names[c] for c in inp.class_cap_groups[g]]
    ids = ", ".join(e.id for e in inp.events if e.classes and set(e.classes) == set(names))

    def words(seg: slice, worst: float, when: str) -> str:
        cap = float(inp.class_cap_kw[g, seg].min())
        return (
            f"classes {', '.join(names)} draw more than their cap of {_mw(cap)} at the meter "
            f"by up to {_mw(worst)} {when} (events: {ids or 'none'}): their units' idle "
            "power or committed inference needs it"
        )

    return words


def _violations(
    inp: PlanInputs, model: LPModel, x: np.ndarray, tz: ZoneInfo, sla_short: np.ndarray
) -> list[Violation]:
    """Soft limits broken; the SLA shortfall is the whole-unit plan's (what will run)."""
    s, e, dt_h = inp.grid.starts_s, inp.grid.ends_s, inp.grid.dt_h
    need = committed_floor_kw(inp)
    capacity = float(inp.tput_tok_s @ inp.units[inp.cm_class]) if inp.K else 0.0
    out: list[Violation] = []

    def add(
        name: str,
        amount: np.ndarray,
        tol: float,
        unit: str,
        weight: np.ndarray,
        total_unit: str,
        words: object,
    ) -> None:
        for i, j in _runs(amount > tol):
            seg = slice(i, j)
            worst = float(amount[seg].max())
            total = float((amount[seg] * weight[seg]).sum())
            when = f"from {_when(s[i], tz)} to {_when(e[j - 1], tz)}"
            msg = words(seg, worst, when) if callable(words) else str(words)
            out.append(
                Violation(name, int(s[i]), int(e[j - 1]), worst, unit, total, total_unit, msg)
            )

    dr_ids = ", ".join(ev.id for ev in inp.events if not ev.classes) or "none"

    def ic_words(seg: slice, worst: float, when: str) -> str:
        return (
            f"import exceeds the interconnect of {_mw(inp.interconnect_kw)} by up to "
            f"{_mw(worst)} {when}: base load and committed inference alone need "
            f"{_mw(float(need[seg].max()))}"
        )

    fixed = inp.fixed_kw  # what the site draws with every unit asleep

    def below_fixed(seg: slice) -> float | None:
        """The load nothing can shed, when a cap is below it."""
        cap, most = float(inp.cap_kw[seg].min()), float(fixed[seg].max())
        return most if most > cap + TOL_KW else None

    def dr_words(seg: slice, worst: float, when: str) -> str:
        cap = float(inp.cap_kw[seg].min())
        if (most := below_fixed(seg)) is not None:
            why = (
                f"the site's fixed load (base load and every unit's idle power) is "
                f"{_mw(most)}, which nothing can shed"
            )
        else:
            why = (
                f"base load and committed inference need {_mw(float(need[seg].max()))} and "
                "the penalties rank the SLA above the cap"
            )
        return (
            f"import exceeds the DR cap of {_mw(cap)} by up to {_mw(worst)} {when} "
            f"(events: {dr_ids}): {why}"
        )

    def sla_words(seg: slice, worst: float, when: str) -> str:
        committed = float(inp.committed_tok_s[seg].max())
        cap = float(inp.cap_kw[seg].min())
        pct = 100.0 * worst / committed if committed else 0.0
        if capacity < committed - TOL_TOK:
            why = (
                f"only {capacity:,.0f} tokens/s of serving capacity is in service for "
                f"{committed:,.0f} committed"
            )
        else:
            limit = "DR cap" if np.isfinite(inp.dr_cap_kw[seg]).any() else "import cap"
            why = (
                f"committed inference needs {_mw(float(need[seg].max()))} but the {limit} "
                f"is {_mw(cap)}"
            )
            if (most := below_fixed(seg)) is not None:
                why += (
                    f", below the site's fixed load of {_mw(most)} (base load and every "
                    "unit's idle power): nothing is left to serve it"
                )
        return (
            f"committed inference short by up to {worst:,.0f} tokens/s ({pct:.1f}%) {when}: {why}"
        )

    def ramp_words(direction: str) -> object:
        def words(seg: slice, worst: float, when: str) -> str:
            lim = inp.ramp_up_kw if direction == "up" else inp.ramp_down_kw
            if lim is None:  # the slack exists only where a limit was set
                return when
            cause = (
                "to follow a DR cap or price spike" if direction == "down" else "to use cheap power"
            )
            return (
                f"import ramps {direction} faster than the limit of "
                f"{_mw(float(lim[seg].min()))} per step, by up to {_mw(worst)}, {when}, "
                f"{cause}"
            )

        return words

    add(
        "site-import-limit",
        model.values(x, "slack-site-import-limit"),
        TOL_KW,
        "kW",
        dt_h,
        "kWh",
        ic_words,
    )
    add("dr-cap", model.values(x, "slack-dr-cap"), TOL_KW, "kW", dt_h, "kWh", dr_words)
    for g, over in enumerate(model.values(x, "slack-class-cap")):
        add("class-cap", over, TOL_KW, "kW", dt_h, "kWh", class_cap_words(inp, g))
    if "slack-inference-sla" in model.var_blocks:
        add(
            "inference-sla",
            sla_short,
            TOL_TOK,
            "tokens/s",
            inp.grid.dur_s.astype(np.float64),
            "tokens",
            sla_words,
        )
    for direction in ("up", "down"):
        name = f"ramp-{direction}"
        if f"slack-{name}" in model.var_blocks:
            add(
                name,
                model.values(x, f"slack-{name}"),
                TOL_KW,
                "kW",
                np.ones(inp.T),
                "kW",
                ramp_words(direction),
            )
    if "slack-batch-deadline" in model.var_blocks:
        late = model.values(x, "slack-batch-deadline")
        for bw, miss in zip(inp.batches, late, strict=True):
            if miss > 1.0:
                when = _when(bw.deadline_s, tz)
                out.append(
                    Violation(
                        "batch-deadline",
                        int(s[0]),
                        int(bw.deadline_s),
                        float(miss),
                        "tokens",
                        float(miss),
                        "tokens",
                        f"batch job {bw.name!r} misses {miss:,.0f} of {bw.tokens:,.0f} tokens due "
                        f"by {when}: not enough serving capacity or power before the deadline",
                    )
                )
    return out


def extract_plan(
    inp: PlanInputs, model: LPModel, result: SolveResult, build_s: float, site: str, timezone: str
) -> Plan:
    """Turn a solver result into a Plan (empty schedule if the solve failed)."""
    tz = ZoneInfo(timezone)
    x_all = result.x if result.ok else np.zeros(model.n_vars)
    x = model.values(x_all, "x")
    T = inp.T
    batch_tok, batch_usd = batch_by_step(inp, model, x_all)
    n = (
        whole_units(inp, model, x_all, lp_peak_kw(inp, model, x_all))
        if result.ok
        else np.zeros((inp.K, T), dtype=np.int64)
    )
    final = settle(inp, n, batch_tok, batch_usd)
    lp = settle(inp, x, batch_tok, batch_usd)

    value = np.zeros(T)
    if result.ok and result.row_duals is not None:
        dual = model.rows(result.row_duals, "site-import-limit")
        value = np.maximum(-dual, 0.0) / inp.grid.dt_h * 1000.0

    classes = []
    for c, name in enumerate(inp.class_names):
        ks = np.flatnonzero(inp.cm_class == c)
        nk = n[ks]
        power = inp.idle_kw[c] * (inp.units[c] - nk.sum(axis=0)) + inp.power_kw[ks] @ nk
        classes.append(
            ClassPlan(
                name=name,
                kind=inp.class_kind[c],
                units=int(inp.units[c]),
                modes=[inp.mode_names[k] for k in ks],
                mode_power_kw=[float(inp.power_kw[k]) for k in ks],
                units_by_mode=nk,
                units_by_mode_lp=x[ks],
                power_kw=power,
                hashrate_ths=inp.hashrate_ths[ks] @ nk,
                tokens_s=inp.tput_tok_s[ks] @ nk,
            )
        )

    short = np.maximum(inp.committed_tok_s - final.committed_served, 0.0)
    violations = _violations(inp, model, x_all, tz, short) if result.ok else []
    notes = list(inp.notes) + (stopped_early(inp, classes) if result.ok else [])
    if not result.ok:
        notes.append(
            f"solver {result.solver} ended with {result.status.value} "
            f"({result.termination}); no schedule to apply"
        )
    if inp.price_synthetic:
        notes.append(f"prices: {inp.price_label}")
    return Plan(
        site=site,
        timezone=timezone,
        created_at_s=int(time.time()),
        starts_s=inp.grid.starts_s,
        ends_s=inp.grid.ends_s,
        status=result.status.value,
        termination=result.termination,
        solver=result.solver,
        objective=result.objective,
        build_s=build_s,
        solve_s=result.runtime_s,
        warm=result.warm,
        seeded_from_steps=result.extras.get("seed", {}).get("coarse_steps"),
        price_label=inp.price_label,
        price_synthetic=inp.price_synthetic,
        price_usd_per_mwh=inp.price_usd_per_mwh,
        hashprice=inp.hashprice,
        import_kw=final.import_kw,
        onsite_used_kw=final.onsite_kw,
        load_kw=final.load_kw,
        cap_kw=inp.cap_kw,
        dr_cap_kw=inp.dr_cap_kw,
        import_value_usd_per_mwh=value,
        committed_tok_s=inp.committed_tok_s,
        served_committed_tok_s=final.committed_served,
        classes=classes,
        money=final.money,
        money_lp=lp.money,
        violations=violations,
        notes=notes,
        events=[ev.model_dump(mode="json", exclude_none=True) for ev in inp.events],
        model_size=model.describe() if model.A is not None else "",
    )
