"""What a decision may know: the real-time prices settled by each step, and errors that
say which window of data a backtest reads and why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import DataError
from models.market import Series, iso
from scheduler.planner.timegrid import TimeGrid


def window_error(what: Series, exc: DataError, start: int, end: int, why: str) -> DataError:
    return DataError(
        what.label,
        f"the backtest reads {iso(start)} to {iso(end)} ({why}); {exc}. "
        "Bridge gaps on purpose with --fill hold|linear, or move --from/--to",
    )


def known_prices(
    series: Series, grid: TimeGrid, realised: np.ndarray, visibility: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the real-time price a decision may use and how many steps of the
    realised series are settled. ``after-interval``: the last settlement interval that
    ended at or before the step's start (a price is published after its interval);
    ``current``: the step's own settled price, standing for a live 5-minute dispatch
    feed; of a 15-minute step that is the mean of its three 5-minute prices, more than a
    feed shows at the step's start (an upper estimate)."""
    if visibility == "current":
        return realised.copy(), np.arange(1, grid.n + 1, dtype=np.int64)
    j = (grid.starts_s - series.start_s) // series.interval_s - 1
    settled_end = series.start_s + (j + 1) * series.interval_s
    vals = np.where(j >= 0, series.values[np.clip(j, 0, None)], np.nan)
    n_known = np.searchsorted(grid.ends_s, settled_end, side="right").astype(np.int64)
    return vals.astype(np.float64), n_known


@dataclass(frozen=True)
class Known:
    """Everything about prices a decision at step ``k`` may read, and nothing more: a
    forecast for the rolling scheduler is handed this and only this. The arrays are
    read-only copies cut at what was settled or published by the step's start."""

    k: int
    horizon: int
    #: realised real-time prices of steps [0, n_known): the settled ones
    rt_settled: np.ndarray
    #: the real-time price the decision may act on (last settled, or live with ``current``)
    current: float
    #: steps between the interval of ``current`` and step ``k`` (1 after-interval, 0 live)
    age_steps: int
    #: day-ahead prices of steps k .. k+horizon-1 as published by step k (None: no file)
    dam_ahead: np.ndarray | None
    #: day-ahead prices of the settled steps [0, n_known) (published long before)
    dam_settled: np.ndarray | None


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64, copy=True)
    out.flags.writeable = False
    return out


def known_at(
    realised: np.ndarray,
    n_known: int,
    current: float,
    k: int,
    horizon: int,
    dam: np.ndarray | None,
    dam_ahead: np.ndarray | None,
) -> Known:
    """The ``Known`` of the decision at step ``k``; ``dam_ahead`` must already respect the
    market's publication time (``forecast.dam_forecast``)."""
    if n_known > k + 1:
        raise ValueError(f"step {k}: {n_known} steps settled is in the future")
    return Known(
        k=k,
        horizon=horizon,
        rt_settled=_frozen(realised[:n_known]),
        current=float(current),
        age_steps=k - n_known + 1,
        dam_ahead=None if dam_ahead is None else _frozen(dam_ahead),
        dam_settled=None if dam is None else _frozen(dam[:n_known]),
    )


def settled_history(series: Series, until_s: int, step_s: int) -> tuple[int, np.ndarray]:
    """The series' values on a ``step_s`` grid ending at ``until_s``, keeping only the
    intervals that ended by then (for training a forecaster before a backtest's first
    decision); returns (first step start, values)."""
    first = until_s - ((until_s - series.start_s) // step_s) * step_s  # >= start_s
    # the end of the series' last interval that ended by ``until_s``: a step inside an
    # interval still running (an hour not yet over) would read its unsettled value
    settled_end = series.start_s + ((until_s - series.start_s) // series.interval_s) * (
        series.interval_s
    )
    last_end = min(settled_end, series.end_s)
    starts = np.arange(first, last_end - step_s + 1, step_s, dtype=np.int64)
    return first, series.mean_over(starts, starts + step_s)
