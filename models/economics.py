"""Mining and inference economics: hashprice, breakeven, revenue rates.

Units: hashprice in USD per TH/s per day, efficiency in J/TH (= W per TH/s), prices in
USD/MWh, throughput in tokens/s, inference prices in USD per million tokens.
"""

from __future__ import annotations

import json
import math
from typing import TypeVar

import numpy as np

#: A float or a numpy array: the formulas below are written once for both.
Num = TypeVar("Num", float, np.ndarray)

BLOCKS_PER_DAY = 144.0
SECONDS_PER_BLOCK = 600.0
HOURS_PER_DAY = 24.0


def network_hashrate_ths_from_difficulty(difficulty: float) -> float:
    """Expected network hashrate (TH/s) implied by a difficulty: D x 2^32 / 600 s."""
    if difficulty <= 0:
        raise ValueError(f"difficulty must be > 0, got {difficulty}")
    return difficulty * 2.0**32 / SECONDS_PER_BLOCK / 1e12


def hashprice_usd_per_ths_day(
    btc_price_usd: float,
    network_hashrate_ths: float,
    subsidy_btc_per_block: float,
    fees_btc_per_block: float = 0.0,
    pool_fee: float = 0.0,
    blocks_per_day: float = BLOCKS_PER_DAY,
) -> float:
    """Expected miner revenue per TH/s per day.

    (subsidy + fees per block) x blocks per day x BTC price / network hashrate, times
    (1 - pool fee).
    """
    if network_hashrate_ths <= 0:
        raise ValueError(f"network_hashrate_ths must be > 0, got {network_hashrate_ths}")
    if not 0.0 <= pool_fee < 1.0:
        raise ValueError(f"pool_fee must be in [0, 1), got {pool_fee}")
    if btc_price_usd < 0 or subsidy_btc_per_block < 0 or fees_btc_per_block < 0:
        raise ValueError("btc_price_usd, subsidy and fees must be >= 0")
    reward_btc_per_day = (subsidy_btc_per_block + fees_btc_per_block) * blocks_per_day
    return reward_btc_per_day * btc_price_usd / network_hashrate_ths * (1.0 - pool_fee)


def breakeven_usd_per_mwh(hashprice: Num, efficiency_j_per_th: float, pue: float = 1.0) -> Num:
    """Electricity price at which mining revenue equals energy cost.

    hashprice x 1e6 / (24 x efficiency): a machine at E J/TH burns E x 24 / 1e6 MWh per
    TH/s per day. ``pue`` > 1 charges the cooling overhead to the miner as well.
    """
    if efficiency_j_per_th <= 0:
        raise ValueError(f"efficiency_j_per_th must be > 0, got {efficiency_j_per_th}")
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1, got {pue}")
    return hashprice * 1e6 / (HOURS_PER_DAY * efficiency_j_per_th * pue)


def mining_revenue_usd_per_hour(hashrate_ths: Num, hashprice: Num | float) -> Num:
    """Expected revenue of ``hashrate_ths`` TH/s over one hour (hashprice in USD per TH/s
    per day). The planner's objective, the plan's money, the backtest's settlement and
    the strike-price rule all take mining revenue from here."""
    return hashrate_ths * hashprice / HOURS_PER_DAY


def inference_revenue_usd_per_hour(tokens_s: Num, usd_per_mtok: Num | float) -> Num:
    """Revenue of serving ``tokens_s`` tokens per second for one hour."""
    return tokens_s * 3600.0 / 1e6 * usd_per_mtok


def site_load_kw(it_kw: Num, pue: float, base_load_kw: Num | float) -> Num:
    """Load at the meter: IT power times PUE (cooling, conversion) plus the site's base
    load. Every site-load figure (the LP's balance row, rounding, the shed order, the
    daemon's measured import) is this formula."""
    return pue * it_kw + base_load_kw


#: Hashprice a feed may report (USD per TH/s per day, gross). It has moved between about
#: 0.03 and 1.0 since 2020; a figure outside this is a unit mistake (per PH/s is 1,000x).
HASHPRICE_RANGE = (1e-4, 10.0)
#: Block subsidy since the April 2024 halving.
SUBSIDY_BTC = 3.125


def hashprice_from_feed(text: str, fmt: str, key: str | None = None, per: str = "TH") -> float:
    """Gross hashprice (USD per TH/s per day) from a feed's body.

    ``fmt``: ``number`` (the body is the figure), ``json`` (``key``, dotted, leads to it),
    or ``network`` (a JSON object with ``btc_price_usd`` and ``difficulty`` or
    ``network_hashrate_ths``, optionally ``subsidy_btc`` and ``fees_btc_per_block``,
    computed as :func:`hashprice_usd_per_ths_day`). ``per``: the figure's hashrate unit,
    ``TH`` or ``PH`` (pools and indices often quote USD per PH/s per day). Raises
    ValueError naming what is wrong.
    """
    body = text.strip()
    if fmt == "number":
        try:
            value = float(body)
        except ValueError:
            raise ValueError(f"expected one number, got {body[:80]!r}") from None
    elif fmt in ("json", "network"):
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
        if fmt == "json":
            if not key:
                raise ValueError("format 'json' needs key (a dotted path to the figure)")
            node = doc
            for part in key.split("."):
                if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                elif isinstance(node, dict) and part in node:
                    node = node[part]
                else:
                    raise ValueError(f"no {part!r} at {key!r} in the reply")
            value = _number(node, key)
        else:
            if not isinstance(doc, dict):
                raise ValueError("format 'network' expects a JSON object")
            price = _number(doc.get("btc_price_usd"), "btc_price_usd")
            if "network_hashrate_ths" in doc:
                hashrate = _number(doc["network_hashrate_ths"], "network_hashrate_ths")
            elif "difficulty" in doc:
                difficulty = _number(doc["difficulty"], "difficulty")
                hashrate = network_hashrate_ths_from_difficulty(difficulty)
            else:
                raise ValueError("format 'network' needs difficulty or network_hashrate_ths")
            subsidy = _number(doc.get("subsidy_btc", SUBSIDY_BTC), "subsidy_btc")
            fees = _number(doc.get("fees_btc_per_block", 0.0), "fees_btc_per_block")
            return _in_range(hashprice_usd_per_ths_day(price, hashrate, subsidy, fees), "TH")
    else:
        raise ValueError(f"unknown format {fmt!r}: number, json or network")
    if per not in ("TH", "PH"):
        raise ValueError(f"unknown unit per {per!r}: TH or PH")
    return _in_range(value / 1000.0 if per == "PH" else value, per)


def _number(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"{what} is {v!r}, not a number")
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"{what} is {v!r}, not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} is {v!r}, not a finite number")
    return x


def _in_range(hp: float, per: str) -> float:
    lo, hi = HASHPRICE_RANGE
    if not lo <= hp <= hi:
        hint = ' (is the figure per PH/s? set per = "PH")' if per == "TH" and hp > hi else ""
        raise ValueError(f"hashprice {hp:g} USD per TH/s per day is outside {lo:g}-{hi:g}{hint}")
    return hp
