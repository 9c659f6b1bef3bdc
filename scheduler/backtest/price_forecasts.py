"""The price forecast the rolling scheduler plans with, one per decision, selectable.

A forecast is built once per backtest (``make_forecast``) and then called at each decision
with the decision's ``Known`` (``scheduler/backtest/information.py``): the settled
real-time prices, the day-ahead prices as published by then, and nothing else. It returns
the prices of steps ``k .. k+horizon-1``.

- ``blend`` (default): the last settled real-time price fading (time constant 2 h) into
  the published day-ahead curve, counting the price's age (one step after its interval);
  without a day-ahead file, into the last settled day's shape (``forecast.naive_forecast``).
- ``learned``: for the first ``LEARNED_STEPS`` steps the conditional mean of the
  gradient-boosted forecaster (``rt_forecast.py``, squared loss), trained on the history
  settled before the backtest's first decision; the blend beyond.
- ``learned+blend``: the average of the two over the first ``LEARNED_STEPS`` steps.
- ``blend-debiased``: the blend into the day-ahead curve corrected, per time of day, by
  the median real-time minus day-ahead price of the last ``DAM_BIAS_DAYS`` settled days
  (an option measured on the stress months of docs/backtest.md, not the default).
- ``blend-recent``: the blend into the day-ahead curve shifted by today's error, the mean
  real-time minus day-ahead price of the last ``RECENT_STEPS`` settled steps, fading over
  ``RECENT_TAU_H`` (an option measured on 2021-2024 in docs/backtest.md, not the default).

The learned forecasts need a day-ahead file and history before ``--from`` in the price
file; without them the blend is used and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.errors import DataError
from models.market import Series
from scheduler.backtest.forecast import blend, dam_forecast, naive_forecast
from scheduler.backtest.information import Known, settled_history
from scheduler.backtest.rt_forecast import Calendar, RtForecaster, design

if TYPE_CHECKING:
    from scheduler.backtest.period import BacktestSetup

RT_FORECASTS = ("blend", "learned", "learned+blend", "blend-debiased", "blend-recent")
#: time constant (h) of the last known real-time price fading into the day-ahead curve
DAM_BLEND_TAU_H = 2.0
#: steps (15 min each on the default grid: 4 h) the learned forecaster predicts
LEARNED_STEPS = 16
#: training decisions: every Nth step of the history (neighbours are nearly alike)
TRAIN_STRIDE = 3
#: history before the first decision the learned forecaster trains on (days): bounds the
#: training time of a backtest late in a long price file
TRAIN_DAYS = 3 * 365
#: boosting iterations of the learned forecaster
LEARNED_MAX_ITER = 200
#: settled days whose real-time minus day-ahead error, per time of day, corrects the
#: day-ahead curve of ``blend-debiased``; the median, so one scarcity day does not swing it
DAM_BIAS_DAYS = 7
#: ``blend-recent``: settled steps whose mean real-time minus day-ahead error shifts the
#: day-ahead curve, and the time constant (h) over which that shift fades
RECENT_STEPS = 4
RECENT_TAU_H = 3.0

DecisionForecast = Callable[[Known], np.ndarray]


def make_forecast(
    setup: BacktestSetup, name: str = "blend", tau_h: float = DAM_BLEND_TAU_H
) -> tuple[DecisionForecast, str]:
    """The forecast called ``name`` for this backtest, and a line for the report."""
    if name not in RT_FORECASTS:
        raise ValueError(f"real-time forecast {name!r}: valid are {', '.join(RT_FORECASTS)}")
    base = _blend(setup, tau_h)
    base_label = f"blend (last settled price fading, tau {tau_h:g} h, into {setup.forecast_label})"
    if name == "blend":
        return base, base_label
    if name == "blend-recent":
        return _recent(setup, base, tau_h), (
            f"{base_label}, the day-ahead curve shifted by the mean real-time minus day-ahead "
            f"error of the last {RECENT_STEPS} settled steps, fading over {RECENT_TAU_H:g} h"
        )
    if name == "blend-debiased":
        return _blend(setup, tau_h, DAM_BIAS_DAYS), (
            f"{base_label}, the day-ahead curve corrected by the median real-time minus "
            f"day-ahead price of the last {DAM_BIAS_DAYS} settled days at the same time of day"
        )
    model, why = _trained(setup)
    if model is None:
        return base, f"{base_label}; {name} unavailable: {why}"
    learned = _learned(setup, model, base)
    label = f"{name}: gradient-boosted conditional mean for {LEARNED_STEPS} steps ({why})"
    if name == "learned":
        return learned, label + ", then the blend"

    def mixed(known: Known) -> np.ndarray:
        a, b = learned(known), base(known)
        return np.asarray((a + b) / 2.0)

    return mixed, label + ", averaged with the blend"


def _blend(setup: BacktestSetup, tau_h: float, bias_days: int = 0) -> DecisionForecast:
    dt_h, per_day = setup.dt_h, setup.steps_per_day

    def f(known: Known) -> np.ndarray:
        if known.dam_ahead is not None:
            ahead = known.dam_ahead
            if bias_days:
                ahead = ahead + dam_bias(known, per_day, bias_days)
            return blend(known.current, ahead, dt_h, tau_h, known.age_steps)
        rt = known.rt_settled
        return naive_forecast(
            rt,
            len(rt),
            known.current,
            known.k,
            known.horizon,
            per_day,
            dt_h,
            tau_h=tau_h,  # the label's time constant, with or without a day-ahead file
            age_steps=known.age_steps,
        )

    return f


def _recent(setup: BacktestSetup, base: DecisionForecast, tau_h: float) -> DecisionForecast:
    """The blend into the day-ahead curve shifted by today's error (:func:`recent_shift`)."""

    def f(known: Known) -> np.ndarray:
        if known.dam_ahead is None:
            return base(known)
        shifted = known.dam_ahead + recent_shift(known, setup.dt_h)
        return blend(known.current, shifted, setup.dt_h, tau_h, known.age_steps)

    return f


