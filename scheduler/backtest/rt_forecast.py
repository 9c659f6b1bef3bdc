"""A short-term real-time price forecaster trained only on what was known.

For a decision at step ``k`` it predicts the real-time price of steps ``k .. k+H-1`` from
what is settled before ``k`` (``n_known`` steps: ``k`` when a real-time price is known only
after its interval, ``k + 1`` with a live feed) and the day-ahead prices as published by
then: the last settled prices and their recent mean and spread, the day-ahead price of
the target interval and of the last settled one (their gap is today's premium), the
horizon and the target's hour, weekday and month in the market's clock. The model is
scikit-learn's histogram gradient boosting, fitted for the absolute error (the median:
real-time prices are spiky, and a squared loss chases the spikes), or for a quantile.

Honesty is the caller's and this module's shared duty: ``design`` never reads
``rt[n_known:]`` for a decision's features, and training rows are only ever built from
decision steps whose targets lie before the period being forecast (``fit`` takes the
steps to learn from; ``benchmarks/forecast_skill.py`` trains on the years before the
test year).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

LAGS = 8  # two hours of 15-minute prices
FEATURES = (
    "h",
    *(f"lag{i}" for i in range(LAGS)),
    "mean_day",
    "std_day",
    "da_target",
    "da_last",
    "premium",
    "hour",
    "weekday",
    "month",
)

#: DA prices for steps k .. k+H-1 as published by decision step k
DamAhead = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class Calendar:
    """Each step's hour, weekday and month in the market's clock."""

    hour: np.ndarray
    weekday: np.ndarray
    month: np.ndarray


def design(
    rt: np.ndarray,
    n_known: int,
    dam: np.ndarray,
    dam_ahead: np.ndarray,
    cal: Calendar,
    k: int,
    steps_per_day: int,
) -> np.ndarray:
    """Feature rows (H, len(FEATURES)) for the decision at step ``k``. Reads ``rt`` and
    ``dam`` only before ``n_known`` (settled), and the target's DA as published
    (``dam_ahead``)."""
    if n_known < 1:
        raise ValueError("a forecast needs at least one settled real-time price")
    H = len(dam_ahead)
    known = rt[max(0, n_known - steps_per_day) : n_known]
    lags = rt[max(0, n_known - LAGS) : n_known][::-1]
    lags = np.concatenate([lags, np.full(LAGS - len(lags), lags[-1])])
    da_last = float(dam[n_known - 1])
    j = np.clip(np.arange(k, k + H), 0, len(cal.hour) - 1)
    cols = [
        np.arange(H, dtype=np.float64),
        *(np.full(H, v) for v in lags),
        np.full(H, float(known.mean())),
        np.full(H, float(known.std())),
        dam_ahead.astype(np.float64),
        np.full(H, da_last),
        np.full(H, float(lags[0]) - da_last),
        cal.hour[j].astype(np.float64),
        cal.weekday[j].astype(np.float64),
        cal.month[j].astype(np.float64),
    ]
    return np.column_stack(cols)


@dataclass
class RtForecaster:
    """Gradient-boosted real-time price forecast over ``horizon`` steps."""

    horizon: int = 16
    steps_per_day: int = 96
    #: None: the median (absolute-error loss) or the mean (``mean=True``); a value in
    #: (0, 1): that quantile
    quantile: float | None = None
    #: fit the conditional mean (squared loss) instead of the median: a decision whose
    #: money is linear in the price (run or sleep a miner) needs the expected price, and
    #: the median of a spiky price hides the spike risk
    mean: bool = False
    max_iter: int = 200
    #: OpenMP threads for fitting and predicting. One: on a shared 2-core machine the
    #: library's spinning threads made a small fit ten times slower (56 s against 6 s)
    threads: int = 1
    seed: int = 0
    model: Any = field(default=None, repr=False)

    def _new_model(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        if self.quantile is None:
            return HistGradientBoostingRegressor(
                loss="squared_error" if self.mean else "absolute_error",
                max_iter=self.max_iter,
                random_state=self.seed,
            )
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile {self.quantile} is outside (0, 1)")
        return HistGradientBoostingRegressor(
            loss="quantile",
            quantile=self.quantile,
            max_iter=self.max_iter,
            random_state=self.seed,
        )

    def _rows(
        self,
        rt: np.ndarray,
        dam: np.ndarray,
        dam_ahead: DamAhead,
        cal: Calendar,
        steps: np.ndarray,
        known_offset: int,
    ) -> np.ndarray:
        """Feature rows of the decisions at ``steps``, one block of ``horizon`` rows each."""
        H = self.horizon
        return np.vstack(
            [
                design(rt, k + known_offset, dam, dam_ahead(k, H), cal, k, self.steps_per_day)
                for k in steps
            ]
        )

    def fit(
        self,
        rt: np.ndarray,
        dam: np.ndarray,
        dam_ahead: DamAhead,
        cal: Calendar,
        steps: np.ndarray,
        known_offset: int = 0,
    ) -> RtForecaster:
        """Learn from decisions at ``steps`` (``n_known = k + known_offset``); every
        target ``k + h`` must lie inside ``rt``. The caller picks steps whose targets are
        all before the period it will forecast."""
        H = self.horizon
        steps = np.asarray(steps)
        steps = steps[(steps + known_offset >= 1) & (steps + H <= len(rt))]
        if len(steps) == 0:
            raise ValueError("no training steps with a settled price and a whole horizon")
        X = self._rows(rt, dam, dam_ahead, cal, steps, known_offset)
        y = np.concatenate([rt[k : k + H] for k in steps])
        model = self._new_model()  # imports the library: its OpenMP must be loaded first
        with threadpool_limits(limits=self.threads, user_api="openmp"):
            self.model = model.fit(X, y)
        return self

    def predict_rows(self, X: np.ndarray) -> np.ndarray:
        """The model's prediction for feature rows built by ``design``."""
        if self.model is None:
            raise RuntimeError("the forecaster is not fitted")
        with threadpool_limits(limits=self.threads, user_api="openmp"):
            return np.asarray(self.model.predict(X))

    def predict_many(
        self,
        rt: np.ndarray,
        dam: np.ndarray,
        dam_ahead: DamAhead,
        cal: Calendar,
        steps: np.ndarray,
        known_offset: int = 0,
    ) -> np.ndarray:
        """Forecasts (len(steps), horizon) for many decisions in one call to the model
        (each decision still sees only what was settled before it)."""
        if self.model is None:
            raise RuntimeError("the forecaster is not fitted")
        H = self.horizon
        X = self._rows(rt, dam, dam_ahead, cal, steps, known_offset)
        return self.predict_rows(X).reshape(len(steps), H)

    def predict(
        self,
        rt: np.ndarray,
        n_known: int,
        dam: np.ndarray,
        dam_ahead: np.ndarray,
        cal: Calendar,
        k: int,
    ) -> np.ndarray:
        """Prices for ``k .. k+len(dam_ahead)-1``; past the trained horizon, the DA price
        as published."""
        if self.model is None:
            raise RuntimeError("the forecaster is not fitted")
        H = min(self.horizon, len(dam_ahead))
        out = dam_ahead.astype(np.float64).copy()
        if H > 0:
            X = design(rt, n_known, dam, dam_ahead[:H], cal, k, self.steps_per_day)
            out[:H] = self.predict_rows(X)
        return out
