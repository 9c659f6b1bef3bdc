"""A full year of rolling decisions: 35,040 plans at 15-minute steps, 48 h horizon.

Usage: .venv/bin/python benchmarks/backtest_speed.py [--year 2023] [--days N]
       [--plan-resolution 15min:8h,1h]

Uses ERCOT HB_WEST real-time prices and the day-ahead forecast from ../shared/data when
present, else the labelled synthetic demo series (the figures then say so). Prints the
wall and CPU time of the rolling scheduler (CPU time is what a busy or shared machine
does not inflate), the time per decision, the oracle's single LP, and peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.market import demo_prices, load_ercot_dam, load_ercot_rtm  # noqa: E402
from models.markets import MARKETS  # noqa: E402
from models.site import load_site  # noqa: E402
from scheduler.backtest import policies  # noqa: E402
from scheduler.backtest.engine import evaluate, prepare  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--year", type=int, default=2023)
    ap.add_argument("--days", type=int, default=0, help="shorter run (0: the whole year)")
    ap.add_argument(
        "--plan-resolution",
        help="plan the far horizon on coarser steps, e.g. 15min:8h,1h (changes decisions)",
    )
    args = ap.parse_args()
    cfg = load_site(ROOT / "deploy" / "examples" / "west-texas-30mw.toml")
    tz = cfg.site.timezone
    start = int(pd.Timestamp(f"{args.year}-01-01", tz=tz).timestamp())
    end = int(pd.Timestamp(f"{args.year + 1}-01-01", tz=tz).timestamp())
    if args.days:
        end = start + args.days * 86400
    rt_file = DATA / "ercot_rtm_spp_15min_hubs_2021_2025.csv"
    dam_file = DATA / "ercot_dam_spp_hourly_hubs_lz_2021_2025.csv"
    if rt_file.exists():
        rt = load_ercot_rtm(rt_file, "HB_WEST")
        dam = load_ercot_dam(dam_file, "HB_WEST") if dam_file.exists() else None
        if dam is not None and not dam.covers(start, end + 2 * 86400):
            dam = None
    else:
        rt, dam = demo_prices(start - 86400, end + 3 * 86400, tz), None
    print(
        f"prices: {rt.label}; forecast: {dam.label if dam else 'naive'}; "
        f"{(end - start) // 86400} days at 15 min, horizon 48 h"
        + (f", plan steps {args.plan_resolution}" if args.plan_resolution else "")
    )
    if rt.start_s > start - 900:  # a decision needs the interval settled before it
        start += 86400
    setup = prepare(cfg, rt, start, end, 900, 48 * 3600, dam, market=MARKETS["ERCOT"])
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    run = policies.rolling_scheduler(
        setup, progress=sys.stderr.isatty(), plan_resolution=args.plan_resolution
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    oracle = policies.oracle(setup)
    oracle_s = time.perf_counter() - t1
    sched, orc = evaluate(setup, run), evaluate(setup, oracle)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"rolling scheduler: {run.plans} plans in {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"({1000 * wall / run.plans:.2f} ms wall, {1000 * cpu / run.plans:.2f} ms CPU per "
        f"decision), {run.solver_failures} failures"
    )
    print(f"oracle: one LP in {oracle_s:.1f} s ({oracle.notes[0] if oracle.notes else ''})")
    print(
        f"profit: scheduler {sched.money.profit:,.0f} USD, oracle {orc.money.profit:,.0f} USD "
        f"({100 * sched.money.profit / orc.money.profit:.1f} %)"
    )
    print(f"peak RSS {rss:.0f} MB")
    # on a shared machine wall time depends on the others' load: say what it was
    load1 = os.getloadavg()
    print(
        "load average (1/5/15 min) at the start "
        + "/".join(f"{x:.2f}" for x in load0)
        + ", at the end "
        + "/".join(f"{x:.2f}" for x in load1)
        + f", {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