def recent_shift(known: Known, dt_h: float) -> np.ndarray:
    """Per step of the horizon, the mean real-time minus day-ahead price of the last
    ``RECENT_STEPS`` settled steps, fading with ``RECENT_TAU_H`` from the last settled
    step; zeros while fewer are settled or without day-ahead prices. Reads only ``known``."""
    rt, dam = known.rt_settled, known.dam_settled
    if dam is None or len(rt) < RECENT_STEPS:
        return np.zeros(known.horizon)
    err = float(np.mean(rt[-RECENT_STEPS:] - dam[-RECENT_STEPS:]))
    steps = np.arange(known.horizon) + known.age_steps
    return np.asarray(err * np.exp(-steps * dt_h / RECENT_TAU_H))


def dam_bias(known: Known, steps_per_day: int, days: int) -> np.ndarray:
    """Per step of the horizon, the median over the last ``days`` settled days of the
    real-time minus day-ahead price at the same time of day (the same step a whole number
    of days back, as ``forecast.naive_forecast`` takes it); zeros while fewer days are
    settled. Reads only ``known``: the settled prices and their day-ahead prices."""
    rt, dam = known.rt_settled, known.dam_settled
    need = days * steps_per_day
    n = len(rt)
    if dam is None or n < need:
        return np.zeros(known.horizon)
    err = (rt[n - need :] - dam[n - need :]).reshape(days, steps_per_day)
    # column c is the time of day of settled step n - steps_per_day + c
    cols = (known.k + np.arange(known.horizon) - n) % steps_per_day
    return np.asarray(np.median(err, axis=0)[cols])


def calendar(starts_s: np.ndarray, timezone: str) -> Calendar:
    local = pd.DatetimeIndex(pd.to_datetime(starts_s, unit="s", utc=True)).tz_convert(timezone)
    return Calendar(local.hour.to_numpy(), local.day_of_week.to_numpy(), local.month.to_numpy())


def _trained(setup: BacktestSetup) -> tuple[RtForecaster | None, str]:
    """The forecaster fitted on history settled by the first decision, or why not."""
    if setup.dam is None or setup.market is None or setup.dam_series is None:
        return None, "no day-ahead file"
    if setup.rt_series is None:
        return None, "no real-time history"
    step_s = int(setup.inp.grid.starts_s[1] - setup.inp.grid.starts_s[0])
    first_decision_s = int(setup.inp.grid.starts_s[setup.k0])
    rt_hist, dam_hist = setup.rt_series, setup.dam_series
    since = max(rt_hist.start_s, dam_hist.start_s, first_decision_s - TRAIN_DAYS * 86400)
    try:
        t0, rt = settled_history(_from(rt_hist, since), first_decision_s, step_s)
        d0, dam = settled_history(_from(dam_hist, since), first_decision_s, step_s)
    except DataError as exc:
        return None, f"history has gaps ({exc})"
    n = min(len(rt), len(dam))
    if t0 != d0 or n < 30 * setup.steps_per_day:
        return None, "less than 30 days of history before --from"
    starts = t0 + step_s * np.arange(n, dtype=np.int64)
    mkt = setup.market
    local = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).tz_convert(mkt.timezone)
    day = (local.normalize().tz_localize(None) - pd.Timestamp("1970-01-01")).days.to_numpy()
    minute = (local.hour * 60 + local.minute).to_numpy()
    per_day, H = setup.steps_per_day, LEARNED_STEPS

    def ahead(k: int, h: int) -> np.ndarray:
        return dam_forecast(dam[:n], day, minute, k, h, per_day, mkt.dam_published_min)

    f = RtForecaster(horizon=H, steps_per_day=per_day, mean=True, max_iter=LEARNED_MAX_ITER)
    f.fit(
        rt[:n],
        dam[:n],
        ahead,
        calendar(starts, mkt.timezone),
        np.arange(per_day, n - H, TRAIN_STRIDE),
    )
    return f, f"trained on {n / per_day:.0f} days settled before --from"


def _from(series: Series, since_s: int) -> Series:
    """The series from the interval holding ``since_s`` on."""
    skip = max(0, (since_s - series.start_s) // series.interval_s)
    return Series(
        series.label,
        series.unit,
        series.start_s + skip * series.interval_s,
        series.interval_s,
        series.values[skip:],
    )


def _learned(setup: BacktestSetup, model: RtForecaster, base: DecisionForecast) -> DecisionForecast:
    market = setup.market
    tz = market.timezone if market is not None else setup.config.site.timezone
    cal = calendar(setup.inp.grid.starts_s, tz)
    per_day = setup.steps_per_day

    def f(known: Known) -> np.ndarray:
        out = base(known)
        H = min(LEARNED_STEPS, known.horizon)
        rt, dam = known.rt_settled, known.dam_settled
        if known.dam_ahead is None or dam is None or len(rt) < 1 or H < 1:
            return out
        X = design(rt, len(rt), dam, known.dam_ahead[:H], cal, known.k, per_day)
        out[:H] = model.predict_rows(X)
        return out

    return f
