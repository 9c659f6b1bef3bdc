"""``gridsched plan``, ``validate`` and ``solvers``: dry-run planning and validation.

Touches no hardware. Errors in input print one clear message (what, where, what is valid)
and exit with status 2; a solver that fails exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.durations import parse_duration_s
from models.economics import breakeven_usd_per_mwh
from models.errors import ConfigError
from models.site import SiteConfig, load_site
from scheduler.cli.options import (
    UsageError,
    add_event_args,
    add_price_file_args,
    check_outputs,
    check_year,
    read_events,
    read_prices,
)
from scheduler.cli.plan_reach import bound_offline
from scheduler.cli.report import render, table, write_csv
from scheduler.planner.inputs import SiteState, assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.solvers import available_solvers, solver_names
from scheduler.planner.timegrid import TimeGrid, first_step_s, multires_grid, uniform_grid


def _parse_start(text: str | None, step_s: int) -> int:
    if text is None:
        now = int(time.time())
        return now - now % step_s
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--start {text!r} is not ISO 8601 (e.g. 2023-08-10T05:00:00Z)") from None
    if "T" not in text.upper() and " " not in text.strip():  # a date alone, Z or not
        raise UsageError(f"--start {text!r} has no time of day; write e.g. {text[:10]}T05:00:00Z")
    if dt.tzinfo is None:
        raise UsageError(f"--start {text!r} has no UTC offset; add Z or +HH:MM")
    check_year("--start", text, dt.year)
    ts = int(dt.astimezone(UTC).timestamp())
    if ts % step_s:
        raise UsageError(f"--start {text!r} is not aligned to the {step_s // 60}-minute step")
    return ts


def _solver_options(text: str | None) -> dict[str, Any] | None:
    """``--solver-options``: a JSON object, refused by name otherwise (a list was a traceback)."""
    if not text:
        return None
    example = "e.g. '{\"time_limit\": 10}'"
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--solver-options {text!r} is not a JSON object ({exc}); {example}"
        ) from None
    if not isinstance(options, dict):
        raise UsageError(f"--solver-options {text!r} is not a JSON object; {example}")
    return options


#: Steps one plan may have: the LP grows with steps x classes x modes, and 525,600 one-minute
#: steps (a year) ran out of memory. 20,000 is 69 days at 5 min, 2.3 years at 1 h.
MAX_STEPS = 20_000
#: USD per TH/s per day has stayed within 0.03-0.45 since 2020; above this it is almost
#: surely a per-PH/s figure (1,000 times larger).
MAX_HASHPRICE = 5.0


def _grid(args: argparse.Namespace) -> TimeGrid:
    step = parse_duration_s(args.step)
    horizon = parse_duration_s(args.horizon)
    if not args.resolution and horizon // step > MAX_STEPS:
        raise UsageError(
            f"--horizon {args.horizon} at --step {args.step} is {horizon // step:,} steps; "
            f"a plan takes at most {MAX_STEPS:,}: shorten --horizon, lengthen --step, or use "
            "--resolution (e.g. '5min:2h,1h')"
        )
    start = _parse_start(args.start, first_step_s(args.resolution) if args.resolution else step)
    grid = (
        multires_grid(start, horizon, args.resolution)
        if args.resolution
        else uniform_grid(start, horizon, step)
    )
    if len(grid.starts_s) > MAX_STEPS:
        raise UsageError(
            f"--resolution {args.resolution} over --horizon {args.horizon} is "
            f"{len(grid.starts_s):,} steps; a plan takes at most {MAX_STEPS:,}"
        )
    return grid


def _check_numbers(args: argparse.Namespace) -> None:
    """Numbers that parse but cannot be meant, refused with their unit."""
    hp = args.hashprice
    if hp is not None and not 0 <= hp <= MAX_HASHPRICE:
        if hp < 0:
            raise UsageError(f"--hashprice {hp:g}: USD per TH/s per day must be >= 0")
        raise UsageError(
            f"--hashprice {hp:g} USD per TH/s per day is implausible (it has been 0.03-0.45 "
            f"since 2020; at most {MAX_HASHPRICE:g} is taken): a per PH/s figure divides by "
            f"1000, e.g. {hp / 1000:g}"
        )
    if args.current_load_kw is not None and not args.current_load_kw >= 0:
        raise UsageError(
            f"--current-load-kw {args.current_load_kw:g}: the import measured now must be >= 0 kW"
        )


def cmd_plan(args: argparse.Namespace) -> int:
    _check_numbers(args)
    check_outputs(args, ("--plot", "--csv", "--json-out"))
    config = load_site(args.config)
    grid = _grid(args)
    start_s, end_s = int(grid.starts_s[0]), int(grid.ends_s[-1])
    prices = read_prices(
        config, args, start_s, end_s, args.prices, args.price_format, args.price_column
    )
    events = read_events(args, config)
    state = SiteState(current_load_kw=args.current_load_kw)
    if args.hashprice is not None:
        config = config.model_copy(
            update={
                "mining": config.mining.model_copy(
                    update={"hashprice_usd_per_ths_day": args.hashprice}
                )
            }
        )
    inputs = assemble_inputs(config, grid, prices, events, state)
    bound_offline(config, inputs)  # the modes each simulated firmware reaches, or a note
    options = _solver_options(args.solver_options)
    planner = Planner(args.solver, options, integer=args.milp)
    plan = planner.plan(inputs, config.site.name, config.site.timezone)
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(plan, hourly=not args.steps))
        print(f"grid: {grid.describe()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(plan.to_dict(), indent=1))
    if args.csv:
        write_csv(plan, args.csv)
    if args.plot:
        from scheduler.cli.plot import plot_plan

        plot_plan(plan, args.plot)
    for what, dest in (("JSON", args.json_out), ("CSV", args.csv), ("plot", args.plot)):
        if dest:
            print(f"wrote {what}: {dest}", file=sys.stderr)
    return 0 if plan.ok else 3


def _price_file_summary(config: SiteConfig) -> str | None:
    """The [prices] file read as plan and run will read it (raises what is wrong with it):
    a missing file or a timestamp it cannot place is found here, not at the first plan."""
    from models.market import iso, load_price_file

    src = config.prices
    if src.format.value == "demo" or src.path is None or src.column is None:
        return None
    fmt, tz = src.format.value, src.timezone
    s = load_price_file(config.resolve(src.path), fmt, src.column, src.timestamp_column, tz)
    missing = int(np.isnan(s.values).sum())
    return (
        f"prices: {s.label} in {src.currency}/{src.per}, {len(s.values):,} intervals of "
        f"{s.interval_s / 60:g} min, {iso(s.start_s)} to {iso(s.end_s)}"
        + (f", {missing:,} missing (refused in any window that touches them)" if missing else "")
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from adapters import registry
    from adapters.gpu_remote import agent_settings_problems
    from scheduler.service.demand_feed import gpu_engine_problems

    path = args.config or args.config_flag
    config = load_site(path)
    # what the daemon reads on this host besides the file: the GPU agents' secret and CA
    problems = [
        problem
        for k, dc in enumerate(config.devices)
        if dc.adapter is not None
        for problem in agent_settings_problems(dc.adapter, config.base_dir, f"devices[{k}].adapter")
    ]
    # what run builds from the file (miner passwords read, GPU ids for gpu_engines), built
    # here without touching a device
    try:
        built = registry.build(config)
    except ConfigError as exc:  # the agents' settings are all said above, keyed by index
        problems += [p for p in exc.problems if ".adapter.agent_" not in p[0]]
    else:
        if config.inference.demand is not None:
            problems += gpu_engine_problems(config.inference.demand, built.adapters)
    if problems:
        raise ConfigError(str(path), problems)
    site = config.site
    prices = _price_file_summary(config)
    kw = site.interconnect_kw
    kw_text = f"{kw:,.0f}" if kw >= 10 else f"{kw:.3g}"  # 0.1 kW was "0 kW" (session 25)
    print(
        f"{path}: valid. Site {site.name!r}, {site.timezone}, interconnect "
        f"{kw_text} kW, PUE {site.pue}"
    )
    if prices:
        print(prices)
    hp = config.mining.net_hashprice
    rows = []
    for dc in config.devices:
        for m in dc.modes:
            eff = m.efficiency_j_per_th
            be = f"{breakeven_usd_per_mwh(hp, eff, site.pue):.1f}" if eff else "-"
            rows.append(
                [
                    dc.name,
                    str(dc.kind),
                    f"{dc.units}",
                    m.name,
                    f"{m.power_kw:.3f}",
                    f"{m.hashrate_ths:g}",
                    f"{m.throughput_tokens_s:g}",
                    f"{eff:.1f}" if eff else "-",
                    be,
                ]
            )
    print(
        table(
            [
                "class",
                "kind",
                "units",
                "mode",
                "kW/unit",
                "TH/s",
                "tokens/s",
                "J/TH",
                "breakeven USD/MWh",
            ],
            rows,
            "llrlrrrrr",
        )
    )
    print(f"breakeven at hashprice {hp:.4f} USD/TH/s/day (net of pool fee), PUE included")
    most_kw = sum(
        dc.units * max((m.power_kw for m in dc.modes), default=0) for dc in config.devices
    )
    if most_kw > MW_SLIP_RATIO * site.interconnect_kw:
        # a plan runs anyway, import over the limit every step; the likely cause is a unit
        print(
            f"warning: the devices draw up to {most_kw:,.0f} kW before PUE, "
            f"{most_kw / site.interconnect_kw:,.0f} times the interconnect of "
            f"{site.interconnect_kw:g} kW: is interconnect_kw in MW ({site.interconnect_kw:g} "
            f"MW = {site.interconnect_kw * 1000:,.0f} kW)?"
        )
    missing = [k for k in ("1", "2", "3") if k not in config.tariff.dr_levels_kw]
    if config.openadr.ven_name and missing:
        # a VTN's SIMPLE event at such a level is valid by the spec; the webhook refuses it,
        # a polled one cannot be refused: it is planned and enforced at the fail-safe cap
        print(
            f"warning: [openadr] is set and [tariff.dr_levels_kw] has no cap for SIMPLE "
            f"level{'s' * (len(missing) > 1)} {', '.join(missing)}: a VTN's event at "
            "such a level (valid OpenADR) would be planned and enforced at the fail-safe "
            'cap (failsafe_cap_kw) while in force; give each a cap in kW ("3" = 3000)'
        )
    if site.base_load_kw > site.interconnect_kw:
        # every device asleep and still over the limit: no plan can meet it (on-site
        # generation aside); a unit slip in either key is the likely cause
        print(
            f"warning: base_load_kw {site.base_load_kw:,.0f} kW is above interconnect_kw "
            f"{site.interconnect_kw:,.0f} kW: with every device asleep the site imports above "
            "its limit (unless on-site generation covers it); check both keys' units"
        )
    return 0


#: devices' combined most draw over the interconnect beyond which validate asks about units
#: (sites oversubscribe a little, never 20-fold)
MW_SLIP_RATIO = 20


def add_parsers(sub: Any) -> None:
    """``plan`` and ``validate``."""
    pl = sub.add_parser("plan", help="plan a site over a horizon (dry run, no hardware)")
    add_price_file_args(pl, "price CSV (default: the config's [prices])")
    pl.add_argument("--price-currency", help="currency of --prices (default USD)")
    pl.add_argument(
        "--usd-per-unit", type=float, help="USD per 1 unit of --price-currency (a fixed rate)"
    )
    pl.add_argument(
        "--price-per", choices=["MWh", "kWh"], help="energy unit of --prices (default MWh)"
    )
    add_event_args(
        pl,
        "JSON list of grid events (simple signal format), or "
        "a CSV power trace of a real DR event (with --events-at)",
    )
    pl.add_argument("--start", help="ISO 8601 start, e.g. 2023-08-10T05:00:00Z (default: now)")
    pl.add_argument("--horizon", default="48h", help="how far ahead to plan (default: %(default)s)")
    pl.add_argument(
        "--step", default="5min", help="length of each plan step (default: %(default)s)"
    )
    pl.add_argument("--resolution", help="multi-resolution steps, e.g. '5min:2h,15min:12h,1h'")
    pl.add_argument("--hashprice", type=float, help="override USD per TH/s per day")
    pl.add_argument("--current-load-kw", type=float, help="measured import now, kW")
    pl.add_argument(
        "--solver",
        default="highs",
        choices=solver_names(),
        help="highs (default) or any solver PuLP drives",
    )
    pl.add_argument("--solver-options", help="JSON object passed to the solver")
    pl.add_argument("--milp", action="store_true", help="whole units in the model (small fleets)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON only")
    pl.add_argument("--json-out", help="also write the JSON plan to this file")
    pl.add_argument("--csv", help="write one row per step to this CSV file")
    pl.add_argument("--plot", help="write a PNG chart to this file")
    pl.add_argument("--steps", action="store_true", help="table by step instead of by hour")
    pl.set_defaults(func=cmd_plan)

    va = sub.add_parser("validate", help="check a site TOML file and show its modes")
    # --config too: plan, run and fleet status take the site file so, and operators type it
    which = va.add_mutually_exclusive_group(required=True)
    which.add_argument("config", nargs="?", help="site TOML file")
    which.add_argument("--config", dest="config_flag", metavar="CONFIG", help="the same")
    va.set_defaults(func=cmd_validate)


def add_solvers_parser(sub: Any) -> None:
    """``solvers`` (registered last, so ``gridsched --help`` lists it last)."""
    so = sub.add_parser("solvers", help="list solvers and which are installed")
    so.set_defaults(
        func=lambda a: (
            print(
                "installed: "
                + ", ".join(available_solvers())
                + "\nknown: "
                + ", ".join(solver_names())
            )
            or 0
        )
    )
