"""What a decision may know: the real-time prices settled by each step, and errors that
say which window of data a backtest reads and why."""

from __future__ import annotations

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
    ``current``: the step's own price, as a live 5-minute dispatch feed would show it."""
    if visibility == "current":
        return realised.copy(), np.arange(1, grid.n + 1, dtype=np.int64)
    j = (grid.starts_s - series.start_s) // series.interval_s - 1
    settled_end = series.start_s + (j + 1) * series.interval_s
    vals = np.where(j >= 0, series.values[np.clip(j, 0, None)], np.nan)
    n_known = np.searchsorted(grid.ends_s, settled_end, side="right").astype(np.int64)
    return vals.astype(np.float64), n_known
