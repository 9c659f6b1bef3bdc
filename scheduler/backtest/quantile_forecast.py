"""A real-time price forecast from quantiles: the expected price with its tail counted.

Running or sleeping a miner gains or loses linearly in the price, so a decision needs the
expected price of each step ahead. A squared-loss fit of the mean chases the rare spikes
of a real-time price and is noisy; a median ignores them. This forecaster fits several
quantiles of the price at each step ahead (scikit-learn's histogram gradient boosting with
the pinball loss, the features of ``rt_forecast.design``: only what was settled or
published by the decision) and takes the expected price as the mass-weighted sum of the
quantiles, each quantile standing for the probability mass nearest to it. The top
quantile carries the spike risk: where the model expects a spike to be likely (the
day-ahead price high, the last settled prices climbing, an August evening), the upper
quantiles rise first and the expected price with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scheduler.backtest.rt_forecast import Calendar, DamAhead, RtForecaster

#: quantile levels fitted; the top one carries the spike risk
QUANTILES = (0.1, 0.5, 0.9, 0.98)


def quantile_masses(levels: Sequence[float]) -> np.ndarray:
    """The probability mass each quantile stands for: from the midpoint with the level
    below to the midpoint with the level above (0 and 1 at the ends). Sums to 1."""
    p = np.asarray(levels, dtype=np.float64)
    if len(p) == 0 or np.any(np.diff(p) <= 0) or p[0] <= 0.0 or p[-1] >= 1.0:
        raise ValueError(f"quantile levels {list(levels)}: need increasing values in (0, 1)")
    edges = np.concatenate([[0.0], (p[1:] + p[:-1]) / 2.0, [1.0]])
    return np.asarray(np.diff(edges))


@dataclass
class QuantileForecaster:
    """Quantiles of the real-time price over ``horizon`` steps, and their expected price."""

    horizon: int = 16
    steps_per_day: int = 96
    levels: tuple[float, ...] = QUANTILES
    max_iter: int = 100
    threads: int = 1
    models: list[RtForecaster] = field(default_factory=list, repr=False)

    def fit(
        self,
        rt: np.ndarray,
        dam: np.ndarray,
        dam_ahead: DamAhead,
        cal: Calendar,
        steps: np.ndarray,
        known_offset: int = 0,
    ) -> QuantileForecaster:
        """One model per level, from decisions at ``steps`` (see ``RtForecaster.fit``: the
        caller picks steps whose targets all lie before the period it will forecast)."""
        quantile_masses(self.levels)  # refuse bad levels before any fitting
        self.models = [
            RtForecaster(
                horizon=self.horizon,
                steps_per_day=self.steps_per_day,
                quantile=q,
                max_iter=self.max_iter,
                threads=self.threads,
            ).fit(rt, dam, dam_ahead, cal, steps, known_offset)
            for q in self.levels
        ]
        return self

    def quantile_rows(self, X: np.ndarray) -> np.ndarray:
        """(rows, levels) quantiles for feature rows from ``rt_forecast.design``, sorted
        along each row (separately fitted quantiles may cross)."""
        if not self.models:
            raise RuntimeError("the forecaster is not fitted")
        q = np.column_stack([m.predict_rows(X) for m in self.models])
        return np.sort(q, axis=1)

    def predict_rows(self, X: np.ndarray) -> np.ndarray:
        """The expected price of each row: its quantiles weighted by their masses."""
        return np.asarray(self.quantile_rows(X) @ quantile_masses(self.levels))
