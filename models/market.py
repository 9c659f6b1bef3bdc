"""Market series: loaders for real price files, regularised onto a fixed interval.

The files: ERCOT real-time and day-ahead prices, any CSV with a timestamp and a value
column, the BTC network file's hashprice; the site's prices in USD/MWh (currency and
per-kWh conversions said, never guessed); clearly synthetic demo prices. The ``Series`` they
return (regular steps, gaps remembered) is in ``models.series`` and importable from here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.csv_read import parse_times, parse_values, read_csv
from models.errors import DataError
from models.series import FILL_METHODS, Series, iso, regularise

if TYPE_CHECKING:
    from models.site import SiteConfig

__all__ = [
    "ERCOT_DAM_COLUMNS",
    "ERCOT_RTM_COLUMNS",
    "FILL_METHODS",
    "PRICE_FORMATS",
    "Series",
    "demo_prices",
    "iso",
    "load_btc_hashprice",
    "load_csv_series",
    "load_ercot_dam",
    "load_ercot_rtm",
    "load_price_file",
    "regularise",
    "site_prices",
    "solar_profile_kw",
]

ERCOT_RTM_COLUMNS = ("HB_WEST", "HB_NORTH", "HB_HOUSTON", "HB_SOUTH", "HB_PAN", "HB_HUBAVG")
ERCOT_DAM_COLUMNS = (*ERCOT_RTM_COLUMNS, "LZ_WEST", "LZ_NORTH", "LZ_HOUSTON", "LZ_SOUTH")

#: a currency code standing alone in a column name (``price_eur_mwh``, ``EUR/MWh``)
_CURRENCY_IN_NAME = re.compile(
    r"(?i)(?:^|[^a-z])(eur|gbp|dkk|nok|sek|chf|pln|czk|huf|ron|cad|aud|jpy)(?:[^a-z]|$)"
)


_NAME_COLUMNS = (
    "name them with --timestamp-column and --price-column, or in the site file with "
    "[prices] timestamp_column and column, [site.onsite] likewise"
)


def load_csv_series(
    path: str | Path,
    column: str,
    timestamp_column: str = "interval_start_utc",
    timezone: str | None = None,
    unit: str = "USD/MWh",
    label: str | None = None,
    interval_s: int | None = None,
    columns_hint: str = _NAME_COLUMNS,
) -> Series:
    """Any CSV with a timestamp column and a value column (``columns_hint``: how the user
    names them, said when one is missing)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(str(p), "is a directory; name the CSV file in it")
    header = read_csv(p, None).columns
    for sep in (";", "\t"):
        if len(header) == 1 and sep in header[0]:  # a spreadsheet's export in some locales
            raise DataError(
                str(p),
                f"the file seems separated by {sep!r} (header {header[0]!r}); gridsched reads "
                "comma-separated files with '.' in numbers: export it as comma-separated CSV",
            )
    for col in (timestamp_column, column):
        if col not in header:
            raise DataError(
                str(p), f"no column {col!r}; columns are {list(header)} ({columns_hint})"
            )
    df = read_csv(p, [timestamp_column, column])
    times = parse_times(df[timestamp_column], str(p), timestamp_column, timezone)
    values = parse_values(df[column], str(p), column)
    return regularise(label or f"{p.name}:{column}", unit, times, values, interval_s)


def _check_column(path: Path, column: str, valid: tuple[str, ...]) -> None:
    if column not in valid:
        raise DataError(
            str(path),
            f"price column {column!r} is not in this ERCOT file; valid: {', '.join(valid)}",
        )


def load_ercot_rtm(path: str | Path, column: str = "HB_WEST") -> Series:
    """ERCOT real-time 15-min settlement point prices (shared/data format)."""
    p = Path(path)
    _check_column(p, column, ERCOT_RTM_COLUMNS)
    return load_csv_series(p, column, label=f"ERCOT RTM {column}", interval_s=900)


def load_ercot_dam(path: str | Path, column: str = "HB_WEST") -> Series:
    """ERCOT day-ahead hourly settlement point prices (shared/data format)."""
    p = Path(path)
    _check_column(p, column, ERCOT_DAM_COLUMNS)
    return load_csv_series(p, column, label=f"ERCOT DAM {column}", interval_s=3600)


PRICE_FORMATS = ("ercot-rtm", "ercot-dam", "csv")


def load_price_file(
    path: str | Path,
    fmt: str,
    column: str,
    timestamp_column: str = "interval_start_utc",
    timezone: str | None = None,
) -> Series:
    """A price file in one of :data:`PRICE_FORMATS`."""
    if fmt == "ercot-rtm":
        return load_ercot_rtm(path, column)
    if fmt == "ercot-dam":
        return load_ercot_dam(path, column)
    if fmt == "csv":
        return load_csv_series(path, column, timestamp_column, timezone)
    raise ValueError(f"price format {fmt!r}: valid are {', '.join(PRICE_FORMATS)}")


