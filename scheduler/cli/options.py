"""Command-line options and values that ``plan`` and ``backtest`` share: the site file and
the price file's options, the price series they name, the grid events that ``--events``
names, the check of the files they will write, and the usage error."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from models.errors import GridschedError
from models.market import Series, site_prices
from models.signals import EARLIEST, LATEST, GridEvent, events_from_power_trace, load_events
from models.site import SiteConfig

#: The price file layouts a command line names (``--price-format``, ``--forecast-format``).
PRICE_FORMATS = ("ercot-rtm", "ercot-dam", "csv")


class UsageError(GridschedError):
    """A command-line value is invalid."""


def add_price_file_args(p: argparse.ArgumentParser, prices_help: str) -> None:
    """``--config``, ``--prices`` (``prices_help``) and how to read that file: its layout,
    price column, timestamp column and the zone of its naive timestamps."""
    p.add_argument("--config", required=True, help="site TOML file")
    p.add_argument("--prices", help=prices_help)
    p.add_argument(
        "--price-format",
        choices=list(PRICE_FORMATS),
        help="price file layout (default csv: a timestamp and a price column)",
    )
    p.add_argument("--price-column", help="price column, e.g. HB_WEST")
    p.add_argument(
        "--timestamp-column",
        default="interval_start_utc",
        help="timestamp column of a csv price file (default: %(default)s)",
    )
    p.add_argument("--price-timezone", help="time zone of naive timestamps in --prices")


def read_prices(
    config: SiteConfig,
    args: argparse.Namespace,
    start_s: int,
    end_s: int,
    path: str | None,
    fmt: str | None,
    column: str | None,
    forecast: bool = False,
) -> Series:
    """Prices from the file ``path`` (layout ``fmt``, price column ``column``) read as
    ``add_price_file_args`` and ``--price-currency``/``--usd-per-unit``/``--price-per``
    say, or from the config's [prices] when ``path`` is None. A ``forecast`` in an ERCOT
    layout is in USD/MWh whatever those flags say of the prices (they describe a csv
    file: the analyst's walk of session 25 saw ``--price-per kWh`` multiply an ERCOT
    day-ahead file by 1,000)."""
    if path is not None and column is None:
        raise UsageError("--price-column is required with --prices (e.g. HB_WEST)")
    if forecast and fmt in ("ercot-rtm", "ercot-dam"):
        return site_prices(
            config, start_s, end_s, path, fmt, column, args.timestamp_column, args.price_timezone
        )
    return site_prices(
        config,
        start_s,
        end_s,
        path,
        fmt,
        column,
        args.timestamp_column,
        args.price_timezone,
        currency=args.price_currency,
        usd_per_unit=args.usd_per_unit,
        per=args.price_per,
    )


def add_event_args(p: argparse.ArgumentParser, events_help: str) -> None:
    """``--events`` (``events_help``) and how a power-trace event is replayed, as
    ``read_events`` reads them."""
    p.add_argument("--events", help=events_help)
    p.add_argument("--events-at", help="replay a power-trace event starting at this time")
    p.add_argument(
        "--events-scale-kw",
        type=float,
        help="a trace's 100 %% level in kW (default: the interconnect)",
    )


def read_events(args: argparse.Namespace, config: SiteConfig) -> list[GridEvent]:
    """``--events``: a JSON list of signals, or a CSV power trace of a real DR event
    replayed as caps (``--events-at`` places it; ``--events-scale-kw`` scales it)."""
    if not args.events:
        return []
    if not args.events.endswith(".csv"):
        return load_events(args.events)
    if not args.events_at:
        raise UsageError(
            "a power-trace event file (.csv) needs --events-at, the time its "
            "first row is replayed at (ISO 8601 with offset)"
        )
    try:
        at = datetime.fromisoformat(args.events_at.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--events-at {args.events_at!r} is not ISO 8601") from None
    scale = args.events_scale_kw or config.site.interconnect_kw
    return events_from_power_trace(args.events, at, scale)


def check_outputs(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    """The files the command will write, each ``--flag`` in ``flags`` that is given: into a
    folder that exists, and a ``--plot`` named as the PNG it will be (matplotlib adds
    ``.png`` to a name without it, a file nobody named). Said before the work, not after."""
    for flag in flags:
        dest = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if not dest:
            continue
        path = Path(dest)
        if path.is_dir():
            kind = "a .png file" if flag == "--plot" else "a file"
            raise UsageError(f"{flag} {dest}: is a directory; name {kind} in it")
        if not path.resolve().parent.is_dir():
            raise UsageError(
                f"{flag} {dest}: the folder {path.parent} does not exist; create it "
                "or choose another path"
            )
        if flag == "--plot" and path.suffix.lower() != ".png":
            raise UsageError(
                f"{flag} {dest}: the chart is a PNG; name it {path.with_suffix('.png')} "
                "(a name without .png would be written with .png added)"
            )


def seconds(text: str) -> float:
    """An option's seconds, as a number (``1.5``) or a duration (``2s``, ``10min``, ``1h``)
    like every duration option; for argparse's ``type``."""
    from models.durations import parse_seconds

    try:
        value = parse_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not seconds: a number or a duration, e.g. 30, 30s, 10min, 1h"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a finite number >= 0")
    return value


def check_year(flag: str, text: str, year: int) -> None:
    """A date the command line names falls in the years a signal may name (1970-2099,
    ``models.signals``): pandas' clock ends in 2262 and Python's in 9999, with tracebacks."""
    if not EARLIEST.year <= year < LATEST.year:
        raise UsageError(
            f"{flag} {text!r}: a year from {EARLIEST.year} to {LATEST.year - 1} is needed"
        )
