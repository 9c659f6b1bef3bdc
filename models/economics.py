"""Mining and inference economics: hashprice, breakeven, revenue rates.

Units: hashprice in USD per TH/s per day, efficiency in J/TH (= W per TH/s), prices in
USD/MWh, throughput in tokens/s, inference prices in USD per million tokens.
"""

from __future__ import annotations

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


def breakeven_usd_per_mwh(hashprice: float, efficiency_j_per_th: float, pue: float = 1.0) -> float:
    """Electricity price at which mining revenue equals energy cost.

    hashprice x 1e6 / (24 x efficiency): a machine at E J/TH burns E x 24 / 1e6 MWh per
    TH/s per day. ``pue`` > 1 charges the cooling overhead to the miner as well.
    """
    if efficiency_j_per_th <= 0:
        raise ValueError(f"efficiency_j_per_th must be > 0, got {efficiency_j_per_th}")
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1, got {pue}")
    return hashprice * 1e6 / (HOURS_PER_DAY * efficiency_j_per_th * pue)


def mining_revenue_usd_per_hour(hashrate_ths: float, hashprice: float) -> float:
    """Expected revenue of ``hashrate_ths`` TH/s over one hour."""
    return hashrate_ths * hashprice / HOURS_PER_DAY


def inference_revenue_usd_per_hour(tokens_s: float, usd_per_mtok: float) -> float:
    """Revenue of serving ``tokens_s`` tokens per second for one hour."""
    return tokens_s * 3600.0 / 1e6 * usd_per_mtok