def site_prices(
    config: SiteConfig,
    start_s: int,
    end_s: int,
    path: str | None = None,
    fmt: str | None = None,
    column: str | None = None,
    timestamp_column: str = "interval_start_utc",
    timezone: str | None = None,
    currency: str | None = None,
    usd_per_unit: float | None = None,
    per: str | None = None,
) -> Series:
    """Prices in USD/MWh, from ``path`` if given, else from the site's ``[prices]``.

    The config's ``currency``/``usd_per_unit``/``per`` describe the config's own file and
    convert only that one. A file named on the command line is in ``currency`` (default
    USD; ERCOT files are USD), converted by ``usd_per_unit`` when it is not USD; a
    non-USD file without a rate is refused rather than read as USD."""
    src = config.prices
    if path is None and src.format.value == "demo":
        return demo_prices(start_s, end_s, config.site.timezone)
    if path is None:
        path = str(config.resolve(src.path or ""))
        fmt = fmt or src.format.value
        column = column or src.column
        timestamp_column = src.timestamp_column
        timezone = timezone or src.timezone
        currency, rate, per = src.currency, src.usd_per_unit, src.per
    else:
        named = _CURRENCY_IN_NAME.search(column or "")
        if currency is None and named:
            code = named.group(1).upper()
            raise DataError(
                path,
                f"column {column!r} looks like prices in {code}; say the currency and the "
                f"rate (--price-currency {code} --usd-per-unit RATE) rather than read it as USD",
            )
        if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise DataError(
                path, f"--price-currency {currency!r} is not a 3-letter currency code (EUR, GBP)"
            )
        currency = (currency or "USD").upper()
        if usd_per_unit is not None and not (math.isfinite(usd_per_unit) and usd_per_unit > 0):
            # 0 was read as 1 (``or 1.0``) and a negative rate flipped every price's sign
            raise DataError(
                path, f"--usd-per-unit {usd_per_unit:g}: USD per 1 {currency} must be a number > 0"
            )
        if currency == "USD" and usd_per_unit is not None and usd_per_unit != 1.0:
            raise DataError(
                path,
                f"--usd-per-unit {usd_per_unit:g} with prices in USD: nothing to convert; "
                "for prices in another currency, name it (--price-currency EUR)",
            )
        if fmt in ("ercot-rtm", "ercot-dam") and currency != "USD":
            raise DataError(path, f"ERCOT prices are in USD, not {currency}")
        if currency != "USD" and usd_per_unit is None:
            raise DataError(
                path,
                f"prices in {currency}: give the rate (USD per 1 {currency}) to convert "
                "them; mixing currencies without a conversion is refused",
            )
        if per is None and re.search(r"(?i)kwh", column or ""):
            raise DataError(
                path,
                f"column {column!r} looks like prices per kWh; say so (--price-per kWh) "
                "rather than read them per MWh, 1,000 times too cheap",
            )
        if per not in (None, "MWh", "kWh"):
            raise DataError(path, f"--price-per {per!r}: valid are MWh, kWh")
        if fmt in ("ercot-rtm", "ercot-dam") and per == "kWh":
            raise DataError(path, "ERCOT prices are per MWh, not per kWh")
        if (fmt or "csv") == "csv":
            _check_currency_column(path, currency)
        rate, per = (usd_per_unit if currency != "USD" else 1.0) or 1.0, per or "MWh"
    if column is None:
        raise ValueError(f"{path}: the price column is not named")
    series = load_price_file(path, fmt or "csv", column, timestamp_column, timezone)
    return in_usd_per_mwh(series, currency, rate, per)


def _check_currency_column(path: str, currency: str) -> None:
    """A csv price file with a ``currency`` column says its own currency: one code on every
    row, the one the prices are read in (``currency``); a file that says otherwise, or
    several, is refused rather than read in the wrong money."""
    import pandas as pd

    try:
        head = pd.read_csv(path, nrows=0)
    except (OSError, ValueError, UnicodeDecodeError):
        return  # the loader says what is wrong with the file
    named = [c for c in head.columns if str(c).strip().lower() == "currency"]
    if not named:
        return
    codes = sorted(
        {str(v).strip().upper() for v in pd.read_csv(path, usecols=named)[named[0]].dropna()}
    )
    if len(codes) > 1:
        raise DataError(
            path, f"its {named[0]!r} column holds {', '.join(codes)}: one currency a file"
        )
    if codes and codes[0] != currency:
        raise DataError(
            path,
            f"its {named[0]!r} column says {codes[0]}, and the prices would be read as "
            f"{currency}: say so (--price-currency {codes[0]} --usd-per-unit RATE)",
        )


