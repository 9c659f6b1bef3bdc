"""When each market input becomes known: the information model a backtest enforces.

One row per market: the day-ahead auction's publication time in the market's own clock (for
operating day D, on D-1), the day-ahead interval, the real-time settlement interval and the
currency. A real-time price is known only after its settlement interval ends (unless the user
declares a live feed of the current dispatch price); a day-ahead price from its publication
time; a daily hashprice the day after (the BTC network file is per UTC day).

Sources are named per row (docs/backtest.md cites them in full). ``confirmed`` is False
where no stored primary or press source for the publication time could be found: the time
shown is the commonly quoted one, and the backtest says so in its report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.errors import ConfigError

PRICE_VISIBILITY = ("after-interval", "current")


@dataclass(frozen=True)
class MarketInfo:
    name: str
    #: the clock the day-ahead timeline is stated in (IANA zone; MISO runs on EST all year)
    timezone: str
    #: local minutes after midnight on D-1 by which day D's day-ahead prices are published
    dam_published_min: int
    dam_interval_s: int
    rt_settlement_s: int
    currency: str
    source: str
    confirmed: bool = True

    @property
    def dam_published_local(self) -> str:
        return f"{self.dam_published_min // 60:02d}:{self.dam_published_min % 60:02d}"


MARKETS: dict[str, MarketInfo] = {
    m.name: m
    for m in (
        MarketInfo(
            "ERCOT",
            "America/Chicago",
            13 * 60 + 30,
            3600,
            900,
            "USD",
            "ERCOT Nodal Protocols s.4.1 (hourly DAM, 15-minute RT settlement interval); "
            "13:30 results time of ERCOT's DAM timeline, not in a stored primary text",
            confirmed=False,
        ),
        MarketInfo(
            "PJM",
            "America/New_York",
            13 * 60 + 30,
            3600,
            300,
            "USD",
            "PJM Inside Lines 2015-07 (DA results posted by 13:30 ET from 2016-04-01); "
            "five-minute settlements from 2018-04-01",
        ),
        MarketInfo(
            "MISO",
            "Etc/GMT+5",  # MISO's market day is Eastern Standard Time all year
            13 * 60 + 30,
            3600,
            300,
            "USD",
            "RTO Insider (DA results by 13:30 EPT; taken as 13:30 EST, later in summer); "
            "MISO press release 2018-08-21 (five-minute settlements from 2018-07-01)",
        ),
        MarketInfo(
            "SPP",
            "America/Chicago",
            14 * 60,
            3600,
            300,
            "USD",
            "RTO Insider (proposal: DA close 09:30 CT, results 14:00 CT); five-minute RTBM",
            confirmed=False,
        ),
        MarketInfo(
            "CAISO",
            "America/Los_Angeles",
            13 * 60,
            3600,
            300,
            "USD",
            "commonly quoted IFM results time 13:00 PT; no stored source found",
            confirmed=False,
        ),
        MarketInfo(
            "NYISO",
            "America/New_York",
            11 * 60,
            3600,
            300,
            "USD",
            "NYISO MST 4.2 (DAM bids by 05:00 ET); results time 11:00 ET commonly quoted, "
            "no stored source found",
            confirmed=False,
        ),
        MarketInfo(
            "SDAC",  # EPEX SPOT, Nord Pool and the other European day-ahead NEMOs
            "Europe/Brussels",
            12 * 60 + 45,
            900,  # 15-minute MTU from delivery day 2025-10-01 (hourly before)
            900,  # imbalance settlement period
            "EUR",
            "SDAC via IBEX 2021-05-26 (preliminary results 12:45 CET); Nord Pool "
            "(15-minute MTU from delivery day 2025-10-01)",
        ),
    )
}
ALIASES = {"EPEX": "SDAC", "NORDPOOL": "SDAC", "NORD POOL": "SDAC", "EU": "SDAC"}


def market_info(name: str) -> MarketInfo:
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key not in MARKETS:
        valid = ", ".join([*MARKETS, *ALIASES])
        raise ConfigError("--market", [(repr(name), f"not a known market; valid: {valid}")])
    return MARKETS[key]


def market_for_format(fmt: str | None) -> MarketInfo | None:
    """The market a price file format implies (ERCOT's own files), else None."""
    if fmt in ("ercot-rtm", "ercot-dam", "demo"):
        return MARKETS["ERCOT"]
    return None


def tariff_market_problems(
    window_names: list[str], market: MarketInfo | None
) -> tuple[list[str], list[str]]:
    """Coincident-peak windows checked against the market whose prices are replayed.

    A window names its market in its name (``"ERCOT 4CP"``); the config has no other
    field for it. Returns (conflicts, notes): a window naming another market than
    ``market`` is a conflict; one naming none, or a run with no market, is a note."""
    conflicts, notes = [], []
    words = {**{k: k for k in MARKETS}, **ALIASES}
    for name in window_names:
        upper = name.upper()
        # whole words: "EU" names SDAC, not "QUEUE"; "PJM" in "PJM-5CP", not in "XPJMX"
        named = {v for k, v in words.items() if re.search(rf"(?<![A-Z0-9]){k}(?![A-Z0-9])", upper)}
        if not named:
            notes.append(f"coincident-peak window {name!r} names no market; applied as configured")
        elif market is None:
            notes.append(
                f"coincident-peak window {name!r} is {'/'.join(sorted(named))}'s; "
                "the prices name no market"
            )
        elif market.name not in named:
            conflicts.append(
                f"coincident-peak window {name!r} is {'/'.join(sorted(named))}'s but the "
                f"prices are {market.name}'s"
            )
    return conflicts, notes
