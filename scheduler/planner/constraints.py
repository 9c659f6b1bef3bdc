"""Constraint families of the site LP, one ``define_*`` function each.

Every family is built over whole (class-mode, step) index arrays; there is no Python loop
over steps or devices. Block names are stable and greppable: they appear in diagnostics,
plan violations, tests and metrics.

Variables: ``x`` units per class-mode and step (sleeping units are the remainder),
``grid-import``, ``onsite-used``, ``spot-served``, ``batch-served``, ``start``/``stop``
(units waking and sleeping), ``peak`` (billed peaks), and ``slack-*`` for soft limits.
Money in USD, power in kW, energy in kWh, throughput in tokens/s.
"""

from __future__ import annotations

import numpy as np

from models.economics import mining_revenue_usd_per_hour, site_load_kw
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.matrices import INF, ModelBuilder

TOK_PER_MTOK = 1e6


def _per_step_tokens(inp: PlanInputs) -> np.ndarray:
    """Tokens served in each step per token/s of throughput."""
    return inp.grid.dur_s.astype(np.float64)


def define_units(b: ModelBuilder, inp: PlanInputs) -> np.ndarray:
    """``x[k, t]``: units of class-mode k in step t; at most the class's units in service,
    and at most the units that can reach mode k (``PlanInputs.mode_units_max``).

    Mining revenue sits on x: hashrate x hashprice / 24 per hour.
    """
    T, K = inp.T, inp.K
    revenue = (
        mining_revenue_usd_per_hour(inp.hashrate_ths[:, None], inp.hashprice[None, :])
        * inp.grid.dt_h[None, :]
    )
    x = b.add_vars("x", (K, T), 0.0, np.repeat(inp.mode_units_cap, T), -revenue)
    # classes with a min-off dwell get this limit from their min-off rows (on + recent
    # stops <= units), which imply it
    own = np.flatnonzero(inp.min_off_s <= 0)
    pos = np.full(inp.C, -1)
    pos[own] = np.arange(len(own))
    ks = np.flatnonzero(pos[inp.cm_class] >= 0)
    rows = pos[inp.cm_class[ks]][:, None] * T + np.arange(T)[None, :]
    b.add_cons(
        "class-units", (len(own), T), [(rows, x[ks], 1.0)], upper=np.repeat(inp.units[own], T)
    )
    return x


def define_site_balance(b: ModelBuilder, inp: PlanInputs, x: np.ndarray) -> np.ndarray:
    """grid import + on-site used = PUE x IT power + base load, per step.

    IT power = idle power of every unit in service + (mode power - idle) of each awake
    unit. DR payments (per MWh below the baseline during an event) sit on import.
    """
    T, dt_h = inp.T, inp.grid.dt_h
    dr = np.isfinite(inp.dr_cap_kw)
    pay = inp.dr_payment_usd_per_mwh * dr * dt_h / 1000.0
    imp = b.add_vars("grid-import", (T,), 0.0, INF, inp.price_usd_per_mwh * dt_h / 1000.0 + pay)
    b.offset -= float((pay * inp.dr_baseline_kw).sum())
    onsite = b.add_vars(
        "onsite-used", (T,), 0.0, inp.onsite_kw, inp.onsite_usd_per_mwh * dt_h / 1000.0
    )
    marginal, fixed = inp.marginal_kw, inp.fixed_kw
    steps = np.broadcast_to(np.arange(T), x.shape)
    b.add_cons(
        "site-balance",
        (T,),
        [
            (np.arange(T), imp, 1.0),
            (np.arange(T), onsite, 1.0),
            (steps, x, -np.broadcast_to(marginal[:, None], x.shape)),
        ],
        lower=fixed,
        upper=fixed,
    )
    return imp


def define_import_limit(b: ModelBuilder, inp: PlanInputs, imp: np.ndarray) -> None:
    """grid import <= min(interconnect, DR cap), softened by two priced slacks.

    The DR slack covers import between the DR cap and the interconnect; beyond the
    interconnect only the (far dearer) site slack remains. The row's dual is the value
    of one more kW of import in that step.
    """
    T, dt_h, pen = inp.T, inp.grid.dt_h, inp.penalties
    dr_room = np.where(
        np.isfinite(inp.dr_cap_kw), np.maximum(inp.interconnect_kw - inp.cap_kw, 0.0), 0.0
    )
    s_dr = b.add_vars("slack-dr-cap", (T,), 0.0, dr_room, pen.dr_cap_usd_per_mwh * dt_h / 1000)
    s_ic = b.add_vars(
        "slack-site-import-limit", (T,), 0.0, INF, pen.site_import_limit_usd_per_mwh * dt_h / 1000
    )
    r = np.arange(T)
    b.add_cons(
        "site-import-limit",
        (T,),
        [(r, imp, 1.0), (r, s_dr, -1.0), (r, s_ic, -1.0)],
        upper=inp.cap_kw,
    )