def in_usd_per_mwh(series: Series, currency: str, rate: float, per: str) -> Series:
    """Prices in ``currency`` per ``per`` (MWh or kWh) as USD/MWh at ``rate`` USD per unit,
    the conversion said in the label."""
    per_kwh = 1000.0 if per == "kWh" else 1.0
    if rate != 1.0 or per_kwh != 1.0 or currency != "USD":
        series = series.scaled(
            rate * per_kwh,
            unit="USD/MWh",
            label=f"{series.label} ({currency}/{per} -> USD/MWh"
            + (f" at {rate:g} USD/{currency})" if currency != "USD" else ")"),
        )
    return series


#: the most USD per TH/s per day a hashprice may be (it has been 0.03-0.45 since 2020)
MAX_HASHPRICE_USD_PER_THS_DAY = 5.0


def load_btc_hashprice(path: str | Path, pool_fee: float = 0.0) -> Series:
    """Daily hashprice (USD per TH/s per day) from the BTC network file, net of pool fee."""
    p = Path(path)
    s = load_csv_series(
        p,
        "derived_hashprice_usd_per_ths_day",
        timestamp_column="date_utc",
        timezone="UTC",
        unit="USD/TH/s/day",
        label=f"{p.name}:hashprice",
        interval_s=86400,
        columns_hint=(
            "a --btc file has one row per UTC day: date_utc, e.g. 2023-03-20, and "
            "derived_hashprice_usd_per_ths_day, in USD per TH/s per day before pool fee"
        ),
    )
    # 0.03-0.45 since 2020 (as [mining] checks): a value in the tens is per PH/s, and
    # would make every miner look 1,000 times as profitable
    high = np.flatnonzero(np.nan_to_num(s.values) > MAX_HASHPRICE_USD_PER_THS_DAY)
    if high.size:
        k = int(high[0])
        v = float(s.values[k])
        raise DataError(
            str(p),
            f"{iso(s.start_s + k * s.interval_s)[:10]}: {v:g} USD per TH/s per day is "
            f"implausible (0.03-0.45 since 2020, at most {MAX_HASHPRICE_USD_PER_THS_DAY:g} "
            f"taken); a per PH/s figure divides by 1000, e.g. {v / 1000:g}",
        )
    return s.scaled(1.0 - pool_fee)


def demo_prices(start_s: int, end_s: int, timezone: str = "America/Chicago") -> Series:
    """A deterministic, clearly synthetic ERCOT-West-like price day for demos and tests.

    Night ~25 $/MWh, a solar trough near zero (negative on some days), an evening ramp to
    ~110 $/MWh and, on every third day, a scarcity spike to ~900 $/MWh at 19:00 local.
    """
    interval = 900
    t0 = (start_s // 86400 - 1) * 86400
    n = int((end_s - t0) // interval) + 2 * 96
    t = t0 + interval * np.arange(n, dtype=np.int64)
    local = pd.to_datetime(t, unit="s", utc=True).tz_convert(timezone)
    hour = (local.hour + local.minute / 60.0).to_numpy()
    day = (t // 86400).astype(np.int64)
    rng = np.random.default_rng(day % 1000 + 7)
    solar = np.clip(np.sin(np.pi * (hour - 7.0) / 12.0), 0, None)
    evening = np.exp(-(((hour - 19.0) / 1.6) ** 2))
    price = 30.0 - 38.0 * solar * (1.0 + 0.3 * np.sin(day)) + 85.0 * evening
    price += rng.normal(0.0, 3.0, n)
    spike = (day % 3 == 0) & (np.abs(hour - 19.25) < 0.5)
    price = np.where(spike, 900.0, price)
    return Series(
        "DEMO synthetic prices (not market data)",
        "USD/MWh",
        int(t[0]),
        interval,
        np.round(price, 2),
        np.zeros(n, dtype=np.int64),
        synthetic=True,
    )


def solar_profile_kw(
    starts_s: np.ndarray, ends_s: np.ndarray, capacity_kw: float, timezone: str
) -> np.ndarray:
    """Clear-sky solar output (kW) at step midpoints, scaled to ``capacity_kw``."""
    mid = ((np.asarray(starts_s) + np.asarray(ends_s)) / 2).astype(np.int64)
    local = pd.to_datetime(mid, unit="s", utc=True).tz_convert(timezone)
    hour = (local.hour + local.minute / 60.0).to_numpy()
    return capacity_kw * np.clip(np.sin(np.pi * (hour - 6.5) / 13.0), 0, None) ** 1.5
