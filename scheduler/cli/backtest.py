"""``gridsched backtest``: replay a period on real prices against baseline policies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.durations import format_duration, parse_duration_s
from models.errors import GridschedError
from models.markets import MarketInfo
from models.site import SiteConfig, load_site
from scheduler.cli.options import (
    PRICE_FORMATS,
    UsageError,
    add_event_args,
    add_price_file_args,
    check_outputs,
    check_year,
    read_events,
    read_prices,
)

if TYPE_CHECKING:
    from scheduler.backtest.engine import BacktestSetup


def _day_start(text: str, tz: str, flag: str) -> int:
    """A date (local midnight in the site's zone) or an ISO time with offset."""
    import pandas as pd

    year = text.strip()[:4]
    if year.isdigit():  # before pandas reads it (the year 1 came out as an LMT offset)
        check_year(flag, text, int(year))
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz)
    return int(ts.tz_convert("UTC").timestamp())


def _backtest_market(args: argparse.Namespace, config: SiteConfig) -> MarketInfo | None:
    """The market named by --market, else the one the price format implies (ERCOT files)."""
    from models.markets import market_for_format, market_info

    fmt = args.price_format if args.prices else config.prices.format.value
    implied = market_for_format(fmt)
    if args.market:
        try:
            named = market_info(args.market)
        except GridschedError as exc:
            raise UsageError(str(exc)) from None
        if implied is not None and named.name != implied.name:
            # an ERCOT file replayed on another market's publication times and intervals
            raise UsageError(
                f"--market {args.market}: the price file is {fmt}, {implied.name}'s own "
                f"format; leave --market out, or give that market's prices with "
                "--price-format csv"
            )
        return named
    return implied


def _on_the_grid(args: argparse.Namespace, step: int, horizon: int, start: int, end: int) -> None:
    """Times on the decision grid, said by the option that is off it (before: "horizon
    5753min is not a whole number of 15min steps", a horizon nobody asked for)."""
    each = format_duration(step)
    if step <= 0 or 86400 % step:
        raise UsageError(
            f"--decision-step {args.decision_step}: must divide a day (5min, 15min, 1h...)"
        )
    if horizon <= 0 or horizon % step:
        raise UsageError(f"--horizon {args.horizon}: must be a whole number of {each} steps")
    for flag, text, t in (("--from", args.from_, start), ("--to", args.to, end)):
        if t % step:
            raise UsageError(f"{flag} {text}: must fall on the {each} decision grid (UTC)")


