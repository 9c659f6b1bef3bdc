"""PNG of a plan: price above; stacked mining and inference power, import, the cap and
DR windows below."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scheduler.planner.plan import Plan


def plot_plan(plan: Plan, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import pandas as pd

    t = pd.to_datetime(plan.starts_s, unit="s", utc=True).tz_convert(plan.timezone)
    t_end = pd.to_datetime(plan.ends_s[-1:], unit="s", utc=True).tz_convert(plan.timezone)
    edges = t.append(t_end)
    fig, (ax_p, ax_w) = plt.subplots(
        2, 1, figsize=(13, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    ax_p.stairs(plan.price_usd_per_mwh, edges, color="tab:red", lw=1.2, label="price")
    ax_p.set_ylabel("USD/MWh")
    title = f"{plan.site}: plan ({plan.price_label})"
    ax_p.set_title(title, fontsize=11)
    if plan.price_usd_per_mwh.max() > 20 * max(np.median(plan.price_usd_per_mwh), 1.0):
        ax_p.set_yscale("symlog", linthresh=100)
    ax_p.axhline(0, color="grey", lw=0.5)
    ax_p.grid(alpha=0.3)

    layers, labels, colors = [], [], []
    palette = {
        "mining": ["#f2a900", "#c98a00", "#9c6b00", "#e7c66b"],
        "inference": ["#4c72b0", "#2b4f8a", "#7fa3d8", "#1c3560"],
    }
    used = {"mining": 0, "inference": 0}
    for c in plan.classes:
        kind = "inference" if c.tokens_s.any() or c.kind == "gpu" else "mining"
        layers.append(c.power_kw / 1000.0)
        labels.append(f"{c.name} ({kind})")
        colors.append(palette[kind][used[kind] % 4])
        used[kind] += 1
    x = np.repeat(edges.to_numpy(), 2)[1:-1]
    stacked = np.cumsum(np.array(layers), axis=0)
    lower = np.zeros(plan.n)
    for i, top in enumerate(stacked):
        ax_w.fill_between(
            x, np.repeat(lower, 2), np.repeat(top, 2), color=colors[i], label=labels[i], lw=0
        )
        lower = top
    ax_w.stairs(plan.import_kw / 1000.0, edges, color="black", lw=1.3, label="grid import")
    ax_w.stairs(plan.cap_kw / 1000.0, edges, color="tab:red", lw=1.2, ls="--", label="import cap")
    dr = np.isfinite(plan.dr_cap_kw)
    first = True
    for i in np.flatnonzero(dr & ~np.concatenate([[False], dr[:-1]])).tolist():
        j = int(i)
        while j + 1 < plan.n and dr[j + 1]:
            j += 1
        ax_w.axvspan(
            edges[i], edges[j + 1], color="tab:red", alpha=0.12, label="DR event" if first else None
        )
        first = False
    ax_w.set_ylabel("MW (IT power stacked; import at the meter)")
    ax_w.grid(alpha=0.3)
    ax_w.legend(loc="lower left", fontsize=8, ncol=3)
    fmt = mdates.DateFormatter("%a %H:%M", tz=t.tz)  # type: ignore[no-untyped-call]
    ax_w.xaxis.set_major_formatter(fmt)
    fig.autofmt_xdate()
    if plan.price_synthetic:
        fig.text(
            0.99,
            0.01,
            "DEMO PRICES (synthetic, not market data)",
            ha="right",
            color="tab:red",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
