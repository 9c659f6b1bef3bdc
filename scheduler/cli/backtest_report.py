"""Backtest report: policies side by side, month by month; JSON and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scheduler.backtest.engine import BacktestSetup, PolicyResult
from scheduler.cli.report import table

SCHEMA = "gridsched.backtest/2"
PLANNERS = ("scheduler", "oracle")


def _pct(a: float, b: float, digits: int = 1) -> str:
    return f"{100 * a / b:.{digits}f}%" if b > 0 else "-"


def strongest_baseline(results: list[PolicyResult]) -> PolicyResult | None:
    """The baseline (a rule, not the scheduler or the oracle) with the highest profit."""
    rules = [r for r in results if r.name not in PLANNERS]
    return max(rules, key=lambda r: r.money.profit) if rules else None


def baseline_words(best: PolicyResult) -> str:
    """The strongest baseline's name, flagged where it broke DR caps: it is chosen on
    profit, and the settlement charges nothing for a DR step over its cap."""
    c, steps = best.dr_compliance, best.dr_steps
    if c is None or c >= 1.0:
        return best.name
    broke = round((1.0 - c) * steps)
    return (
        f"{best.name} (broke DR caps in {broke} of {steps} DR steps; its profit carries no "
        "penalty for them)"
    )


def dr_breaches(results: list[PolicyResult], best: PolicyResult | None) -> list[str]:
    """A line for each policy but the strongest baseline (flagged with its name) that
    broke DR caps: the settlement charges nothing for a DR step over its cap, so such a
    policy's profit, and its share of the oracle's (which obeys every cap), are higher
    than meeting the caps would have left; the share can pass 100 %."""
    out = []
    for r in results:
        c, steps = r.dr_compliance, r.dr_steps
        if r is best or c is None or c >= 1.0:
            continue
        broke = round((1.0 - c) * steps)
        out.append(
            f"DR caps broken: {r.name} in {broke} of {steps} DR steps (caps announced "
            "mid-step are met from the next step); its profit carries no penalty for them"
        )
    return out


def information(setup: BacktestSetup) -> list[str]:
    """What the policies were allowed to see, said in every report."""
    m = setup.market
    if setup.visibility == "after-interval":
        rt = "a real-time price is known once its interval has ended (after-interval)"
    else:
        rt = (
            "the current interval's settled real-time price is visible (current: a live "
            "feed's upper estimate)"
        )
    if m is None:
        market = "market: not named (no day-ahead timeline)"
    else:
        flag = "" if m.confirmed else " (publication time not confirmed by a source)"
        market = (
            f"market: {m.name}; day-ahead published {m.dam_published_local} {m.timezone} on "
            f"the day before{flag}; real-time settlement {m.rt_settlement_s // 60} min"
        )
    src = setup.hashprice_source or "previous UTC day (source not stated)"
    hp = f"hashprice {src}" if src.startswith("fixed") else f"hashprice of the {src}"
    return [
        f"information: {rt}; {hp}; DR caps from their start",
        market,
        f"currency: {setup.currency} (every money figure)",
    ]


def _dr(r: PolicyResult) -> str:
    c = r.dr_compliance
    return "n/a (no DR step)" if c is None else f"{100 * c:.1f}% of {r.dr_steps}"


def render(setup: BacktestSetup, results: list[PolicyResult], period: str) -> str:
    by = {r.name: r for r in results}
    oracle = by.get("oracle")
    best = strongest_baseline(results)
    cur = setup.currency
    out = [
        f"gridsched backtest: {setup.config.site.name}, {period}",
        f"prices: {setup.price_label} (settlement); forecast: {setup.forecast_label}",
        *information(setup),
        *(f"note: {n}" for n in setup.notes),
        "",
    ]
    names = [r.name for r in results]
    rows: list[list[str]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    m = [r.money for r in results]
    row("mining revenue", [f"{x.mining_revenue:,.0f}" for x in m])
    row(
        "inference revenue",
        [f"{x.inference_revenue:,.0f}" for x in m],
    )
    row("DR payments", [f"{x.dr_payment if round(x.dr_payment) else 0.0:,.0f}" for x in m])
    row("energy cost", [f"-{x.energy_cost:,.0f}" for x in m])
    row("demand charges", [f"-{x.demand_charge:,.0f}" for x in m])
    row("coincident-peak charges", [f"-{x.coincident_peak_charge:,.0f}" for x in m])
    row("start costs", [f"-{x.start_cost:,.0f}" for x in m])
    row(f"profit ({cur})", [f"{x.profit:,.0f}" for x in m])
    if oracle:
        row(
            "% of oracle profit",
            [_pct(r.money.profit, oracle.money.profit, 2) for r in results],
        )
    if best:
        row(
            f"uplift over {best.name} ({cur})",
            [f"{r.money.profit - best.money.profit:+,.0f}" for r in results],
        )
        if oracle and oracle.money.profit > 0:
            row(
                "  (% of oracle profit)",
                [
                    f"{100 * (r.money.profit - best.money.profit) / oracle.money.profit:+.2f}%"
                    for r in results
                ],
            )
    row("grid energy (MWh)", [f"{r.energy_mwh:,.1f}" for r in results])
    row(f"avg price paid ({cur}/MWh)", [f"{r.avg_price_paid:.2f}" for r in results])
    row("SLA breach steps", [str(r.sla_breach_steps) for r in results])
    row("SLA shortfall (Mtok)", [f"{r.sla_short_mtok:,.1f}" for r in results])
    row("DR compliance", [_dr(r) for r in results])
    row("miner starts / stops", [f"{r.miner_starts:,} / {r.miner_stops:,}" for r in results])
    row("plans solved", [str(r.plans) for r in results])
    row("runtime (s)", [f"{r.seconds:.1f}" for r in results])
    out.append(table([f"({cur} unless noted)", *names], rows))
    if best:
        out.append(f"strongest baseline: {baseline_words(best)}")
    out.extend(dr_breaches(results, best))
    if oracle and oracle.money.profit <= 0:
        out.append(
            "share of the oracle: not given (the oracle's profit is not positive, "
            f"{oracle.money.profit:,.0f} {cur})"
        )
    months = sorted({k for r in results for k in r.monthly_profit})
    if len(months) > 1:
        out.append("")
        out.append(f"profit by month ({cur})")
        out.append(
            table(
                ["month", *names],
                [
                    [mo, *(f"{r.monthly_profit.get(mo, 0.0):,.0f}" for r in results)]
                    for mo in months
                ],
            )
        )
    for r in results:
        for note in r.notes:
            out.append(f"note ({r.name}): {note}")
    return "\n".join(out)


def to_dict(
    setup: BacktestSetup, results: list[PolicyResult], period: dict[str, str]
) -> dict[str, Any]:
    by = {r.name: r for r in results}
    oracle = by.get("oracle")
    best = strongest_baseline(results)
    rows = []
    for r in results:
        d = r.to_dict()
        if oracle and oracle.money.profit > 0:
            d["share_of_oracle_profit"] = round(r.money.profit / oracle.money.profit, 6)
        if best:
            d["uplift_over_strongest_baseline"] = round(r.money.profit - best.money.profit, 2)
        rows.append(d)
    m = setup.market
    return {
        "schema": SCHEMA,
        "site": setup.config.site.name,
        "period": period,
        "currency": setup.currency,
        "prices": setup.price_label,
        "forecast": setup.forecast_label,
        "price_visibility": setup.visibility,
        "market": None
        if m is None
        else {
            "name": m.name,
            "timezone": m.timezone,
            "dam_published_local": m.dam_published_local,
            "rt_settlement_s": m.rt_settlement_s,
            "confirmed": m.confirmed,
        },
        "hashprice_source": setup.hashprice_source,
        "strongest_baseline": best.name if best else None,
        "strongest_baseline_dr_compliance": best.dr_compliance if best else None,
        "notes": setup.notes,
        "decision_step_s": int(setup.inp.grid.dur_s[0]),
        "horizon_steps": setup.horizon,
        "policies": rows,
    }


def plot(setup: BacktestSetup, results: list[PolicyResult], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    pin_starts = setup.inp.grid.starts_s[setup.k0 : setup.k1]
    t = pd.to_datetime(pin_starts, unit="s", utc=True).tz_convert(setup.config.site.timezone)
    price = setup.inp.price_usd_per_mwh[setup.k0 : setup.k1]
    fig, (ax_p, ax_c, ax_w) = plt.subplots(
        3, 1, figsize=(13, 9), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1.4]}
    )
    ax_p.plot(t, price, color="tab:red", lw=0.8)
    ax_p.set_ylabel(f"{setup.currency}/MWh")
    if price.max() > 20 * max(float(np.median(price)), 1.0):
        ax_p.set_yscale("symlog", linthresh=100)
    ax_p.set_title(f"{setup.config.site.name}: backtest ({setup.price_label})", fontsize=11)
    for r in results:
        ax_c.plot(t, np.cumsum(r.profit_by_step) / 1000.0, lw=1.2, label=r.name)
        ax_w.plot(t, r.import_kw / 1000.0, lw=0.8, label=r.name)
    ax_c.set_ylabel(
        f"cumulative energy-market profit (k{setup.currency})\n(before monthly peak charges)"
    )
    ax_w.set_ylabel("grid import (MW)")
    cap = setup.inp.cap_kw[setup.k0 : setup.k1] / 1000.0
    ax_w.plot(t, cap, color="tab:red", ls="--", lw=1, label="import cap")
    for ax in (ax_p, ax_c, ax_w):
        ax.grid(alpha=0.3)
    ax_c.legend(fontsize=8)
    ax_w.legend(fontsize=8, ncol=5)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
