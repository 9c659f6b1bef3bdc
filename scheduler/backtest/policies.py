"""Policies replayed by the backtest: the rolling scheduler and the industry's baselines.

Each policy sees only what it may (``models/markets.py``): the real-time price of the last
settled interval (``setup.rt_known``; the step's own price only with ``--price-visibility
current``), day-ahead prices once published, the hashprice known that day, DR caps already
announced and the state it left behind. The rolling scheduler plans its horizon with that
and applies the first step. The oracle is one LP over the whole period with realised
prices: the upper bound. Baselines cannot plan; when a cap binds they shed by the fixed
order of ``scheduler/planner/shedding.py``:

- ``threshold``: each miner class off above its breakeven strike, with N-window hysteresis
  (``--curtail-after``/``--resume-after``), as fleet managers offer it; stock mode.
- ``best-mode``: each miner class in its most profitable mode (or asleep) at the last known
  price, within the interconnect.
- ``best-mode+peaks``: that, plus miners asleep in coincident-peak windows and shed to DR
  caps in force.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from models.economics import breakeven_usd_per_mwh, mining_revenue_usd_per_hour
from scheduler.backtest.engine import PolicyRun, Progress
from scheduler.backtest.forecast import dam_forecast
from scheduler.backtest.horizon import PlanResolution
from scheduler.backtest.information import known_at
from scheduler.backtest.period import BacktestSetup, period_inputs, slice_inputs
from scheduler.backtest.price_forecasts import DAM_BLEND_TAU_H, make_forecast
from scheduler.planner.extract import batch_by_step, whole_units
from scheduler.planner.inputs import BatchWindow, PeakGroup, PlanInputs
from scheduler.planner.optimize import Planner
from scheduler.planner.peak_slots import peak_rules, slot_peaks
from scheduler.planner.rounding import EPS, import_kw, units_awake
from scheduler.planner.shedding import shed_to_limit

POLICIES = ("scheduler", "threshold", "best-mode", "best-mode+peaks", "always-on", "oracle")
BASELINES = ("threshold", "best-mode", "best-mode+peaks", "always-on")


def _nominal_modes(inp: PlanInputs) -> np.ndarray:
    """Per class, the mode a unit runs in when simply on: 'stock' if the class has one,
    else its highest-output mode."""
    out = np.zeros(inp.C, dtype=np.int64)
    for c in range(inp.C):
        ks = np.flatnonzero(inp.cm_class == c)
        named = [k for k in ks if inp.mode_names[k] == "stock"]
        output = inp.hashrate_ths[ks] + inp.tput_tok_s[ks]
        out[c] = named[0] if named else ks[np.argmax(output)]
    return out


def _announced(setup: BacktestSetup, pin: PlanInputs, limit_kw: np.ndarray) -> np.ndarray:
    """``limit_kw`` per step where its DR cap was announced by the step's decision (at its
    start), else the interconnect: a rule sheds for a cap only once it is known, as the
    scheduler does (no advance notice is assumed; an event starting mid-step is met from
    the next step)."""
    known = setup.cap_known_from_s[setup.k0 : setup.k1] <= pin.grid.starts_s
    capped = np.isfinite(pin.dr_cap_kw)
    return np.where(capped & ~known, pin.interconnect_kw, limit_kw)


def always_on(setup: BacktestSetup) -> PolicyRun:
    t0 = time.perf_counter()
    pin = period_inputs(setup)
    n = np.zeros((pin.K, pin.T), dtype=np.int64)
    n[_nominal_modes(pin)] = pin.units[:, None].astype(np.int64)
    n = shed_to_limit(pin, n, _announced(setup, pin, pin.cap_kw))
    return PolicyRun("always-on", n, np.zeros(pin.T), np.zeros(pin.T), time.perf_counter() - t0)


def threshold(setup: BacktestSetup, curtail_after: int = 1, resume_after: int = 1) -> PolicyRun:
    """Breakeven strike per miner class, on the last known real-time price, with N-window
    hysteresis: curtail after ``curtail_after`` intervals above the strike, resume after
    ``resume_after`` below. Serving units stay in their nominal mode."""
    t0 = time.perf_counter()
    pin = period_inputs(setup)
    nominal = _nominal_modes(pin)
    hp = setup.hashprice_known[setup.k0 : setup.k1]
    price = setup.rt_known[setup.k0 : setup.k1]  # the last known price, not the realised one
    n = np.zeros((pin.K, pin.T), dtype=np.int64)
    for c, k in enumerate(nominal):
        units = int(pin.units[c])
        if pin.hashrate_ths[k] == 0:
            n[k] = units
            continue
        efficiency = float(pin.power_kw[k]) * 1000.0 / float(pin.hashrate_ths[k])
        strike = breakeven_usd_per_mwh(hp, efficiency, pin.pue)  # USD/MWh
        above = price > strike
        running = True
        streak = 0
        state = np.zeros(pin.T, dtype=bool)
        for t in range(pin.T):  # a state machine: the hysteresis needs the last state
            if above[t] == running:
                streak += 1
                if streak >= (curtail_after if running else resume_after):
                    running, streak = not running, 0
            else:
                streak = 0
            state[t] = running
        n[k] = np.where(state, units, 0)
    n = shed_to_limit(pin, n, _announced(setup, pin, pin.cap_kw))
    name = (
        "threshold"
        if curtail_after == resume_after == 1
        else (f"threshold({curtail_after}/{resume_after})")
    )
    return PolicyRun(name, n, np.zeros(pin.T), np.zeros(pin.T), time.perf_counter() - t0)


def best_mode(setup: BacktestSetup, peaks_and_dr: bool = False) -> PolicyRun:
    """Each miner class in its most profitable mode at the last known real-time price and
    the day's known hashprice, asleep when no mode pays; serving classes in their nominal
    mode (committed inference first). Shed to the interconnect; with ``peaks_and_dr``
    also to DR caps in force, and miners asleep in coincident-peak windows."""
    t0 = time.perf_counter()
    pin = period_inputs(setup)
    nominal = _nominal_modes(pin)
    hp = setup.hashprice_known[setup.k0 : setup.k1]
    price = setup.rt_known[setup.k0 : setup.k1]
    n = np.zeros((pin.K, pin.T), dtype=np.int64)
    steps = np.arange(pin.T)
    for c in range(pin.C):
        ks = np.flatnonzero((pin.cm_class == c) & (pin.hashrate_ths > 0))
        if len(ks) == 0:
            n[nominal[c]] = int(pin.units[c])
            continue
        # USD per unit-hour of each mining mode over sleeping (a sleeping unit draws idle)
        extra_kw = pin.marginal_kw[ks]
        margin = (
            mining_revenue_usd_per_hour(pin.hashrate_ths[ks, None], hp[None, :])
            - extra_kw[:, None] * price[None, :] / 1000.0
        )
        best = np.argmax(margin, axis=0)
        run = margin[best, steps] > 0
        n[ks[best[run]], steps[run]] = int(pin.units[c])
    if peaks_and_dr:
        mining = pin.hashrate_ths > 0
        for g in pin.peaks:
            if g.kind == "coincident-peak":
                n[np.ix_(mining, g.steps)] = 0
        limit = _announced(setup, pin, pin.cap_kw)
    else:
        # the interconnect only: a DR cap is not obeyed by this rule
        limit = np.where(np.isfinite(pin.dr_cap_kw), pin.interconnect_kw, pin.cap_kw)
    n = shed_to_limit(pin, _step_down_to_fit(pin, n, limit), limit)
    name = "best-mode+peaks" if peaks_and_dr else "best-mode"
    return PolicyRun(name, n, np.zeros(pin.T), np.zeros(pin.T), time.perf_counter() - t0)


def _step_down_to_fit(pin: PlanInputs, n: np.ndarray, limit_kw: np.ndarray) -> np.ndarray:
    """Where miners in their best modes would exceed the limit, move units down to their
    class's most efficient mode first (as an operator underclocks before switching units
    off), the moves losing the least hashrate per kW freed first; shedding then sleeps
    units only if that is not enough."""
    n = n.copy()
    m = pin.marginal_kw
    excess = import_kw(pin, n) - limit_kw - EPS
    if not (excess > 0).any():
        return n
    moves: list[tuple[float, int, int]] = []  # (TH/s lost per kW freed, from, to)
    for c in range(pin.C):
        ks = np.flatnonzero((pin.cm_class == c) & (pin.hashrate_ths > 0) & (m > 0))
        if len(ks) < 2:
            continue
        best = int(ks[np.argmax(pin.hashrate_ths[ks] / m[ks])])
        for k in ks.tolist():
            if k != best and m[k] > m[best]:
                lost = (pin.hashrate_ths[k] - pin.hashrate_ths[best]) / (m[k] - m[best])
                moves.append((float(lost), k, best))
    for _, k, eco in sorted(moves):
        if not (excess > 0).any():
            break
        freed = m[k] - m[eco]
        move = np.minimum(n[k], np.ceil(np.maximum(excess, 0.0) / freed - EPS)).astype(np.int64)
        n[k] -= move
        n[eco] += move
        excess -= move * freed
    return n


def _first_step(inp: PlanInputs, planner: Planner) -> tuple[np.ndarray, float, float, bool]:
    """Solve; return the first step's whole units, batch tokens/s and batch USD."""
    model, result, _ = planner.solve(inp)
    if not result.ok:
        return np.zeros(inp.K, dtype=np.int64), 0.0, 0.0, False
    n = whole_units(inp, model, result.x)
    tok, usd = batch_by_step(inp, model, result.x)
    batch_tok, batch_usd = float(tok[0]), float(usd[0])
    return n[:, 0], batch_tok, batch_usd, True


