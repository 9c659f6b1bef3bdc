"""Price forecasts that use only what was known at decision time.

- ``dam_forecast``: the day-ahead price where it was published (operating day D is
  published on D-1 at the market's publication time, in the market's clock; see
  ``models/markets.py``), the last published day repeated beyond that.
- ``naive_forecast``: no forecast file: the last known real-time price, fading (time
  constant 2 h) into the same time of day of the last full day of settled real-time prices.
- ``blend``: the last known real-time price fading into another forecast (a real-time
  price persists for a while; the day-ahead curve is the better guess hours ahead).

Both forecasts take arrays on the backtest's step grid and the decision step index ``k``.
``n_known`` is how many steps of the realised series are settled at ``k``: ``k`` when a
real-time price is known only after its interval, ``k + 1`` with a live feed of the
current price. Nothing at or after ``n_known`` is read.
"""

from __future__ import annotations

import numpy as np


def dam_forecast(
    dam: np.ndarray,
    mkt_day: np.ndarray,
    mkt_min: np.ndarray,
    k: int,
    horizon: int,
    steps_per_day: int,
    published_min: int,
) -> np.ndarray:
    """Day-ahead prices for steps k..k+horizon as known at step k's start; ``mkt_day`` and
    ``mkt_min`` are each step's day and minute in the market's clock."""
    known_day = mkt_day[k] + (1 if mkt_min[k] >= published_min else 0)
    j = np.arange(k, k + horizon)
    behind = np.maximum(mkt_day[j] - known_day, 0)
    src = j - behind * steps_per_day
    # a day longer than ``steps_per_day`` (25 hours when clocks fall back) leaves the last
    # steps of the day after it on that day itself, not yet published: one day further back
    late = (mkt_day[src] > known_day) & (src >= steps_per_day)
    return dam[np.where(late, src - steps_per_day, src)]


def naive_forecast(
    realised: np.ndarray,
    n_known: int,
    current: float,
    k: int,
    horizon: int,
    steps_per_day: int,
    dt_h: float,
    tau_h: float = 2.0,
    age_steps: int = 0,
) -> np.ndarray:
    """``current`` (``age_steps`` old at step k) fading into the last settled day's shape
    (``realised[:n_known]`` only)."""
    j = np.arange(k, k + horizon)
    # whole days back, enough that the source step is settled (< n_known)
    days = np.maximum(-(-(j - n_known + 1) // steps_per_day), 1)
    src = j - days * steps_per_day
    have = src >= 0
    shape = np.where(have, realised[np.clip(src, 0, None)], current)
    return blend(current, shape, dt_h, tau_h, age_steps)


def blend(
    current: float, ahead: np.ndarray, dt_h: float, tau_h: float, age_steps: int = 0
) -> np.ndarray:
    """``current``, observed ``age_steps`` before the first step, fading with time
    constant ``tau_h`` into ``ahead``. A price known only after its interval is one step
    old at the step being decided (``age_steps=1``): it gets weight exp(-dt/tau) there,
    not 1, so the day-ahead price of that step counts too."""
    if tau_h <= 0:
        out = ahead.astype(np.float64).copy()
        if age_steps == 0:
            out[0] = current
        return out
    w = np.exp(-(np.arange(len(ahead)) + age_steps) * dt_h / tau_h)
    return np.asarray(w * current + (1 - w) * ahead)
