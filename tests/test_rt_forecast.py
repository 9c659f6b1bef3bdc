"""The real-time price forecaster reads only what was settled, and learns a daily shape."""

from __future__ import annotations

import numpy as np

from scheduler.backtest.rt_forecast import Calendar, RtForecaster, design

PER_DAY = 24  # hourly steps keep the test small


def _calendar(n: int) -> Calendar:
    k = np.arange(n)
    return Calendar(k % PER_DAY, (k // PER_DAY) % 7, np.ones(n, dtype=np.int64))


def _prices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    return 40 + 30 * np.sin(2 * np.pi * (k % PER_DAY) / PER_DAY) + rng.normal(0, 3, n)


def test_features_never_read_an_unsettled_price() -> None:
    n = 10 * PER_DAY
    rt, dam = _prices(n), _prices(n, seed=1)
    cal = _calendar(n)
    k = 5 * PER_DAY + 7
    ahead = dam[k : k + 6]
    base = design(rt, k, dam, ahead, cal, k, PER_DAY)
    later = rt.copy()
    later[k:] = 1e6  # the decision's own interval and everything after it
    dam_later = dam.copy()
    dam_later[k:] = -1e6  # DA after the decision is only read through ``ahead``
    assert np.array_equal(design(later, k, dam_later, ahead, cal, k, PER_DAY), base)


def test_it_learns_a_daily_shape_better_than_holding_the_last_price() -> None:
    n = 60 * PER_DAY
    rt = _prices(n)
    dam = rt + np.random.default_rng(2).normal(0, 10, n)  # a noisy day-ahead view
    cal = _calendar(n)
    H = 8
    f = RtForecaster(horizon=H, steps_per_day=PER_DAY, max_iter=60)
    split = 45 * PER_DAY
    f.fit(rt, dam, lambda k, h: dam[k : k + h], cal, np.arange(PER_DAY, split - H))
    model_err, hold_err = [], []
    for k in range(split, n - H, 5):
        truth = rt[k : k + H]
        model_err.append(np.abs(f.predict(rt, k, dam, dam[k : k + H], cal, k) - truth)[2:])
        hold_err.append(np.abs(rt[k - 1] - truth)[2:])
    assert np.mean(model_err) < 0.5 * np.mean(hold_err)
