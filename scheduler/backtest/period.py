"""The period a backtest replays: its inputs on the decision grid and what is known when.

``prepare`` builds the period's inputs once, on the decision-step grid, from one day before
``from`` (history for forecasts) to ``to`` plus the horizon (the last plans look ahead),
with each input's information model (``scheduler/backtest/information.py``, per market
``models/markets.py``). ``slice_inputs`` cuts a window of it for one rolling plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.errors import DataError
from models.market import Series, iso
from models.markets import MARKETS, PRICE_VISIBILITY, MarketInfo, tariff_market_problems
from models.signals import GridEvent
from models.site import SiteConfig
from scheduler.backtest.information import known_prices, window_error
from scheduler.planner.inputs import PeakGroup, PlanInputs, SiteState, assemble_inputs
from scheduler.planner.timegrid import TimeGrid, uniform_grid

DAY_S = 86400


@dataclass
class BacktestSetup:
    config: SiteConfig
    inp: PlanInputs  # extended grid, realised prices, actual hashprice
    k0: int  # first decision step
    k1: int  # end of the period (exclusive)
    horizon: int  # steps each rolling plan looks ahead
    steps_per_day: int
    dam: np.ndarray | None  # day-ahead price per step, if given
    hashprice_known: np.ndarray  # hashprice known at each step (previous UTC day's)
    cap_known_from_s: np.ndarray  # when each step's DR cap was announced (inf: none)
    local_day: np.ndarray
    local_min: np.ndarray
    local_month: np.ndarray  # YYYYMM of each step's start in the site's zone
    price_label: str
    forecast_label: str
    #: the real-time price a decision at step k may use: the last settled interval's
    #: (``after-interval``) or the step's own (``current``: a live dispatch-price feed)
    rt_known: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: steps [0, n_known[k]) of the realised series are settled and known at step k
    n_known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    market: MarketInfo | None = None
    visibility: str = "after-interval"
    mkt_day: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mkt_min: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    currency: str = "USD"
    notes: list[str] = field(default_factory=list)
    #: the whole real-time and day-ahead files as loaded: a learned forecast trains on
    #: the part settled before the first decision (``information.settled_history``)
    rt_series: Series | None = None
    dam_series: Series | None = None
    #: per step, the real-time prices as decisions may read them once settled (a gap
    #: filled by interpolation held at its last price instead; else the settled ones)
    rt_seen: np.ndarray | None = None
    #: where the hashprice came from, said in every report
    hashprice_source: str = ""

    @property
    def dt_h(self) -> float:
        return float(self.inp.grid.dt_h[0])


def prepare(
    config: SiteConfig,
    realised: Series,
    from_s: int,
    to_s: int,
    step_s: int,
    horizon_s: int,
    forecast: Series | None = None,
    hashprice: Series | None = None,
    events: list[GridEvent] | None = None,
    market: MarketInfo | None = None,
    visibility: str = "after-interval",
    fill: str = "refuse",
    foreign_tariff: bool = False,
) -> BacktestSetup:
    """The period's inputs on the decision grid, from one day before ``from_s`` (history
    for forecasts; shortened, with a note, where the data start later) to ``to_s`` plus
    the horizon (cut, with a note, where the data end sooner)."""
    if to_s <= from_s:
        raise ValueError("--to must be after --from")
    if visibility not in PRICE_VISIBILITY:
        raise ValueError(f"price visibility {visibility!r}: valid are {PRICE_VISIBILITY}")
    conflicts, notes = tariff_market_problems(
        [cp.name for cp in config.tariff.coincident_peaks], market
    )
    if conflicts and not foreign_tariff:
        raise DataError(
            "tariff", "; ".join(conflicts) + " (--foreign-tariff applies it anyway, reported)"
        )
    notes += [f"{c}: applied anyway (--foreign-tariff)" for c in conflicts]
    for s in (realised, forecast):
        if s is not None and s.currency != realised.currency:
            raise DataError(
                s.label,
                f"in {s.currency} but the settlement prices are in {realised.currency}; "
                "convert one of them (a rate) before mixing",
            )
    if realised.currency != "USD":
        raise DataError(
            realised.label,
            f"prices in {realised.currency}: hashprice and inference revenue are in USD; "
            "convert the prices with an explicit rate",
        )
    need_from = from_s - (realised.interval_s if visibility == "after-interval" else 0)
    if not realised.covers(need_from, to_s):
        why = (
            "the decision at --from needs the real-time price settled just before it"
            if visibility == "after-interval" and realised.covers(from_s, to_s)
            else "--from to --to"
        )
        raise DataError(
            realised.label,
            f"covers {iso(realised.start_s)} to {iso(realised.end_s)}, but the backtest needs "
            f"{iso(need_from)} to {iso(to_s)} ({why})",
        )
    start = max(from_s - DAY_S, realised.start_s - realised.start_s % step_s)
    start = from_s - ((from_s - start) // step_s) * step_s
    wanted_end = to_s + horizon_s
    end = min(wanted_end, realised.end_s - realised.end_s % step_s)
    if start > from_s - DAY_S:
        notes.append(
            f"history shortened: prices start {iso(realised.start_s)}, "
            f"{(from_s - start) / 3600:g} h before --from instead of 24 h"
        )
    if end < wanted_end:
        short_h = (wanted_end - end) / 3600
        notes.append(
            f"horizon cut at the end of data ({iso(end)}): plans in the last "
            f"{short_h:g} h see less than --horizon ahead"
        )
    # After --to nothing is settled, and no decision reads a realised price past the last
    # one it could have seen settled (before --to): a gap there is held, and said.
    raw, n_after = realised.filled("hold", to_s, end)
    if n_after:
        notes.append(
            f"{n_after} missing real-time intervals after --to held at their last price "
            "(never settled, and no decision reads a price past --to)"
        )
    realised, n_filled = raw.filled(fill, start - raw.interval_s, to_s)
    # What decisions see of a gap: its last settled price held. An interpolated price is
    # drawn toward the first one after the gap, settled only later (a leak).
    seen_series = (
        raw.filled("hold", start - raw.interval_s, to_s)[0] if fill == "linear" else realised
    )
    if n_filled:
        held = "; decisions saw the gap held at its last price" if fill == "linear" else ""
        notes.append(
            f"{n_filled} missing real-time intervals filled ({fill}); settled at filled "
            f"prices{held}"
        )
    why = "one day before --from for forecast history, to --to plus --horizon"
    grid = uniform_grid(start, end - start, step_s)
    try:
        realised.mean_over(grid.starts_s, grid.ends_s)
    except DataError as exc:
        raise window_error(realised, exc, start, end, why) from None
    inp = assemble_inputs(config, grid, realised, events, SiteState(billing_peak_kw=0.0), hashprice)
    k0 = (from_s - start) // step_s
    k1 = (to_s - start) // step_s
    local = pd.to_datetime(grid.starts_s, unit="s", utc=True).tz_convert(config.site.timezone)
    month = (local.year * 100 + local.month).to_numpy()
    month_steps = local.days_in_month.to_numpy() * DAY_S / step_s
    inp.peaks = _prorated(inp.peaks, month, month_steps, int(k0), int(k1))
    if hashprice is not None:
        known = hashprice.mean_over(grid.starts_s - DAY_S, grid.ends_s - DAY_S)
        known = known * (1.0 - config.mining.pool_fee)
        hashprice_source = f"previous UTC day ({hashprice.label})"
    else:
        known = inp.hashprice.copy()
        fixed = config.mining.hashprice_usd_per_ths_day
        hashprice_source = f"fixed at {fixed:g} USD per TH/s per day ([mining], no --btc)"
    dam = None
    mkt_local = local if market is None else local.tz_convert(market.timezone)
    mkt_day = (
        mkt_local.normalize().tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64)
    )
    mkt_min = (mkt_local.hour * 60 + mkt_local.minute).to_numpy()
    if forecast is not None:
        if market is None:
            raise ValueError(
                "a day-ahead forecast needs --market: when its prices are published "
                f"depends on the market ({', '.join(MARKETS)})"
            )
        # a day-ahead price is read as published: a gap held, never drawn toward a later
        # day's prices (published after it)
        f_fill = "hold" if fill == "linear" else fill
        seen = mkt_day[k0:k1] + (mkt_min[k0:k1] >= market.dam_published_min)
        # the days no decision saw published are never read (``dam_forecast`` repeats the
        # last published day there): a gap on them is held, and said
        unseen_from = int(grid.ends_s[np.flatnonzero(mkt_day <= int(seen.max()))[-1]])
        forecast, f_unseen = forecast.filled("hold", unseen_from, end)
        if f_unseen:
            notes.append(
                f"{f_unseen} missing day-ahead intervals on days no decision saw published "
                "held (never read)"
            )
        forecast, f_filled = forecast.filled(f_fill, start, unseen_from)
        if f_filled:
            notes.append(f"{f_filled} missing day-ahead intervals filled ({f_fill})")
        dam = _day_ahead_on_grid(forecast, grid, mkt_day, int(seen.max()), why, notes)
    cap_from = np.full(grid.n, np.inf)
    for ev in inp.events:
        on = (grid.starts_s < ev.end_utc.timestamp()) & (grid.ends_s > ev.start_utc.timestamp())
        cap_from[on] = np.minimum(cap_from[on], ev.start_utc.timestamp())
    day = local.normalize().tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64)
    rt_seen = inp.price_usd_per_mwh
    if seen_series is not realised:
        rt_seen = seen_series.mean_over(grid.starts_s, grid.ends_s)
    rt_known, n_known = known_prices(seen_series, grid, rt_seen, visibility)
    return BacktestSetup(
        config=config,
        inp=inp,
        k0=int(k0),
        k1=int(k1),
        horizon=max(1, horizon_s // step_s),
        steps_per_day=DAY_S // step_s,
        dam=dam,
        hashprice_known=known,
        cap_known_from_s=cap_from,
        local_day=day,
        local_min=(local.hour * 60 + local.minute).to_numpy(),
        local_month=month,
        price_label=realised.label,
        forecast_label=forecast.label if forecast is not None else "naive (past prices only)",
        rt_known=rt_known,
        n_known=n_known,
        market=market,
        visibility=visibility,
        mkt_day=mkt_day,
        mkt_min=mkt_min,
        currency=realised.currency,
        notes=notes,
        rt_series=seen_series,
        dam_series=forecast,
        rt_seen=rt_seen,
        hashprice_source=hashprice_source,
    )


def _day_ahead_on_grid(
    forecast: Series,
    grid: TimeGrid,
    mkt_day: np.ndarray,
    last_seen_day: int,
    why: str,
    notes: list[str],
) -> np.ndarray:
    """The day-ahead prices on the grid. No decision sees a day after ``last_seen_day``
    (the last published by the period's last decision), so the file need only reach its
    end; later steps the file does not hold are never read (``dam_forecast`` repeats the
    last published day there) and get the file's last day repeated, with a note."""
    start, end = int(grid.starts_s[0]), int(grid.ends_s[-1])
    n_cov = int(np.searchsorted(grid.ends_s, forecast.end_s, side="right"))
    if n_cov < grid.n:
        need = np.flatnonzero(mkt_day <= last_seen_day)
        need_end = int(grid.ends_s[need[-1]])
        if forecast.end_s < need_end or n_cov == 0:
            day = str(np.datetime64(last_seen_day, "D"))
            raise DataError(
                forecast.label,
                f"covers {iso(forecast.start_s)} to {iso(forecast.end_s)}, but the backtest "
                f"reads {iso(start)} to {iso(need_end)} (one day before --from for forecast "
                f"history, to the end of {day}, the last day-ahead day published by the "
                "last decision); move --to earlier or give a longer file",
            )
        notes.append(
            f"day-ahead prices ({forecast.label}) end {iso(forecast.end_s)}, before --to plus "
            "--horizon: every day a decision saw published is in them; later days were not "
            "yet published at any decision and are not read"
        )
    try:
        dam = forecast.mean_over(grid.starts_s[:n_cov], grid.ends_s[:n_cov])
    except DataError as exc:
        raise window_error(forecast, exc, start, end, why) from None
    per_day = max(1, DAY_S // int(grid.ends_s[0] - grid.starts_s[0]))
    j = np.arange(n_cov, grid.n)
    src = j - (-(-(j - n_cov + 1) // per_day)) * per_day  # whole days back into the file
    out = np.concatenate([dam, dam[np.maximum(src, 0)]]) if len(j) else dam
    return np.asarray(out, dtype=np.float64)


def _prorated(
    peaks: list[PeakGroup], month: np.ndarray, month_steps: np.ndarray, k0: int, k1: int
) -> list[PeakGroup]:
    """Monthly charges scaled by the share of their billing month inside [k0, k1), as a
    bill for a partial month would be; every policy and the oracle see the same rates.
    ``month`` is each step's local YYYYMM, ``month_steps`` the steps its month has."""
    out = []
    for g in peaks:
        if len(g.steps) == 0:
            continue
        first = g.steps[0]
        in_period = int((month[k0:k1] == month[first]).sum())
        share = min(1.0, in_period / month_steps[first])
        out.append(dataclasses.replace(g, usd_per_kw=g.usd_per_kw * share))
    return out


def slice_inputs(inp: PlanInputs, a: int, b: int, **override: Any) -> PlanInputs:
    """The inputs of steps [a, b), peak groups and batch windows re-indexed."""
    sl = slice(a, b)
    peaks = []
    for g in inp.peaks:
        steps = g.steps[(g.steps >= a) & (g.steps < b)] - a
        if len(steps):
            peaks.append(dataclasses.replace(g, steps=steps))
    batches = []
    for bw in inp.batches:
        steps = bw.steps[(bw.steps >= a) & (bw.steps < b)] - a
        batches.append(dataclasses.replace(bw, steps=steps))
    fields: dict[str, Any] = {
        "grid": TimeGrid(inp.grid.starts_s[sl], inp.grid.ends_s[sl]),
        "price_usd_per_mwh": inp.price_usd_per_mwh[sl],
        "hashprice": inp.hashprice[sl],
        "base_load_kw": inp.base_load_kw[sl],
        "onsite_kw": inp.onsite_kw[sl],
        "cap_kw": inp.cap_kw[sl],
        "dr_cap_kw": inp.dr_cap_kw[sl],
        "class_cap_kw": inp.class_cap_kw[:, sl],
        "held_off": None if inp.held_off is None else inp.held_off[:, sl],
        "held_on": None if inp.held_on is None else inp.held_on[:, sl],
        "committed_tok_s": inp.committed_tok_s[sl],
        "spot_tok_s": inp.spot_tok_s[sl],
        "ramp_up_kw": None if inp.ramp_up_kw is None else inp.ramp_up_kw[sl],
        "ramp_down_kw": None if inp.ramp_down_kw is None else inp.ramp_down_kw[sl],
        "peaks": peaks,
        "batches": batches,
        "notes": [],
    }
    fields.update(override)
    return dataclasses.replace(inp, **fields)


def period_inputs(setup: BacktestSetup) -> PlanInputs:
    """Settlement inputs: realised prices, actual hashprice, no billing history."""
    return slice_inputs(setup.inp, setup.k0, setup.k1)
