"""Skill of the real-time price forecaster against what a policy could use instead.

    .venv/bin/python benchmarks/forecast_skill.py --test-year 2023
    .venv/bin/python benchmarks/forecast_skill.py --test-year 2024 --hub HB_NORTH

ERCOT 15-minute real-time settlement prices and hourly day-ahead prices from
../shared/data. The forecaster (scheduler/backtest/rt_forecast.py) is trained on every
year before the test year, then forecasts each decision of the test year from what was
known then: real-time prices settled before the decision interval (known only after
their interval), day-ahead prices as published at 13:30 Central the day before
(models/markets.py). It is compared, horizon by horizon, with:

- persistence: the last settled real-time price held;
- day-ahead: the day-ahead price of the target interval as published;
- blend: the last settled price fading into the day-ahead curve with a 1-hour time
  constant (the backtest's rolling scheduler's forecast, scheduler/backtest/forecast.py).

It prints the mean absolute error (USD/MWh) per horizon bucket, over all decisions and
over those whose target price exceeded 500 USD/MWh (spikes), and the forecaster's
training time. Decisions are sampled every ``--stride`` steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.market import load_price_file  # noqa: E402
from models.markets import market_info  # noqa: E402
from scheduler.backtest.forecast import blend, dam_forecast  # noqa: E402
from scheduler.backtest.rt_forecast import Calendar, RtForecaster  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
STEP_S = 900
PER_DAY = 96
BUCKETS = {"next 15 min": (0, 1), "15 min-1 h": (1, 4), "1-4 h": (4, 16)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-year", type=int, default=2023)
    ap.add_argument("--hub", default="HB_WEST")
    ap.add_argument("--stride", type=int, default=4, help="test every Nth decision step")
    ap.add_argument("--train-stride", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=16, help="15-minute steps forecast")
    args = ap.parse_args()
    rt_path = DATA / "ercot_rtm_spp_15min_hubs_2021_2025.csv"
    dam_path = DATA / "ercot_dam_spp_hourly_hubs_lz_2021_2025.csv"
    if not rt_path.exists():
        raise SystemExit(f"real data not present at {DATA}")
    rt_s = load_price_file(rt_path, "ercot-rtm", args.hub)
    dam_s = load_price_file(dam_path, "ercot-dam", args.hub)
    start = max(rt_s.start_s, dam_s.start_s)
    end = min(rt_s.end_s, dam_s.end_s)
    starts = np.arange(start, end, STEP_S, dtype=np.int64)
    rt = rt_s.mean_over(starts, starts + STEP_S)
    dam = dam_s.mean_over(starts, starts + STEP_S)
    mkt = market_info("ERCOT")
    local = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).tz_convert(mkt.timezone)
    day = (local.normalize().tz_localize(None) - pd.Timestamp("2000-01-01")).days.to_numpy()
    minute = (local.hour * 60 + local.minute).to_numpy()
    cal = Calendar(local.hour.to_numpy(), local.day_of_week.to_numpy(), local.month.to_numpy())
    H = args.horizon

    def ahead(k: int, h: int) -> np.ndarray:
        return dam_forecast(dam, day, minute, k, h, PER_DAY, mkt.dam_published_min)

    year = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).year.to_numpy()
    test = np.flatnonzero(year == args.test_year)
    if len(test) == 0:
        raise SystemExit(f"no data in {args.test_year}")
    first = int(test[0])
    # training decisions: every target before the test year's first interval
    train = np.arange(PER_DAY, first - H, args.train_stride)
    f = RtForecaster(horizon=H, steps_per_day=PER_DAY)
    t0 = time.perf_counter()
    f.fit(rt, dam, ahead, cal, train)
    fit_s = time.perf_counter() - t0
    f_mean = RtForecaster(horizon=H, steps_per_day=PER_DAY, mean=True).fit(
        rt, dam, ahead, cal, train
    )
    decisions = test[(test >= PER_DAY) & (test + H <= len(rt))][:: args.stride]
    names = ("forecaster", "forecaster (mean)", "persistence", "day-ahead", "blend 1 h",
             "blend 1 h, aged")  # fmt: skip
    err: dict[str, list[np.ndarray]] = {name: [] for name in names}
    targets = []
    t0 = time.perf_counter()
    predicted = f.predict_many(rt, dam, ahead, cal, decisions)
    predict_ms = 1000 * (time.perf_counter() - t0) / len(decisions)
    predicted_mean = f_mean.predict_many(rt, dam, ahead, cal, decisions)
    for row, k in enumerate(decisions):
        da = ahead(int(k), H)
        truth = rt[k : k + H]
        last = float(rt[k - 1])
        err["forecaster"].append(predicted[row] - truth)
        err["forecaster (mean)"].append(predicted_mean[row] - truth)
        err["persistence"].append(np.full(H, last) - truth)
        err["day-ahead"].append(da - truth)
        err["blend 1 h"].append(blend(last, da, STEP_S / 3600, 1.0) - truth)
        err["blend 1 h, aged"].append(blend(last, da, STEP_S / 3600, 1.0, age_steps=1) - truth)
        targets.append(truth)
    truth_all = np.vstack(targets)
    spikes = truth_all > 500.0
    print(
        f"ERCOT {args.hub}, test {args.test_year} ({len(decisions)} decisions, every "
        f"{args.stride} steps), trained on {len(train)} decisions before it in {fit_s:.1f} s; "
        f"{predict_ms:.2f} ms per forecast; {int(spikes.sum())} target intervals > 500 USD/MWh"
    )
    head = f"{'MAE USD/MWh':18}" + "".join(f"{b:>14}" for b in BUCKETS) + f"{'spikes 0-4 h':>14}"
    print(head)
    for name, rows in err.items():
        e = np.abs(np.vstack(rows))
        cells = [e[:, a:b].mean() for a, b in BUCKETS.values()]
        spike = e[spikes].mean() if spikes.any() else float("nan")
        print(f"{name:18}" + "".join(f"{c:14.2f}" for c in cells) + f"{spike:14.1f}")


if __name__ == "__main__":
    main()