def rolling_scheduler(
    setup: BacktestSetup,
    progress: bool = True,
    dam_tau_h: float = DAM_BLEND_TAU_H,
    rt_forecast: str = "blend",
    plan_resolution: str | None = None,
) -> PolicyRun:
    """Plan at every decision step with what was known then; apply the first step.
    ``rt_forecast`` names the price forecast (``price_forecasts.RT_FORECASTS``);
    ``plan_resolution`` plans the far horizon on coarser steps (``horizon.py``)."""
    t0 = time.perf_counter()
    forecast, forecast_label = make_forecast(setup, rt_forecast, dam_tau_h)
    inp = setup.inp
    step_s = int(inp.grid.dur_s[0])
    coarse = PlanResolution(plan_resolution, step_s) if plan_resolution else None
    realised = inp.price_usd_per_mwh if setup.rt_seen is None else setup.rt_seen
    T = setup.k1 - setup.k0
    n_all = np.zeros((inp.K, T), dtype=np.int64)
    batch_tok = np.zeros(T)
    batch_usd = np.zeros(T)
    on = inp.initial_on.copy()
    import_now = inp.initial_import_kw
    peaks = {g.name: g.floor_kw for g in inp.peaks}
    served = {b.name: 0.0 for b in inp.batches}
    # step -> billed-peak groups and batch jobs it belongs to; group sizes to amortise
    groups_at: list[list[int]] = [[] for _ in range(inp.T)]
    for gi, g in enumerate(inp.peaks):
        for st in g.steps.tolist():
            groups_at[st].append(gi)
    batch_at: list[list[str]] = [[] for _ in range(inp.T)]
    for b in inp.batches:
        for st in b.steps.tolist():
            batch_at[st].append(b.name)
    planner = Planner()
    planner.duals = False  # only the first step's units and batch are read
    rules = peak_rules(inp.peaks)
    # the meter's import of the step applied, as ``import_kw`` of a one-step slice gives
    # it (the same elementwise arithmetic), without slicing the inputs at every step
    fixed_kw, marginal_kw, onsite_kw = inp.fixed_kw, inp.marginal_kw, inp.onsite_kw
    failures = 0
    bar = Progress("scheduler", T, progress)
    for i, k in enumerate(range(setup.k0, setup.k1)):
        h = min(setup.horizon, inp.T - k)
        dam_ahead = None
        if setup.dam is not None and setup.market is not None:
            dam_ahead = dam_forecast(
                setup.dam,
                setup.mkt_day,
                setup.mkt_min,
                k,
                h,
                setup.steps_per_day,
                setup.market.dam_published_min,
            )
        # the forecast is handed what was settled or published by step k, nothing more
        known = known_at(
            realised, int(setup.n_known[k]), setup.rt_known[k], k, h, setup.dam, dam_ahead
        )
        price = forecast(known)
        t_now = inp.grid.starts_s[k]
        announced = setup.cap_known_from_s[k : k + h] <= t_now
        window = slice_inputs(
            inp,
            k,
            k + h,
            price_usd_per_mwh=price,
            hashprice=np.full(h, setup.hashprice_known[k]),
            cap_kw=np.where(announced, inp.cap_kw[k : k + h], inp.interconnect_kw),
            dr_cap_kw=np.where(announced, inp.dr_cap_kw[k : k + h], np.inf),
            initial_on=on,
            initial_import_kw=import_now,
        )
        amortised = [
            _amortised(g, full, peaks[g.name], k, h)
            for g, full in _matching(window.peaks, inp.peaks)
        ]
        slot_peaks(window, amortised, rules)
        window.batches = [_remaining(b, served[b.name], window) for b in window.batches]
        if coarse is not None:
            window = coarse.coarsen(window)
        n0, btok, busd, ok = _first_step(window, planner)
        if not ok:  # keep the last decision, shed to the cap; never stop the replay
            failures += 1
            prev = n_all[:, i - 1] if i else np.zeros(inp.K, dtype=np.int64)
            one = slice_inputs(inp, k, k + 1)
            n0 = shed_to_limit(one, prev[:, None], window.cap_kw[:1])[:, 0]  # caps announced
        n_all[:, i] = n0
        batch_tok[i], batch_usd[i] = btok, busd
        imp = float(np.maximum(fixed_kw[k] + (marginal_kw @ n0[:, None])[0] - onsite_kw[k], 0.0))
        import_now = imp
        on = units_awake(inp, n0[:, None])[:, 0]
        for gi in groups_at[k]:
            name = inp.peaks[gi].name
            peaks[name] = max(peaks[name], imp)
        for name in batch_at[k]:
            served[name] += btok * float(inp.grid.dur_s[k])
        bar.update(i + 1)
    notes = [f"forecast: {forecast_label}"]
    if coarse is not None:
        notes.append(coarse.describe(min(setup.horizon, inp.T - setup.k0)))
    if failures:
        notes.append(f"{failures} plans failed; the last decision was kept, shed to the cap")
    return PolicyRun(
        "scheduler", n_all, batch_tok, batch_usd, time.perf_counter() - t0, T, failures, notes
    )