def define_inference(b: ModelBuilder, inp: PlanInputs, x: np.ndarray) -> None:
    """Committed SLA (soft), spot sales up to demand, deferrable batch jobs by deadline."""
    T, K, pen = inp.T, inp.K, inp.penalties
    serving = inp.tput_tok_s > 0
    if not (serving.any() or inp.committed_tok_s.any()):
        return
    tok = _per_step_tokens(inp)
    committed_value = inp.committed_usd_per_mtok / TOK_PER_MTOK * tok
    spot = b.add_vars(
        "spot-served", (T,), 0.0, inp.spot_tok_s, -inp.spot_usd_per_mtok / TOK_PER_MTOK * tok
    )
    sla = b.add_vars(
        "slack-inference-sla",
        (T,),
        0.0,
        inp.committed_tok_s,
        pen.inference_sla_usd_per_mtok / TOK_PER_MTOK * tok + committed_value,
    )
    b.offset -= float((committed_value * inp.committed_tok_s).sum())

    terms: list[tuple[np.ndarray, np.ndarray, np.ndarray | float]] = [
        (
            np.broadcast_to(np.arange(T), (K, T))[serving],
            x[serving],
            np.broadcast_to(inp.tput_tok_s[:, None], (K, T))[serving],
        ),
        (np.arange(T), spot, -1.0),
        (np.arange(T), sla, 1.0),
    ]
    if inp.batches:
        J = len(inp.batches)
        window = np.zeros((J, T), dtype=bool)
        for j, bw in enumerate(inp.batches):  # jobs are few; their steps are arrays
            window[j, bw.steps] = True
        price = np.array([bw.usd_per_mtok for bw in inp.batches])
        served = b.add_vars(
            "batch-served",
            (J, T),
            0.0,
            np.where(window, INF, 0.0),
            -price[:, None] / TOK_PER_MTOK * tok[None, :],
        )
        tokens = np.array([bw.tokens for bw in inp.batches])
        late = b.add_vars(
            "slack-batch-deadline",
            (J,),
            0.0,
            tokens,
            pen.batch_deadline_usd_per_mtok / TOK_PER_MTOK,
        )
        terms.append((np.broadcast_to(np.arange(T), (J, T)), served, -1.0))
        b.add_cons(
            "batch-deadline",
            (J,),
            [
                (
                    np.broadcast_to(np.arange(J)[:, None], (J, T)),
                    served,
                    np.broadcast_to(tok[None, :], (J, T)),
                ),
                (np.arange(J), late, 1.0),
            ],
            lower=tokens,
            upper=tokens,
        )
    b.add_cons("inference-sla", (T,), terms, lower=inp.committed_tok_s)