def cmd_backtest(args: argparse.Namespace) -> int:
    from models.market import load_btc_hashprice
    from scheduler.backtest import policies
    from scheduler.backtest.engine import evaluate, prepare
    from scheduler.cli import backtest_report

    check_outputs(args, ("--plot", "--json-out"))
    config = load_site(args.config)
    if args.caps_only:  # the site's clock-locked GPU modes removed (docs/backtest.md)
        config = _caps_only(config)
    step = parse_duration_s(args.decision_step)
    horizon = parse_duration_s(args.horizon)
    if args.plan_resolution:  # a bad spec is refused before the prices are read
        from scheduler.backtest.horizon import PlanResolution

        PlanResolution(args.plan_resolution, step)
    start = _day_start(args.from_, config.site.timezone, "--from")
    end = _day_start(args.to, config.site.timezone, "--to")
    if end <= start:  # before the prices are read: a file's loader failed on it in numpy
        raise UsageError(f"--to {args.to} must be after --from {args.from_}")
    _on_the_grid(args, step, horizon, start, end)
    if args.blend_tau_h is not None and not args.blend_tau_h >= 0:
        raise UsageError(
            f"--blend-tau-h {args.blend_tau_h}: the blend's time constant in hours must be "
            "0 (the day-ahead curve alone) or more (default 2)"
        )
    for flag, n in (("--curtail-after", args.curtail_after), ("--resume-after", args.resume_after)):
        if n < 1:
            raise UsageError(
                f"{flag} {n}: the threshold rule's intervals in a row before it acts must be "
                "1 or more (1: at once)"
            )
    wanted = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in policies.POLICIES]
    if unknown:
        raise UsageError(f"--policy {','.join(unknown)}: valid are {', '.join(policies.POLICIES)}")
    market = _backtest_market(args, config)
    if market is not None and market.currency != "USD" and args.prices and not args.price_currency:
        # the analyst's walk (session 25): SDAC's EUR prices were read as USD, unsaid
        raise UsageError(
            f"--market {market.name} prices are in {market.currency}: say the file's currency "
            f"(--price-currency {market.currency} --usd-per-unit RATE, or --price-currency USD "
            "for a file already converted)"
        )
    realised = read_prices(
        config, args, start, end, args.prices, args.price_format, args.price_column
    )
    forecast = None
    if args.forecast:
        if market is None:
            raise UsageError(
                "--forecast needs --market: when day-ahead prices are published depends on "
                "the market (ERCOT, PJM, MISO, SPP, CAISO, NYISO, SDAC/EPEX/Nord Pool)"
            )
        forecast = read_prices(
            config,
            args,
            start,
            end,
            args.forecast,
            args.forecast_format,
            args.forecast_column or args.price_column,
            forecast=True,
        )
    hashprice = load_btc_hashprice(args.btc, 0.0) if args.btc else None  # fee applied once
    events = read_events(args, config)

    def _setup(cfg: SiteConfig) -> BacktestSetup:
        return prepare(
            cfg,
            realised,
            start,
            end,
            step,
            horizon,
            forecast,
            hashprice,
            events,
            market=market,
            visibility=args.price_visibility,
            fill=args.fill,
            foreign_tariff=args.foreign_tariff,
        )

    setup = _setup(config)
    if args.prices and not args.price_currency and config.prices.currency != "USD":
        setup.notes.append(
            f"the site's [prices] are in {config.prices.currency}; --prices is read as USD "
            "(the site's conversion is its own file's; --price-currency says otherwise)"
        )
    runs = _run_policies(setup, wanted, args)
    results = [evaluate(setup, r) for r in runs]
    period = {"from": args.from_, "to": args.to}
    doc = backtest_report.to_dict(setup, results, period)
    extra: list[str] = []
    if args.inference_dr:
        extra = _inference_dr(config, setup, runs, _setup, wanted, args, doc)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(
            "\n".join(
                [backtest_report.render(setup, results, f"{args.from_} to {args.to}"), *extra]
            )
        )
    # say where the files went, as `gridsched plan` does (stderr: --json stays clean)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
        print(f"wrote JSON: {args.json_out}", file=sys.stderr)
    if args.plot:
        backtest_report.plot(setup, results, args.plot)
        print(f"wrote plot: {args.plot}", file=sys.stderr)
    return 0


def _run_policies(setup: BacktestSetup, wanted: list[str], args: argparse.Namespace) -> list[Any]:
    from scheduler.backtest import policies

    runs = []
    show = not args.quiet
    for name in wanted:
        if name == "scheduler":
            runs.append(
                policies.rolling_scheduler(
                    setup,
                    progress=show,
                    rt_forecast=args.rt_forecast,
                    **({} if args.blend_tau_h is None else {"dam_tau_h": args.blend_tau_h}),
                    plan_resolution=args.plan_resolution,
                )
            )
        elif name == "threshold":
            runs.append(policies.threshold(setup, args.curtail_after, args.resume_after))
        elif name in ("best-mode", "best-mode+peaks"):
            runs.append(policies.best_mode(setup, peaks_and_dr=name == "best-mode+peaks"))
        elif name == "always-on":
            runs.append(policies.always_on(setup))
        else:
            runs.append(policies.oracle(setup))
    return runs


def _caps_only(config: SiteConfig) -> SiteConfig:
    from scheduler.backtest.inference_dr import without_clock_modes

    try:
        return without_clock_modes(config)
    except ValueError as exc:
        raise UsageError(f"--caps-only: {exc}") from None


def _inference_dr(
    config: SiteConfig,
    setup: BacktestSetup,
    runs: list[Any],
    make_setup: Callable[[SiteConfig], BacktestSetup],
    wanted: list[str],
    args: argparse.Namespace,
    doc: dict[str, Any],
) -> list[str]:
    """``--inference-dr``: the per-interval SLA and cap report, and every policy run again
    with caps only (where the site has clock modes) for the GPU energy they saved."""
    from scheduler.backtest import inference_dr

    caps_setup, caps_runs = None, [None] * len(runs)
    if inference_dr.has_clock_modes(config):
        caps_setup = make_setup(_caps_only(config))
        caps_runs = _run_policies(caps_setup, wanted, args)
    summaries = [
        inference_dr.summarise(setup, r, caps_setup, c)
        for r, c in zip(runs, caps_runs, strict=True)
    ]
    doc["inference_dr"] = [s.to_dict() for s in summaries]
    return inference_dr.render(summaries)