def _matching(
    window_groups: list[PeakGroup], full_groups: list[PeakGroup]
) -> list[tuple[PeakGroup, PeakGroup]]:
    by_name = {g.name: g for g in full_groups}
    return [(g, by_name[g.name]) for g in window_groups]


def _amortised(g: PeakGroup, full: PeakGroup, floor_kw: float, k: int, h: int) -> PeakGroup:
    """A billed peak as a rolling plan should see it: floored at the peak reached so far,
    its rate scaled by the share of the group's remaining steps inside the horizon. A
    higher peak is paid once but usable for the rest of the billing period, of which the
    plan sees only the horizon."""
    remaining = int((full.steps >= k).sum())
    inside = int(((full.steps >= k) & (full.steps < k + h)).sum())
    share = inside / remaining if remaining else 1.0
    return dataclasses.replace(g, floor_kw=floor_kw, usd_per_kw=g.usd_per_kw * share)


def _remaining(bw: BatchWindow, served_tokens: float, window: PlanInputs) -> BatchWindow:
    """Tokens still due of a batch job, prorated when its deadline is past the window."""
    total = bw.tokens
    left = max(total - served_tokens, 0.0)
    end = int(window.grid.ends_s[-1])
    now = int(window.grid.starts_s[0])
    if bw.deadline_s > end and bw.deadline_s > now:
        left *= (end - now) / (bw.deadline_s - now)
    return dataclasses.replace(bw, tokens=left)


def oracle(setup: BacktestSetup) -> PolicyRun:
    """One LP over the whole period with realised prices: the perfect-foresight bound."""
    t0 = time.perf_counter()
    pin = period_inputs(setup)
    planner = Planner()
    model, result, _ = planner.solve(pin)
    if not result.ok:
        return PolicyRun(
            "oracle",
            np.zeros((pin.K, pin.T), dtype=np.int64),
            np.zeros(pin.T),
            np.zeros(pin.T),
            time.perf_counter() - t0,
            1,
            1,
            [f"oracle LP failed: {result.termination}"],
        )
    n = whole_units(pin, model, result.x)
    batch_tok, batch_usd = batch_by_step(pin, model, result.x)
    return PolicyRun(
        "oracle",
        n,
        batch_tok,
        batch_usd,
        time.perf_counter() - t0,
        1,
        0,
        [f"LP: {model.describe()}"],
    )
