"""Every policy per year and per month on ERCOT, against the goals of issue 18.

    .venv/bin/python benchmarks/backtest_table.py                  # run 2021-2024, one at a time
    .venv/bin/python benchmarks/backtest_table.py --jobs 2         # two years at once
    .venv/bin/python benchmarks/backtest_table.py --reuse          # tables from the JSON reports
    .venv/bin/python benchmarks/backtest_table.py --print-commands # what it would run
    .venv/bin/python benchmarks/backtest_table.py --hub HB_HOUSTON --years 2023
    .venv/bin/python benchmarks/backtest_table.py --period 2025-01-01 2025-05-17  # not a year
    .venv/bin/python benchmarks/backtest_table.py --period 2023-01-01 2023-06-01 \
        --period 2023-06-01 2024-01-01     # two runs, a row each and one summing them

Each year is one run of ``gridsched backtest`` on the example site
(deploy/examples/west-texas-30mw.toml) with the command docs/backtest.md shows for it
(every policy, the year's DR events file where there is one; 2021 starts on 2 January, as
a decision needs the interval settled before it), its JSON report written to
``--out-dir``. Month figures are the months of the year's run (the scheduler's plans
carry the billed peaks and the 4CP record through the year), not separate runs. A stress
month is one with a real-time price above 1,000 USD/MWh (issue 18), found in the price
file. For each year and month the tables give every policy's share of the oracle's
profit, the strongest baseline (the best rule of that period), the scheduler's uplift
over it and the oracle's (the most any policy could have had), and whether each goal is
met. A year takes 10 to 25 minutes on a busy 2-core machine. ``--hub`` and ``--period``
run the same command on another hub or on a span that is not a calendar year (the
held-out runs of docs/backtest.md); the DR events file is the start year's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.market import load_ercot_rtm  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RT_FILE = DATA / "ercot_rtm_spp_15min_hubs_2021_2025.csv"
DAM_FILE = DATA / "ercot_dam_spp_hourly_hubs_lz_2021_2025.csv"
BTC_FILE = DATA / "btc_daily_network_2020_2026.csv"
CONFIG = ROOT / "deploy" / "examples" / "west-texas-30mw.toml"
RULES = ("threshold", "best-mode", "best-mode+peaks", "always-on")
POLICIES = ("scheduler", *RULES, "oracle")
STRESS_USD_PER_MWH = 1000.0
GOAL_YEAR_PCT, GOAL_MONTH_PCT = 98.5, 96.0
GOAL_YEAR_UPLIFT_PCT, GOAL_STRESS_UPLIFT_PCT = 1.0, 3.0


def span(period: str) -> tuple[str, str]:
    """``--from`` and ``--to`` of a period: a year (``2023``; 2021 starts on 2 January)
    or ``FROM_TO`` (``2025-01-01_2025-05-17``, the end exclusive)."""
    if "_" in period:
        start, end = period.split("_")
        return start, end
    year = int(period)
    return ("2021-01-02" if year == 2021 else f"{year}-01-01"), f"{year + 1}-01-01"


def command(
    period: str, hub: str, json_out: Path, rt_forecast: str, blend_tau_h: float | None = None
) -> list[str]:
    """The ``gridsched backtest`` command of one period, as docs/backtest.md shows it
    (``blend_tau_h``: the blend's time constant, when not the default)."""
    start, end = span(period)
    cmd = [
        str(ROOT / ".venv" / "bin" / "gridsched"),
        "backtest",
        "--config", str(CONFIG),
        "--prices", str(RT_FILE), "--price-format", "ercot-rtm", "--price-column", hub,
        "--forecast", str(DAM_FILE), "--forecast-format", "ercot-dam",
        "--btc", str(BTC_FILE),
        "--from", start, "--to", end,
        "--rt-forecast", rt_forecast,
        "--quiet", "--json-out", str(json_out),
    ]  # fmt: skip
    if blend_tau_h is not None:
        cmd[cmd.index("--quiet") : cmd.index("--quiet")] = ["--blend-tau-h", f"{blend_tau_h:g}"]
    events = ROOT / "deploy" / "examples" / f"events-ercot-{start[:4]}.json"
    if events.exists():
        cmd[cmd.index("--from") : cmd.index("--from")] = ["--events", str(events)]
    return cmd


def report_path(out_dir: str, hub: str, period: str) -> Path:
    return Path(out_dir) / f"ercot-{hub.lower()}-{period}.json"


def run_year(period: str, args: argparse.Namespace) -> dict[str, Any]:
    out = report_path(args.out_dir, args.hub, period)
    if not args.reuse:
        cmd = command(period, args.hub, out, args.rt_forecast, args.blend_tau_h)
        print(f"[{period}] {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"[{period}] failed ({done.returncode}):\n{done.stderr[-2000:]}")
        print(f"[{period}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elif not out.exists():
        raise SystemExit(f"--reuse: {out} is missing; run without --reuse first")
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def stress_months(hub: str, periods: list[str]) -> dict[str, float]:
    """The highest real-time price of each month (site clock, America/Chicago) inside the
    periods (a month cut by a period's end counts only its days in the period)."""
    s = load_ercot_rtm(RT_FILE, hub)
    t = pd.to_datetime(s.start_s + s.interval_s * np.arange(len(s.values)), unit="s", utc=True)
    local = pd.DatetimeIndex(t).tz_convert("America/Chicago")
    day = local.strftime("%Y-%m-%d")
    inside = np.zeros(len(day), dtype=bool)
    for p in periods:
        start, end = span(p)
        inside |= (day >= start) & (day < end)
    months = local.strftime("%Y-%m")[inside]
    peak = pd.Series(s.values[inside], index=months).groupby(level=0).max()
    return {str(k): float(v) for k, v in peak.items()}


def _pct(x: float) -> str:
    return f"{x:.2f} %"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def year_rows(doc: dict[str, Any]) -> dict[str, float]:
    return {p["policy"]: float(p["money_usd"]["profit"]) for p in doc["policies"]}


def combined(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' reports as one: each policy's profit and monthly profits summed (a
    month split between two runs adds up)."""
    profit: dict[str, float] = {}
    monthly: dict[str, dict[str, float]] = {}
    for doc in docs:
        for p in doc["policies"]:
            name = p["policy"]
            profit[name] = profit.get(name, 0.0) + float(p["money_usd"]["profit"])
            for m, v in p["monthly_profit_usd"].items():
                by = monthly.setdefault(name, {})
                by[m] = by.get(m, 0.0) + float(v)
    return {
        "policies": [
            {"policy": n, "money_usd": {"profit": v}, "monthly_profit_usd": monthly.get(n, {})}
            for n, v in profit.items()
        ]
    }


def tables(docs: dict[str, dict[str, Any]], peaks: dict[str, float]) -> str:
    label = "year" if all(p.isdigit() for p in docs) else "period"
    out = [
        f"| {label} | " + " | ".join(POLICIES) + " | strongest baseline | scheduler's uplift "
        "(% of oracle) | oracle's uplift (ceiling) | worst month | >= 98.5 % | >= 1 % uplift |",
        "|---" * (len(POLICIES) + 7) + "|",
    ]
    months: list[tuple[str, dict[str, float]]] = []
    rows = sorted(docs.items())
    if label == "period" and len(docs) > 1:  # spans of one run each, summed
        rows.append(("together", combined([d for _, d in rows])))
    for year, doc in rows:
        profit = year_rows(doc)
        orc = profit["oracle"]
        best = max((r for r in RULES if r in profit), key=profit.__getitem__)
        up = 100 * (profit["scheduler"] - profit[best]) / orc
        ceiling = 100 * (orc - profit[best]) / orc
        by_month: dict[str, dict[str, float]] = {}
        for p in doc["policies"]:
            for m, v in p["monthly_profit_usd"].items():
                by_month.setdefault(m, {})[p["policy"]] = float(v)
        worst = min(by_month, key=lambda m: by_month[m]["scheduler"] / by_month[m]["oracle"])
        worst_pct = 100 * by_month[worst]["scheduler"] / by_month[worst]["oracle"]
        share = 100 * profit["scheduler"] / orc
        cells = [_pct(100 * profit[p] / orc) if p in profit else "-" for p in POLICIES]
        name = year.replace("_", " to ")
        # chosen on profit, which charges nothing for a DR step over its cap: said where so
        dr = {p["policy"]: p.get("dr_compliance") for p in doc["policies"]}.get(best)
        shown = best if dr is None or dr >= 1.0 else f"{best} (broke DR caps: {100 * dr:.1f} %)"
        out.append(
            f"| {name} | " + " | ".join(cells) + f" | {shown} | {up:+.2f} % | {ceiling:+.2f} % "
            f"| {worst} ({worst_pct:.2f} %) | {_yes(share >= GOAL_YEAR_PCT)} "
            f"| {_yes(up >= GOAL_YEAR_UPLIFT_PCT)} |"
        )
        if year != "together":
            months += sorted(by_month.items())
    out += [
        "",
        "| month | peak RT price (USD/MWh) | scheduler | strongest baseline of the month "
        "| scheduler's uplift (% of oracle) | oracle's uplift (ceiling) | >= 96 % "
        "| above the baseline | >= 3 % uplift (stress months) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    count = {"month": 0, "above": 0, "stress": 0, "stress_met": 0, "stress_possible": 0}
    stress_rows: list[tuple[str, float, float]] = []  # (month, uplift, ceiling)
    for m, profit in months:
        orc = profit["oracle"]
        best = max((r for r in RULES if r in profit), key=profit.__getitem__)
        share = 100 * profit["scheduler"] / orc
        up = 100 * (profit["scheduler"] - profit[best]) / orc
        ceiling = 100 * (orc - profit[best]) / orc
        stress = peaks.get(m, 0.0) > STRESS_USD_PER_MWH
        count["month"] += share >= GOAL_MONTH_PCT
        count["above"] += up > 0
        if stress:
            stress_rows.append((m, up, ceiling))
            count["stress"] += 1
            count["stress_met"] += up >= GOAL_STRESS_UPLIFT_PCT
            count["stress_possible"] += ceiling >= GOAL_STRESS_UPLIFT_PCT
        goal = (
            f"{_yes(up >= GOAL_STRESS_UPLIFT_PCT)}"
            + ("" if ceiling >= GOAL_STRESS_UPLIFT_PCT else " (out of reach: ceiling < 3 %)")
            if stress
            else "-"
        )
        out.append(
            f"| {m} | {peaks.get(m, float('nan')):,.0f}{' (stress)' if stress else ''} "
            f"| {_pct(share)} | {best} ({_pct(100 * profit[best] / orc)}) | {up:+.2f} % "
            f"| {ceiling:+.2f} % | {_yes(share >= GOAL_MONTH_PCT)} | {_yes(up > 0)} | {goal} |"
        )
    n = len(months)
    out += [
        "",
        f"months >= 96 % of the oracle: {count['month']} of {n}; above the month's strongest "
        f"baseline: {count['above']} of {n}; stress months (a price above 1,000 USD/MWh): "
        f"{count['stress']}, uplift >= 3 % of the oracle in {count['stress_met']}, "
        f"reachable at all (the oracle's own uplift >= 3 %) in {count['stress_possible']}",
        "",
        *stress_table(stress_rows, peaks),
    ]
    return "\n".join(out)


def stress_table(rows: list[tuple[str, float, float]], peaks: dict[str, float]) -> list[str]:
    """The stress months against their bound: the goal (uplift >= 3 % of the oracle over
    the month's strongest baseline) is reachable only where the oracle's own uplift, the
    most any policy could have had, is >= 3 %. Reachable months first."""
    goal = GOAL_STRESS_UPLIFT_PCT
    reach = [r for r in rows if r[2] >= goal]
    out_of = [r for r in rows if r[2] < goal]
    lines = [
        "| stress month | peak RT price (USD/MWh) | oracle's uplift (the bound) "
        "| scheduler's uplift | share of the bound | >= 3 % uplift |",
        "|---|---|---|---|---|---|",
    ]
    for group, verdict in ((reach, None), (out_of, "out of reach (bound < 3 %)")):
        for m, up, ceiling in group:
            got = verdict or ("met" if up >= goal else "**not met**")
            lines.append(
                f"| {m} | {peaks.get(m, float('nan')):,.0f} | {ceiling:+.2f} % | {up:+.2f} % "
                f"| {100 * up / ceiling:.0f} % | {got} |"
            )
    met = sum(up >= goal for _, up, _ in reach)
    lines += [
        "",
        f"stress months: {len(rows)}; reachable (bound >= 3 %): {len(reach)}, the "
        f"goal met in {met} of them",
    ]
    if out_of:
        lo = min(c for _, _, c in out_of)
        hi = max(c for _, _, c in out_of)
        share = [100 * up / c for _, up, c in out_of]
        lines[-1] += (
            f"; out of reach for any policy: {len(out_of)} (bound {lo:+.2f} % to {hi:+.2f} %), "
            f"where the scheduler has {min(share):.0f} % to {max(share):.0f} % of the bound"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--years", type=int, nargs="+", default=[2021, 2022, 2023, 2024])
    ap.add_argument(
        "--period",
        nargs=2,
        action="append",
        metavar=("FROM", "TO"),
        help="a span instead of --years, e.g. 2025-01-01 2025-05-17 (TO exclusive); "
        "repeated, each span is a run and a row, and a row 'together' sums them",
    )
    ap.add_argument("--hub", default="HB_WEST")
    ap.add_argument("--jobs", type=int, default=1, choices=[1, 2], help="years run at once")
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "backtest"))
    ap.add_argument("--rt-forecast", default="blend")
    ap.add_argument(
        "--blend-tau-h", type=float, default=None, help="passed to each backtest (default 2)"
    )
    ap.add_argument("--reuse", action="store_true", help="read the JSON reports, run nothing")
    ap.add_argument("--print-commands", action="store_true", help="print the commands, run none")
    args = ap.parse_args()
    periods = ["_".join(p) for p in args.period] if args.period else [str(y) for y in args.years]
    if args.print_commands:
        for p in periods:
            out = report_path(args.out_dir, args.hub, p)
            print(" ".join(command(p, args.hub, out, args.rt_forecast, args.blend_tau_h)))
        return
    if not RT_FILE.exists():
        raise SystemExit(f"real data not present at {DATA}")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        docs = dict(zip(periods, pool.map(lambda p: run_year(p, args), periods), strict=True))
    for year, doc in sorted(docs.items()):
        period = doc.get("period", {})
        sched = next(p for p in doc["policies"] if p["policy"] == "scheduler")
        said = [n for n in sched["notes"] if n.startswith("forecast:")]
        print(
            f"{year}: {period.get('from')} to {period.get('to')}, day-ahead {doc.get('forecast')}, "
            f"visibility {doc.get('price_visibility')}, currency {doc.get('currency')}; "
            f"scheduler {said[0] if said else 'forecast not named'}"
        )
    print()
    print(tables(docs, stress_months(args.hub, periods)))


if __name__ == "__main__":
    main()
