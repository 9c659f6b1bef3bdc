"""Readable terminal output and CSV for a plan."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from scheduler.planner.plan import Plan


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A plain fixed-width table; ``align`` has one 'l' or 'r' per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])


def _local(ts: float, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    return datetime.fromtimestamp(float(ts), tz).strftime(fmt)


def _hourly(plan: Plan, values: np.ndarray, how: str = "mean") -> np.ndarray:
    """Aggregate step values into local clock hours (time-weighted)."""
    hours = (plan.starts_s // 3600).astype(np.int64)
    keys, idx = np.unique(hours, return_inverse=True)
    w = (plan.ends_s - plan.starts_s).astype(np.float64)
    if how == "min":
        out = np.full(len(keys), np.inf)
        np.minimum.at(out, idx, values)
        return out
    num = np.zeros(len(keys))
    np.add.at(num, idx, values * w)
    den = np.zeros(len(keys))
    np.add.at(den, idx, w)
    return num / den


def render(plan: Plan, hourly: bool = True) -> str:
    tz = ZoneInfo(plan.timezone)
    out: list[str] = []
    span = f"{_local(plan.starts_s[0], tz)} to {_local(plan.ends_s[-1], tz)} ({plan.n} steps)"
    out.append(f"gridsched plan: {plan.site}, {span}")
    p = plan.price_usd_per_mwh
    out.append(
        f"prices: {plan.price_label}  (min {p.min():.2f}, mean {p.mean():.2f}, max "
        f"{p.max():.2f} USD/MWh); hashprice {plan.hashprice.mean():.4f} USD/TH/s/day "
        "(net)"
    )
    out.append(
        f"solver: {plan.solver} {plan.status} in {plan.solve_s:.3f} s "
        f"(build {plan.build_s:.3f} s{', warm' if plan.warm else ''}); {plan.model_size}"
    )
    if not plan.ok:
        out.append("\nNO PLAN: " + "; ".join(plan.notes))
        return "\n".join(out)
    m = plan.money
    rows = [
        ["mining revenue", f"{m.mining_revenue:,.0f}"],
        ["inference revenue, committed", f"{m.inference_committed_revenue:,.0f}"],
        ["inference revenue, spot", f"{m.inference_spot_revenue:,.0f}"],
        ["inference revenue, batch", f"{m.inference_batch_revenue:,.0f}"],
        ["DR payments", f"{m.dr_payment:,.0f}"],
        ["energy cost", f"-{m.energy_cost:,.0f}"],
        ["on-site generation cost", f"-{m.onsite_cost:,.0f}"],
        ["demand charge (above peak so far)", f"-{m.demand_charge:,.0f}"],
        ["coincident-peak charge", f"-{m.coincident_peak_charge:,.0f}"],
        ["start costs", f"-{m.start_cost:,.0f}"],
        ["profit", f"{m.profit:,.0f}"],
    ]
    energy_mwh = float((plan.import_kw * (plan.ends_s - plan.starts_s)).sum() / 3.6e6)
    out.append("")
    out.append(table(["money over the horizon", "USD"], rows))
    out.append(
        f"grid energy {energy_mwh:,.1f} MWh, average price paid "
        f"{m.energy_cost / energy_mwh if energy_mwh else 0:.2f} USD/MWh"
    )

    out.append("")
    mining = plan.mining_kw()
    infer = sum((c.power_kw for c in plan.classes if c.tokens_s.any()), np.zeros(plan.n))
    cols = [
        "local time",
        "price",
        "import MW",
        "cap MW",
        "+1 MW worth",
        "mining MW",
        "inference MW",
    ]
    series = [
        plan.price_usd_per_mwh,
        plan.import_kw / 1000,
        plan.cap_kw / 1000,
        plan.import_value_usd_per_mwh,
        mining / 1000,
        infer / 1000,
    ]
    awake = [c.units_by_mode.sum(axis=0).astype(float) for c in plan.classes]
    cols += [f"{c.name} awake" for c in plan.classes]
    if hourly:
        starts = np.unique((plan.starts_s // 3600) * 3600)
        agg = [_hourly(plan, s) for s in series]
        agg[2] = _hourly(plan, series[2], "min")
        agg += [_hourly(plan, a) for a in awake]
        title = "schedule by hour (means; cap is the hour's lowest; price USD/MWh)"
    else:
        starts = plan.starts_s
        agg = series + awake
        title = "schedule by step"
    rows = []
    for i, t in enumerate(starts):
        row = [_local(t, tz, "%a %H:%M")]
        row += [
            f"{agg[0][i]:.2f}",
            f"{agg[1][i]:.2f}",
            f"{agg[2][i]:.2f}",
            f"{agg[3][i]:.0f}",
            f"{agg[4][i]:.2f}",
            f"{agg[5][i]:.2f}",
        ]
        row += [f"{a[i]:.0f}" for a in agg[6:]]
        rows.append(row)
    out.append(title)
    out.append(table(cols, rows))
    for c in plan.classes:  # which GPU mode, cap (infer@<W>) or clock (infer@<MHz>), was chosen
        if c.kind == "gpu" and c.units_by_mode.any():
            used = [
                f"{m} ({int(c.units_by_mode[i, 0])} at first step)"
                for i, m in enumerate(c.modes)
                if c.units_by_mode[i].any()
            ]
            out.append(f"{c.name} modes chosen: {', '.join(used)}")

    out.append("")
    if plan.violations:
        out.append(f"soft limits broken ({len(plan.violations)}):")
        out += [f"  [{v.constraint}] {v.message}" for v in plan.violations]
    else:
        out.append("soft limits broken: none (cap, DR, SLA, ramp and deadlines all met)")
    if plan.events:
        out.append(
            "grid events in the horizon: "
            + ", ".join(f"{e['id']} ({e['type']})" for e in plan.events)
        )
    for note in plan.notes:
        out.append(f"note: {note}")
    return "\n".join(out)


def write_csv(plan: Plan, path: str | Path) -> None:
    """One row per step; per class-mode unit counts in ``units:<class>:<mode>`` columns."""
    tz = ZoneInfo(plan.timezone)
    header = [
        "start_utc",
        "start_local",
        "duration_s",
        "price_usd_per_mwh",
        "hashprice_usd_per_ths_day",
        "import_kw",
        "onsite_used_kw",
        "load_kw",
        "cap_kw",
        "dr_cap_kw",
        "import_value_usd_per_mwh",
        "committed_tokens_s",
        "served_committed_tokens_s",
    ]
    for c in plan.classes:
        header += [f"units:{c.name}:{m}" for m in c.modes]
        header += [f"units:{c.name}:asleep", f"power_kw:{c.name}"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for t in range(plan.n):
            row: list[object] = [
                datetime.fromtimestamp(int(plan.starts_s[t]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                datetime.fromtimestamp(int(plan.starts_s[t]), tz).isoformat(),
                int(plan.ends_s[t] - plan.starts_s[t]),
                round(float(plan.price_usd_per_mwh[t]), 2),
                round(float(plan.hashprice[t]), 5),
                round(float(plan.import_kw[t]), 2),
                round(float(plan.onsite_used_kw[t]), 2),
                round(float(plan.load_kw[t]), 2),
                round(float(plan.cap_kw[t]), 2),
                "" if not np.isfinite(plan.dr_cap_kw[t]) else round(float(plan.dr_cap_kw[t]), 2),
                round(float(plan.import_value_usd_per_mwh[t]), 2),
                round(float(plan.committed_tok_s[t]), 1),
                round(float(plan.served_committed_tok_s[t]), 1),
            ]
            for c in plan.classes:
                row += [int(v) for v in c.units_by_mode[:, t]]
                row += [int(c.asleep[t]), round(float(c.power_kw[t]), 2)]
            w.writerow(row)
