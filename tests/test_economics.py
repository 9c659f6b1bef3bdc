from __future__ import annotations

import numpy as np
import pytest

from models.economics import (
    breakeven_usd_per_mwh,
    hashprice_usd_per_ths_day,
    inference_revenue_usd_per_hour,
    mining_revenue_usd_per_hour,
    network_hashrate_ths_from_difficulty,
    site_load_kw,
)
from tests.conftest import GPU, make_site, solve


def test_breakeven_design_anchor() -> None:
    # by hand: 0.05 x 1e6 / (24 x 30.5) = 68.306 USD/MWh for an S19j Pro at 30.5 J/TH
    assert breakeven_usd_per_mwh(0.05, 30.5) == pytest.approx(68.306, abs=1e-3)
    assert breakeven_usd_per_mwh(0.05, 30.5, pue=1.1) == pytest.approx(68.306 / 1.1, abs=1e-3)


def test_hashprice_by_hand() -> None:
    # 3.125 BTC + 0.125 fees per block, 144 blocks, 60k USD, 600 EH/s = 6e8 TH/s
    hp = hashprice_usd_per_ths_day(60_000, 6e8, 3.125, 0.125)
    assert hp == pytest.approx(3.25 * 144 * 60_000 / 6e8)
    assert hashprice_usd_per_ths_day(60_000, 6e8, 3.125, 0.125, pool_fee=0.02) == pytest.approx(
        hp * 0.98
    )


def test_difficulty_to_hashrate() -> None:
    # D x 2^32 / 600 s
    assert network_hashrate_ths_from_difficulty(1e14) == pytest.approx(1e14 * 2**32 / 600 / 1e12)


def test_revenue_rates() -> None:
    assert mining_revenue_usd_per_hour(100.0, 0.24) == pytest.approx(1.0)
    assert inference_revenue_usd_per_hour(1000.0, 0.5) == pytest.approx(1.8)
    # the same formulas over arrays, as the planner and the backtest call them
    hp = np.array([0.24, 0.48])
    assert mining_revenue_usd_per_hour(np.array([100.0, 50.0]), hp).tolist() == [1.0, 1.0]


def test_site_load_by_hand() -> None:
    # 30 kW of IT at PUE 1.25 is 37.5 kW at the meter, plus 5 kW of base load
    assert site_load_kw(30.0, 1.25, 5.0) == pytest.approx(42.5)
    assert site_load_kw(np.array([0.0, 30.0]), 1.25, 5.0).tolist() == [5.0, 42.5]


def test_the_plan_takes_load_and_revenue_from_the_formulas() -> None:
    """The planner's figures are these formulas: 10 toy ASICs (3 kW, 100 TH/s, hashprice
    0.24) and 10 GPUs (1 kW idle 0.2 kW) at PUE 1.25 and 5 kW base load over one hour."""
    gpu = {**GPU, "idle_power_kw": 0.2}
    site = make_site(
        site={"pue": 1.25, "base_load_kw": 5.0},
        devices=[
            {
                "name": "asic",
                "kind": "asic",
                "count": 10,
                "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}],
            },
            gpu,
        ],
        inference={"committed_tokens_s": 10_000.0, "committed_usd_per_mtok": 0.5},
    )
    inp, plan = solve(site, [100.0])
    assert inp.marginal_kw.tolist() == pytest.approx([3.75, 1.0])  # 1.25 x (1.0 - 0.2)
    assert inp.fixed_kw.tolist() == pytest.approx([site_load_kw(10 * 0.2, 1.25, 5.0)])
    # every unit runs at 100 USD/MWh: 30 kW of miners + 10 kW of GPUs, PUE 1.25, +5 kW
    assert plan.import_kw[0] == pytest.approx(site_load_kw(40.0, 1.25, 5.0))
    assert plan.money.mining_revenue == pytest.approx(mining_revenue_usd_per_hour(1000.0, 0.24))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"btc_price_usd": 1.0, "network_hashrate_ths": 0.0, "subsidy_btc_per_block": 3.125},
        {
            "btc_price_usd": 1.0,
            "network_hashrate_ths": 1.0,
            "subsidy_btc_per_block": 3.125,
            "pool_fee": 1.5,
        },
    ],
)
def test_bad_economics_inputs(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        hashprice_usd_per_ths_day(**kwargs)  # type: ignore[arg-type]


def test_hashprice_feed_formats() -> None:
    from models.economics import hashprice_from_feed

    assert hashprice_from_feed(" 0.0481\n", "number") == pytest.approx(0.0481)
    assert hashprice_from_feed("48.1", "number", per="PH") == pytest.approx(0.0481)
    doc = '{"data": {"series": [{"hashprice": 52.5}]}}'
    assert hashprice_from_feed(doc, "json", "data.series.0.hashprice", "PH") == pytest.approx(
        0.0525
    )
    # the network's figures: 3.125 + 0.1 BTC a block, 144 blocks a day, at 90,000 USD
    net = '{"btc_price_usd": 90000, "network_hashrate_ths": 8e8, "fees_btc_per_block": 0.1}'
    expect = (3.125 + 0.1) * 144 * 90_000 / 8e8
    assert hashprice_from_feed(net, "network") == pytest.approx(expect)
    by_difficulty = '{"btc_price_usd": 90000, "difficulty": 1.1e14}'
    hr = network_hashrate_ths_from_difficulty(1.1e14)
    assert hashprice_from_feed(by_difficulty, "network") == pytest.approx(3.125 * 144 * 90_000 / hr)


@pytest.mark.parametrize(
    ("text", "fmt", "key", "per", "words"),
    [
        ("n/a", "number", None, "TH", "expected one number, got 'n/a'"),
        ("48.1", "number", None, "TH", "outside 0.0001-10 (is the figure per PH/s?"),
        ("0", "number", None, "TH", "outside"),
        ("{", "json", "a", "TH", "not JSON"),
        ('{"data": {}}', "json", "data.hashprice", "TH", "no 'hashprice' at 'data.hashprice'"),
        ('{"hp": true}', "json", "hp", "TH", "hp is True, not a number"),
        ('{"hp": "NaN"}', "json", "hp", "TH", "not a finite number"),
        ('{"btc_price_usd": 1}', "network", None, "TH", "needs difficulty or network_hashrate"),
        ("[1]", "network", None, "TH", "expects a JSON object"),
        ("1", "csv", None, "TH", "unknown format 'csv'"),
    ],
)
def test_bad_hashprice_feeds_say_what_is_wrong(
    text: str, fmt: str, key: str | None, per: str, words: str
) -> None:
    from models.economics import hashprice_from_feed

    with pytest.raises(ValueError) as exc:
        hashprice_from_feed(text, fmt, key, per)
    assert words in str(exc.value)
