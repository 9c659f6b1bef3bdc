"""Held-out backtests (docs/backtest.md, "Held out: 2025 and the other hubs"): a day-ahead
file that ends is read only as far as a decision could have seen it, the day-ahead
forecast never reads a day not yet published (DST days included), and
``benchmarks/backtest_table.py`` tabulates a span that is not a calendar year."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.errors import DataError
from models.market import Series
from models.markets import MARKETS
from models.site import load_site
from scheduler.backtest.forecast import dam_forecast
from scheduler.backtest.period import BacktestSetup, prepare
from tests.conftest import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import backtest_table  # noqa: E402

H = 3600
DAY = 24 * H
# 2023-11-16 00:00 in Chicago (CST, UTC-6): the one decision day of the first tests
FROM = 1_700_114_400
ERCOT = MARKETS["ERCOT"]


def _series(label: str, start_s: int, end_s: int, step_s: int, value: float) -> Series:
    n = (end_s - start_s) // step_s
    return Series(label, "USD/MWh", start_s, step_s, np.full(n, value))


def _setup(dam_end_s: int, after: float = 40.0) -> BacktestSetup:
    """One decision day (16 Nov 2023, Chicago) with a 48 h horizon; the day-ahead file
    ends at ``dam_end_s``, its last day (17 Nov) at ``after`` USD/MWh."""
    cfg = load_site(EXAMPLE)
    rt = _series("rt", FROM - 3 * DAY, FROM + 5 * DAY, 900, 30.0)
    da = _series("da", FROM - 3 * DAY, dam_end_s, H, 30.0)
    da.values[(FROM + DAY - da.start_s) // H :] = after
    return prepare(cfg, rt, FROM, FROM + DAY, 900, 2 * DAY, da, market=ERCOT)


def _every_forecast(setup: BacktestSetup) -> np.ndarray:
    assert setup.dam is not None and setup.market is not None
    return np.array(
        [
            dam_forecast(
                setup.dam,
                setup.mkt_day,
                setup.mkt_min,
                k,
                setup.horizon,
                setup.steps_per_day,
                setup.market.dam_published_min,
            )
            for k in range(setup.k0, setup.k1)
        ]
    )


def test_a_day_ahead_file_that_ends_after_the_last_day_a_decision_sees_is_enough() -> None:
    # the last decision (23:45 on the 16th) sees the 17th's prices, published at 13:30 on
    # the 16th, and no later day: a file ending with the 17th holds all the run can use
    short = _setup(FROM + 2 * DAY)
    assert short.dam is not None and np.isfinite(short.dam).all()
    assert any("day-ahead prices (da) end" in n for n in short.notes), short.notes
    # the same decisions as with a file running to the end of the horizon, whatever it
    # says about the days no decision saw published
    long = _setup(FROM + 4 * DAY)
    np.testing.assert_array_equal(_every_forecast(short), _every_forecast(long))
    last = _every_forecast(short)[-1]  # at 23:45 on the 16th: that step, then the 17th
    assert last[0] == 30.0 and (last[1 : 1 + 96] == 40.0).all()


def test_a_day_ahead_file_short_of_a_published_day_is_refused_saying_which() -> None:
    with pytest.raises(DataError) as exc:
        _setup(FROM + 2 * DAY - H)  # the 17th's last hour is missing
    msg = str(exc.value)
    assert "2023-11-18T06:00:00Z" in msg  # the end of the 17th, Chicago, as it must reach
    assert "published" in msg and "--start" not in msg


def test_the_day_ahead_forecast_never_reads_a_day_not_yet_published_across_dst() -> None:
    # 2023-11-05 has 25 hours in Chicago: a decision on the 3rd after 13:30 knows the 4th;
    # its forecast of the 5th repeats the 4th and must not read the 5th's own prices
    cfg = load_site(EXAMPLE)
    start = 1_698_987_600  # 2023-11-03 00:00 CDT
    rt = _series("rt", start - 2 * DAY, start + 6 * DAY, 900, 30.0)
    da = _series("da", start - 2 * DAY, start + 6 * DAY, H, 30.0)
    base = prepare(cfg, rt, start, start + 2 * DAY, 900, 2 * DAY, da, market=ERCOT)
    assert base.dam is not None and base.market is not None
    ks = range(base.k0, base.k1)
    day = base.mkt_day
    pub = base.market.dam_published_min
    for k in ks:
        known = day[k] + (1 if base.mkt_min[k] >= pub else 0)
        perturbed = base.dam.copy()
        perturbed[day > known] += 1000.0  # the days not published at k
        a = dam_forecast(base.dam, day, base.mkt_min, k, base.horizon, 96, pub)
        b = dam_forecast(perturbed, day, base.mkt_min, k, base.horizon, 96, pub)
        np.testing.assert_array_equal(a, b, err_msg=f"step {k} reads an unpublished day")


def _doc(profits: dict[str, float], months: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "policies": [
            {
                "policy": p,
                "money_usd": {"profit": v},
                "monthly_profit_usd": {m: by[p] for m, by in months.items()},
            }
            for p, v in profits.items()
        ]
    }


def test_the_table_takes_a_span_that_is_not_a_year() -> None:
    assert backtest_table.span("2023") == ("2023-01-01", "2024-01-01")
    assert backtest_table.span("2021") == ("2021-01-02", "2022-01-01")
    assert backtest_table.span("2025-01-01_2025-05-17") == ("2025-01-01", "2025-05-17")
    cmd = backtest_table.command("2025-01-01_2025-05-17", "HB_HOUSTON", Path("x.json"), "blend")
    assert cmd[cmd.index("--from") + 1] == "2025-01-01"
    assert cmd[cmd.index("--to") + 1] == "2025-05-17"
    assert cmd[cmd.index("--price-column") + 1] == "HB_HOUSTON"
    assert "--events" not in cmd  # no DR events file for 2025
    year = backtest_table.command("2023", "HB_NORTH", Path("x.json"), "blend")
    assert "--events" in year
    months = {
        "2025-01": {"scheduler": 99.0, "best-mode": 97.0, "oracle": 100.0},
        "2025-02": {"scheduler": 97.0, "best-mode": 98.0, "oracle": 100.0},
    }
    profits = {"scheduler": 196.0, "best-mode": 195.0, "oracle": 200.0}
    text = backtest_table.tables(
        {"2025-01-01_2025-03-01": _doc(profits, months)}, {"2025-02": 2000.0}
    )
    assert text.startswith("| period |")
    assert "| 2025-01-01 to 2025-03-01 | 98.00 % |" in text
    assert "| 2025-02 | 2,000 (stress) | 97.00 % | best-mode (98.00 %) | -1.00 % |" in text
    assert "above the month's strongest baseline: 1 of 2" in text


def test_spans_of_one_year_are_summed_in_a_row_together() -> None:
    first = _doc(
        {"scheduler": 99.0, "best-mode": 97.0, "oracle": 100.0},
        {"2023-01": {"scheduler": 99.0, "best-mode": 97.0, "oracle": 100.0}},
    )
    second = _doc(
        {"scheduler": 290.0, "best-mode": 280.0, "oracle": 300.0},
        {"2023-02": {"scheduler": 290.0, "best-mode": 280.0, "oracle": 300.0}},
    )
    text = backtest_table.tables(
        {"2023-01-01_2023-02-01": first, "2023-02-01_2023-03-01": second}, {}
    )
    # (99 + 290) / (100 + 300) = 97.25 %; uplift (389 - 377) / 400 = +3.00 %
    assert "| together | 97.25 % |" in text
    assert "| best-mode | +3.00 % | +5.75 % | 2023-02 (96.67 %) |" in text
    assert text.count("| 2023-01 |") == 1 and text.count("| 2023-02 |") == 1