def add_parsers(sub: Any) -> None:
    bt = sub.add_parser("backtest", help="replay a period on real prices against baselines")
    add_price_file_args(bt, "realised price CSV (default: the config's [prices])")
    bt.add_argument("--forecast", help="forecast CSV, e.g. the ERCOT day-ahead file")
    bt.add_argument(
        "--forecast-format",
        choices=list(PRICE_FORMATS),
        help="layout of the --forecast file (as --price-format)",
    )
    bt.add_argument("--forecast-column", help="default: --price-column")
    bt.add_argument("--btc", help="BTC daily network CSV (hashprice per day)")
    add_event_args(
        bt, "JSON list of grid events, or a CSV power trace of a real DR event (with --events-at)"
    )
    bt.add_argument(
        "--from", dest="from_", required=True, help="first day (site local) or ISO time"
    )
    bt.add_argument("--to", required=True, help="end day (exclusive)")
    bt.add_argument(
        "--policy",
        default="scheduler,threshold,best-mode,best-mode+peaks,always-on,oracle",
        help="comma-separated: scheduler, threshold, best-mode, best-mode+peaks, always-on, oracle",
    )
    bt.add_argument(
        "--market",
        help="whose information timeline applies (ERCOT, PJM, MISO, SPP, CAISO, NYISO, "
        "SDAC/EPEX/NORDPOOL); default: ERCOT for ERCOT files, else none",
    )
    bt.add_argument(
        "--price-visibility",
        choices=["after-interval", "current"],
        default="after-interval",
        help="after-interval: a real-time price is known once its interval ends (default); "
        "current: a live feed shows the current dispatch price",
    )
    bt.add_argument(
        "--fill",
        choices=["refuse", "hold", "linear"],
        default="refuse",
        help="bridge missing prices on purpose (reported in the output); default: refuse",
    )
    bt.add_argument("--price-currency", help="currency of --prices/--forecast (default USD)")
    bt.add_argument(
        "--foreign-tariff",
        action="store_true",
        help="apply coincident-peak windows named for another market anyway (reported)",
    )
    bt.add_argument(
        "--usd-per-unit", type=float, help="USD per 1 unit of --price-currency (a fixed rate)"
    )
    bt.add_argument(
        "--price-per",
        choices=["MWh", "kWh"],
        help="energy unit of --prices/--forecast (default MWh)",
    )
    bt.add_argument(
        "--rt-forecast",
        default="blend",
        choices=[
            "blend",
            "learned",
            "learned+blend",
            "blend-debiased",
            "blend-recent",
        ],  # price_forecasts.RT_FORECASTS
        help="the scheduler's real-time price forecast (docs/backtest.md)",
    )
    bt.add_argument(
        "--blend-tau-h",
        type=float,
        default=None,
        help="hours over which the blend's last settled price fades into the day-ahead "
        "curve (default 2; docs/backtest.md)",
    )
    bt.add_argument(
        "--decision-step", default="15min", help="time between decisions (default: %(default)s)"
    )
    bt.add_argument(
        "--horizon", default="48h", help="each decision plans this far ahead (default: %(default)s)"
    )
    bt.add_argument(
        "--plan-resolution",
        help="the scheduler plans its horizon on these steps, e.g. '15min:8h,1h' (faster; "
        "changes decisions: docs/backtest.md)",
    )
    bt.add_argument(
        "--curtail-after",
        type=int,
        default=1,
        help="threshold: intervals above the strike before curtailing",
    )
    bt.add_argument(
        "--resume-after",
        type=int,
        default=1,
        help="threshold: intervals below the strike before resuming",
    )
    bt.add_argument(
        "--inference-dr",
        action="store_true",
        help="per interval: committed inference served and the DR cap followed; GPU energy "
        "against the same run with caps only (docs/backtest.md)",
    )
    bt.add_argument(
        "--caps-only",
        action="store_true",
        help="remove the GPU modes that lock the SM clock (compare power caps alone)",
    )
    bt.add_argument("--json", action="store_true", help="print the report as JSON only")
    bt.add_argument("--json-out", help="also write the JSON report to this file")
    bt.add_argument("--plot", help="write a PNG chart of the policies to this file")
    bt.add_argument("--quiet", action="store_true", help="no progress bar")
    bt.set_defaults(func=cmd_backtest)