def _windows(starts: np.ndarray, dwell_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each (class, step t), the steps tau <= t that began less than dwell before t.

    Returns (row, tau) pairs with row = class_pos * T + t, and the first tau of each row.
    """
    T = len(starts)
    first = np.searchsorted(
        starts, (starts[None, :] - dwell_s[:, None]).ravel(), side="right"
    ).reshape(len(dwell_s), T)
    t = np.broadcast_to(np.arange(T), first.shape)
    length = (t - first + 1).ravel()
    rows = np.repeat(np.arange(first.size), length)
    within = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    tau = np.repeat(first.ravel(), length) + within
    return rows, tau, first


def define_held_on(b: ModelBuilder, inp: PlanInputs, wear: np.ndarray, on: np.ndarray) -> None:
    """Units woken before the horizon stay awake until their min-on has passed: a floor on
    ``on``, softened by ``slack-min-on``. The slack is priced per unit and step at
    ``penalties.min_on_usd_per_mwh`` of the class's top mode's power, below the DR cap's
    and the committed inference's prices (a grid cap stops the unit early) and above any
    energy price. Once excused a unit stays excused (the slack never falls while the
    floor holds): a curtail that stopped it does not wake it again to finish its min-on.
    """
    assert inp.held_on is not None
    held = inp.held_on[wear]  # (W, T), non-increasing along T
    w_idx, t_idx = np.nonzero(held > 0)
    if len(w_idx) == 0:
        return
    top_kw = _max_power(inp)[wear]
    price = inp.penalties.min_on_usd_per_mwh * top_kw[w_idx] * inp.grid.dt_h[t_idx]
    n = len(w_idx)
    short = b.add_vars("slack-min-on", (n,), 0.0, held[w_idx, 0], price / 1000.0)
    own = np.arange(n)
    b.add_cons(
        "min-on-held",
        (n,),
        [(own, on[w_idx, t_idx], 1.0), (own, short, 1.0)],
        lower=held[w_idx, t_idx],
        cells=(wear[w_idx], t_idx),
    )
    # the slack of a cell never below the one of the step before (same class, held too):
    # a class's held steps are a prefix of the horizon, so in nonzero's row-major order
    # that cell is the one just before
    cur = np.flatnonzero(t_idx > 0)
    before = cur - 1
    assert (w_idx[before] == w_idx[cur]).all() and (t_idx[before] == t_idx[cur] - 1).all()
    if len(cur):
        m = len(cur)
        b.add_cons(
            "min-on-excused",
            (m,),
            [(np.arange(m), short[cur], 1.0), (np.arange(m), short[before], -1.0)],
            lower=0.0,
            cells=(wear[w_idx[cur]], t_idx[cur]),
        )


def define_wear(b: ModelBuilder, inp: PlanInputs, x: np.ndarray) -> None:
    """Units waking (``start``), their cost, and minimum on/off dwell times.

    ``on[c,t]`` counts awake units; ``start[c,t] >= on[c,t] - on[c,t-1]``. Stops are
    implicit (start - change of on), so the min-off rule "units stopped in the last
    min_off_s stay asleep" telescopes to ``on[c,a-1] + starts in [a, t] <= units`` where
    step a opens the window; min-on is ``on[c,t] >= starts in the last min_on_s``.
    """
    T = inp.T
    wear = np.flatnonzero((inp.start_cost_usd > 0) | (inp.min_on_s > 0) | (inp.min_off_s > 0))
    if len(wear) == 0:
        return
    W = len(wear)
    pos = np.full(inp.C, -1)
    pos[wear] = np.arange(W)
    known = inp.initial_on[wear] >= 0
    units = inp.units[wear]
    # Units on before the horizon: fixed when telemetry knows, free (no start charged) else.
    init = b.add_vars(
        "initial-on",
        (W,),
        np.where(known, inp.initial_on[wear], 0.0),
        np.where(known, inp.initial_on[wear], units),
        0.0,
    )
    on_hi = np.repeat(units, T).reshape(W, T)
    if inp.held_off is not None:  # units stopped before the horizon, within their min-off
        on_hi = np.maximum(on_hi - inp.held_off[wear], 0.0)
    on = b.add_vars("on", (W, T), 0.0, on_hi.ravel(), 0.0)
    start = b.add_vars("start", (W, T), 0.0, INF, np.repeat(inp.start_cost_usd[wear], T))
    if inp.held_on is not None:  # units woken before the horizon, within their min-on
        define_held_on(b, inp, wear, on.reshape(W, T))

    ks = np.flatnonzero(pos[inp.cm_class] >= 0)
    rows_x = pos[inp.cm_class[ks]][:, None] * T + np.arange(T)[None, :]
    r = np.arange(W * T)
    b.add_cons("unit-on", (W, T), [(rows_x, x[ks], 1.0), (r, on, -1.0)], lower=0.0, upper=0.0)
    prev = np.concatenate([init[:, None], on[:, :-1]], axis=1)  # on[c, t-1]
    b.add_cons("unit-start", (W, T), [(r, start, 1.0), (r, on, -1.0), (r, prev, 1.0)], lower=0.0)

    starts = inp.grid.starts_s.astype(np.float64)
    for name, dwell in (("min-on", inp.min_on_s), ("min-off", inp.min_off_s)):
        cls = np.flatnonzero(dwell[wear] > 0)
        if len(cls) == 0:
            continue
        wrows, tau, first = _windows(starts, dwell[wear][cls])
        # A window of one step (dwell no longer than the step) is implied by unit-start.
        keep = (first < np.arange(T)[None, :]).ravel()
        if not keep.any():
            continue
        row_id = np.cumsum(keep) - 1
        sel = keep[wrows]
        wrows, tau = row_id[wrows[sel]], tau[sel]
        n = int(keep.sum())
        cls_of_row = np.repeat(cls, T)[keep]
        cells = (cls_of_row, np.tile(np.arange(T), len(cls))[keep])
        wcls = cls_of_row[wrows]
        own = np.arange(n)
        if name == "min-on":
            b.add_cons(
                name,
                (n,),
                [(own, on[cls].ravel()[keep], 1.0), (wrows, start[wcls, tau], -1.0)],
                lower=0.0,
                cells=cells,
            )
        else:
            before = prev[cls[:, None], first].ravel()[keep]  # on just before the window
            b.add_cons(
                name,
                (n,),
                [(own, before, 1.0), (wrows, start[wcls, tau], 1.0)],
                upper=units[cls_of_row],
                cells=cells,
            )


def define_ramp(b: ModelBuilder, inp: PlanInputs, imp: np.ndarray) -> None:
    """|import[t] - import[t-1]| within the ramp limit, the first step against the
    measured current load; soft, priced per MW of excess."""
    T, pen = inp.T, inp.penalties
    if inp.ramp_up_kw is None and inp.ramp_down_kw is None:
        return
    known = inp.initial_import_kw is not None
    init_kw = inp.initial_import_kw or 0.0
    # Import before the horizon: the measured load when known, free otherwise.
    init = b.add_vars(
        "initial-import", (1,), init_kw if known else 0.0, init_kw if known else INF, 0.0
    )
    prev = np.concatenate([init, imp[:-1]])
    r = np.arange(T)
    for name, limit, sign in (
        ("ramp-up", inp.ramp_up_kw, 1.0),
        ("ramp-down", inp.ramp_down_kw, -1.0),
    ):
        if limit is None:
            continue
        slack = b.add_vars(f"slack-{name}", (T,), 0.0, INF, pen.ramp_usd_per_mw / 1000.0)
        b.add_cons(name, (T,), [(r, imp, sign), (r, prev, -sign), (r, slack, -1.0)], upper=limit)


def define_peaks(b: ModelBuilder, inp: PlanInputs, imp: np.ndarray) -> None:
    """Billed peaks: peak[g] >= import[t] for each step t of group g (a billing month for
    the demand charge, floored at the peak reached so far; a coincident-peak window)."""
    if inp.peak_slots is not None:
        _define_peak_slots(b, inp, imp, inp.peak_slots)
        return
    if not inp.peaks:
        return
    G = len(inp.peaks)
    peak = b.add_vars(
        "peak",
        (G,),
        np.array([p.floor_kw for p in inp.peaks]),
        INF,
        np.array([p.usd_per_kw for p in inp.peaks]),
    )
    group = np.concatenate([np.full(len(p.steps), g) for g, p in enumerate(inp.peaks)])
    steps = np.concatenate([p.steps for p in inp.peaks]).astype(np.int64)
    r = np.arange(len(steps))
    b.add_cons(
        "peak-charge",
        (len(steps),),
        [(r, peak[group], 1.0), (r, imp[steps], -1.0)],
        lower=0.0,
        cells=(group, steps),
    )


def _define_peak_slots(b: ModelBuilder, inp: PlanInputs, imp: np.ndarray, S: int) -> None:
    """Peaks on fixed slots: a row for every (slot, step); a step outside the slot's group
    gets a lower bound no import can reach, so membership lives in the bounds."""
    T = inp.T
    top = site_load_kw(float(inp.units @ _max_power(inp)), inp.pue, float(inp.base_load_kw.max()))
    floor = np.zeros(S)
    rate = np.zeros(S)
    lower = np.full((S, T), -2.0 * (top + inp.interconnect_kw))
    for g in inp.peaks:
        floor[g.slot] = g.floor_kw
        rate[g.slot] = g.usd_per_kw
        lower[g.slot, g.steps] = 0.0
    peak = b.add_vars("peak", (S,), floor, INF, rate)
    rows = np.arange(S * T).reshape(S, T)
    b.add_cons(
        "peak-charge",
        (S, T),
        [
            (rows, np.broadcast_to(peak[:, None], (S, T)), 1.0),
            (rows, np.broadcast_to(imp[None, :], (S, T)), -1.0),
        ],
        lower=lower,
    )


def _max_power(inp: PlanInputs) -> np.ndarray:
    """Highest per-unit power of each class (for bounds that must never bind)."""
    out = inp.idle_kw.copy()
    np.maximum.at(out, inp.cm_class, inp.power_kw)
    return out
