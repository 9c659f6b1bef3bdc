"""Price forecasts that use only what was known at decision time.

- ``dam_forecast``: the day-ahead price where it was published (ERCOT publishes operating
  day D at about 13:30 local on D-1), the last published day repeated beyond that.
- ``naive_forecast``: no forecast file: the current real-time price, fading (time constant
  2 h) into the same time of day of the last full day of real-time prices.

Both take arrays on the backtest's step grid and the decision step index ``k``; they never
read an element at or after ``k`` of the realised series except ``k`` itself, which the
planner may use as the current interval's price.
"""

from __future__ import annotations

import numpy as np

DAM_PUBLISHED_LOCAL_MIN = 13 * 60 + 30


def dam_forecast(
    dam: np.ndarray,
    local_day: np.ndarray,
    local_min: np.ndarray,
    k: int,
    horizon: int,
    steps_per_day: int,
) -> np.ndarray:
    """DAM prices for steps k..k+horizon as known at step k's start."""
    known_day = local_day[k] + (1 if local_min[k] >= DAM_PUBLISHED_LOCAL_MIN else 0)
    j = np.arange(k, k + horizon)
    behind = np.maximum(local_day[j] - known_day, 0)
    src = j - behind * steps_per_day
    return dam[src]


def naive_forecast(
    realised: np.ndarray, k: int, horizon: int, steps_per_day: int, dt_h: float, tau_h: float = 2.0
) -> np.ndarray:
    """Current price fading into yesterday's shape (realised[:k+1] only)."""
    j = np.arange(k, k + horizon)
    lag = ((j - k - 1) // steps_per_day + 1) * steps_per_day  # >= 1 day back, < j - k + 1
    src = j - lag
    have = src >= 0
    shape = np.where(have, realised[np.clip(src, 0, None)], realised[k])
    w = np.exp(-(j - k) * dt_h / tau_h)
    return w * realised[k] + (1 - w) * shape
