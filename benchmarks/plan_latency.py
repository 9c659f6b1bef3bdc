"""Plan latency: cold plan and warm re-plan against the ordinary PuLP build, per size.

Usage: .venv/bin/python benchmarks/plan_latency.py [--sizes 4x4x288,20x5x576,200x5x576]
       [--pulp-max-vars N] [--repeat R] [--no-unseeded]

Each (classes x modes x steps) case runs in its own process so that its peak memory (max
RSS) is its own. A synthetic site at 5-min steps uses every constraint family: mixed ASIC
and GPU classes, committed and spot inference, a DR cap, ramp limits, a demand charge, a
coincident-peak window, start costs and min on/off dwell. "warm" re-plans after a price
change of up to +-20 %. "pulp" builds the same LP the ordinary way (one LpVariable per
column, lpSum per row over dicts) and solves it with HiGHS through PuLP. For the largest
size the multi-resolution horizon (5min:2h,15min:12h,1h) is timed too, with its objective
compared to the full-resolution plan's (both are 48 h of money; prices time-averaged).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from models.market import demo_prices
from models.site import parse_site
from scheduler.planner.build import build_model
from scheduler.planner.inputs import PlanInputs, assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.timegrid import multires_grid, uniform_grid

START = 1691643600  # 2023-08-10T05:00:00Z
#: Multi-resolution horizons timed for the largest size (``;``-separated on the command line).
MULTIRES = "5min:2h,15min:12h,1h;5min:1h,15min:6h,1h"


def synthetic_site(n_classes: int, n_modes: int) -> dict[str, Any]:
    rng = np.random.default_rng(n_classes * 100 + n_modes)
    devices = []
    total_kw = 0.0
    for c in range(n_classes):
        gpu = c % 5 == 4
        units = int(rng.integers(50, 200))
        modes = []
        for m in range(n_modes):
            frac = 0.6 + 0.4 * m / max(n_modes - 1, 1) + 0.05 * rng.random()
            if gpu:
                modes.append(
                    {
                        "name": f"cap{m}",
                        "power_kw": round(0.85 * frac, 4),
                        "throughput_tokens_s": round(480 * frac**0.5, 2),
                    }
                )
            else:
                modes.append(
                    {
                        "name": f"p{m}",
                        "power_kw": round(3.3 * frac, 4),
                        "hashrate_ths": round(150 * frac**0.7 * (0.8 + 0.4 * rng.random()), 2),
                    }
                )
        total_kw += units * max(m["power_kw"] for m in modes)
        devices.append(
            {
                "name": f"c{c}",
                "kind": "gpu" if gpu else "asic",
                "count": units,
                "modes": modes,
                "idle_power_kw": 0.05,
                "start_cost_usd": 0.05,
                "min_on_s": 900,
                "min_off_s": 600,
                "initial_on": units // 2,
            }
        )
    gpu_tok = sum(
        d["count"] * d["modes"][-1]["throughput_tokens_s"] for d in devices if d["kind"] == "gpu"
    )
    return {
        "site": {
            "name": f"bench {n_classes}x{n_modes}",
            "timezone": "America/Chicago",
            "interconnect_kw": round(0.85 * total_kw),
            "pue": 1.08,
            "base_load_kw": 200,
            "ramp_up_kw_per_min": round(0.02 * total_kw),
            "current_load_kw": round(0.5 * total_kw),
        },
        "mining": {"hashprice_usd_per_ths_day": 0.05},
        "tariff": {
            "demand_charge_usd_per_kw_month": 4.0,
            "billing_peak_so_far_kw": round(0.7 * total_kw),
            "coincident_peaks": [
                {
                    "name": "4CP",
                    "start": "15:00:00",
                    "end": "18:00:00",
                    "months": [8],
                    "usd_per_kw": 12.0,
                }
            ],
        },
        "inference": {
            "committed_tokens_s": round(0.5 * gpu_tok),
            "committed_usd_per_mtok": 0.6,
            "spot_tokens_s": round(0.3 * gpu_tok),
            "spot_usd_per_mtok": 0.35,
        },
        "events": [
            {
                "id": "dr",
                "type": "curtail",
                "start": "2023-08-10T22:00:00Z",
                "duration": "2h",
                "limit_kw": round(0.4 * total_kw),
            }
        ],
        "devices": devices,
    }


def inputs_for(n_classes: int, n_modes: int, n_steps: int, resolution: str | None) -> PlanInputs:
    cfg = parse_site(synthetic_site(n_classes, n_modes), "bench")
    horizon = n_steps * 300
    grid = (
        multires_grid(START, horizon, resolution)
        if resolution
        else uniform_grid(START, horizon, 300)
    )
    return assemble_inputs(cfg, grid, demo_prices(START, START + horizon, "America/Chicago"))


def run_ours(
    n_classes: int,
    n_modes: int,
    n_steps: int,
    resolution: str | None,
    repeat: int,
    seedless: bool = True,
) -> dict[str, Any]:
    inp = inputs_for(n_classes, n_modes, n_steps, resolution)
    cold: list[float] = []
    plain: list[float] = []
    warm: list[float] = []
    warm_all: list[float] = []
    objective = 0.0
    rng = np.random.default_rng(1)
    base_price = inp.price_usd_per_mwh.copy()
    size = ""
    for _ in range(repeat):
        inp.price_usd_per_mwh = base_price.copy()
        if seedless:  # the same cold plan from HiGHS's slack basis, for comparison
            unseeded = Planner()
            unseeded.seed_min_vars = None
            t0 = time.perf_counter()
            assert unseeded.plan(inp).ok
            plain.append(time.perf_counter() - t0)
            del unseeded
        planner = Planner()
        t0 = time.perf_counter()
        plan = planner.plan(inp)
        cold.append(time.perf_counter() - t0)
        assert plan.ok, plan.notes
        objective = plan.objective
        size = plan.model_size
        # the typical 5-min re-plan: a new real-time price for the next hour
        inp.price_usd_per_mwh = base_price.copy()
        near = inp.grid.starts_s < inp.grid.starts_s[0] + 3600
        inp.price_usd_per_mwh[near] *= 1.0 + rng.uniform(0.5, 3.0)
        t0 = time.perf_counter()
        again = planner.plan(inp)
        warm.append(time.perf_counter() - t0)
        assert again.ok and again.warm
        # a whole new forecast: every price moves by up to +-20 %
        inp.price_usd_per_mwh = base_price * (1 + 0.2 * rng.uniform(-1, 1, inp.T))
        t0 = time.perf_counter()
        again = planner.plan(inp)
        warm_all.append(time.perf_counter() - t0)
        assert again.ok and again.warm
    return {
        "cold_s": float(np.median(cold)),
        "cold_unseeded_s": float(np.median(plain)) if plain else None,
        "warm_s": float(np.median(warm)),
        "warm_all_s": float(np.median(warm_all)),
        "objective": objective,
        "model": size,
        "steps": inp.T,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_pulp(n_classes: int, n_modes: int, n_steps: int) -> dict[str, Any]:
    import pulp

    inp = inputs_for(n_classes, n_modes, n_steps, None)
    model = build_model(inp)
    assert model.A is not None
    t0 = time.perf_counter()
    prob = pulp.LpProblem("bench", pulp.LpMinimize)
    xs = {
        j: pulp.LpVariable(
            f"x{j}", None if np.isinf(lo) else float(lo), None if np.isinf(hi) else float(hi)
        )
        for j, (lo, hi) in enumerate(zip(model.col_lo, model.col_hi, strict=True))
    }
    prob += pulp.lpSum(float(c) * xs[j] for j, c in enumerate(model.c) if c != 0) + model.offset
    A = model.A.tocsr()
    for i in range(model.n_rows):
        cols = A.indices[A.indptr[i] : A.indptr[i + 1]]
        vals = A.data[A.indptr[i] : A.indptr[i + 1]]
        expr = pulp.lpSum(float(v) * xs[int(j)] for j, v in zip(cols, vals, strict=True))
        lo, hi = model.row_lo[i], model.row_hi[i]
        if lo == hi:
            prob += expr == float(lo)
        else:
            if np.isfinite(lo):
                prob += expr >= float(lo)
            if np.isfinite(hi):
                prob += expr <= float(hi)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    prob.solve(pulp.HiGHS(msg=False))
    solve_s = time.perf_counter() - t1
    return {
        "build_s": build_s,
        "total_s": build_s + solve_s,
        "objective": float(pulp.value(prob.objective)),
        "status": pulp.LpStatus[prob.status],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args: argparse.Namespace) -> None:
    c, m, t = (int(v) for v in args.case.split("x"))
    if args.kind == "pulp":
        out = run_pulp(c, m, t)
    else:
        out = run_ours(c, m, t, args.resolution, args.repeat, args.unseeded)
    print(json.dumps(out))


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def spawn(
    case: str, kind: str, repeat: int, resolution: str | None = None, unseeded: bool = True
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--case",
        case,
        "--kind",
        kind,
        "--repeat",
        str(repeat),
    ]
    if resolution:
        cmd += ["--resolution", resolution]
    if not unseeded:
        cmd.append("--no-unseeded")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{case} {kind} failed:\n{res.stderr}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4x4x288,20x5x576,200x5x576")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--pulp-max-vars",
        type=int,
        default=10**7,
        help="skip the PuLP baseline above this many LP columns",
    )
    ap.add_argument(
        "--unseeded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each cold plan without the coarse-plan seed",
    )
    ap.add_argument("--multires", default=MULTIRES, help="';'-separated multi-resolution specs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--resolution", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    header = (
        f"{'classes x modes x steps':>24} {'horizon':>9} {'model':>44} {'cold s':>7} "
        f"{'unseeded':>8} "
        f"{'warm1h s':>8} {'warm all':>8} {'RSS MB':>7} {'PuLP build s':>12} "
        f"{'PuLP+HiGHS s':>12} {'speedup':>8} {'obj diff':>9}"
    )
    print(header)
    print("-" * len(header))
    largest = args.sizes.split(",")[-1]
    print(
        f"python {sys.version.split()[0]}, {__import__('os').cpu_count()} CPUs; "
        f"repeat {args.repeat} (median); 'cold s' starts HiGHS from a 30-minute plan's "
        "basis where the model is large enough (scheduler.planner.seed), 'unseeded' from its slack "
        "basis",
        flush=True,
    )
    for case in args.sizes.split(","):
        ours = spawn(case, "ours", args.repeat, unseeded=args.unseeded)
        n_vars = int(ours["model"].split()[0])
        pulp_cols = ["-", "-", "-", "-"]
        if n_vars <= args.pulp_max_vars:
            pl = spawn(case, "pulp", 1)
            diff = abs(pl["objective"] - ours["objective"]) / max(1.0, abs(ours["objective"]))
            pulp_cols = [
                f"{pl['build_s']:.2f}",
                f"{pl['total_s']:.2f}",
                f"{pl['total_s'] / ours['cold_s']:.0f}x",
                f"{diff:.1e}",
            ]
        print(
            f"{case:>24} {'full':>9} {ours['model']:>44} {ours['cold_s']:7.3f} "
            f"{_opt(ours['cold_unseeded_s']):>8} "
            f"{ours['warm_s']:8.3f} {ours['warm_all_s']:8.3f} {ours['peak_rss_mb']:7.0f} "
            f"{pulp_cols[0]:>12} "
            f"{pulp_cols[1]:>12} {pulp_cols[2]:>8} {pulp_cols[3]:>9}",
            flush=True,
        )
        if case == largest:
            for spec in args.multires.split(";"):
                mr = spawn(case, "ours", args.repeat, spec, args.unseeded)
                gap = (mr["objective"] - ours["objective"]) / max(1.0, abs(ours["objective"]))
                print(
                    f"{case:>24} {'multires':>9} {mr['model']:>44} {mr['cold_s']:7.3f} "
                    f"{_opt(mr['cold_unseeded_s']):>8} "
                    f"{mr['warm_s']:8.3f} {mr['warm_all_s']:8.3f} {mr['peak_rss_mb']:7.0f} "
                    f"{'':>12} {'':>12} {'':>8} {gap:9.1e}",
                    flush=True,
                )
                print(
                    f"  multires = {spec} ({mr['steps']} steps); its 'obj diff' is the "
                    "relative gap of its objective to the full-resolution plan's.",
                    flush=True,
                )


if __name__ == "__main__":
    main()
