"""The helpers that now serve two places each: bmminer's API for the stock and VNish
simulators, the price options of ``plan`` and ``backtest``, the site file's zone,
currency and rate checks, and what both ASIC back-ends believe from a reading."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.asic_miner import SLEEP_SETTLE_S
from adapters.asic_rs import AsicRsMiner
from adapters.base import Telemetry
from adapters.sim.antminer import AntminerSim
from adapters.sim.vnish import VnishSim
from models.errors import ConfigError
from models.firmware import CAPABILITIES, Family
from models.site import parse_site
from scheduler.cli.options import (
    UsageError,
    add_event_args,
    add_price_file_args,
    read_prices,
)
from tests.conftest import make_site, site_dict

# -- bmminer's API, as stock Antminer and VNish serve it ----------------------------------


def _ask(sim: Any, command: str) -> dict[str, Any]:
    out: dict[str, Any] = sim.answer(json.dumps({"command": command}).encode())
    return out


def test_stock_and_vnish_answer_summary_alike() -> None:
    for sim in (AntminerSim("127.0.0.1"), VnishSim("127.0.0.2")):
        s = _ask(sim, "summary")
        assert s["STATUS"][0]["Description"] == "bmminer 1.0.0"
        body = s["SUMMARY"][0]
        assert isinstance(body["GHS 5s"], str) and float(body["GHS 5s"]) > 0
        assert body["Accepted"] == 1
        assert _ask(sim, "pools")["POOLS"][0]["URL"].startswith("stratum+tcp://")
        assert _ask(sim, "summary+pools")["STATUS"][0]["Msg"] == "Invalid command"


def test_each_firmware_keeps_its_own_stats() -> None:
    stock, vn = AntminerSim("127.0.0.1"), VnishSim("127.0.0.2")
    head, board = _ask(stock, "stats")["STATS"]
    t = stock.state.temp_c
    assert head == {"BMMiner": "1.0.0", "Miner": "uart_trans.1.3", "Type": stock.model}
    assert [k for k in board if k.startswith("fan") and k != "fan_num"] == [
        "fan1",
        "fan2",
        "fan3",
    ]
    assert (board["temp1"], board["temp2_1"]) == (round(t - 6), round(t + 6))
    head, board = _ask(vn, "stats")["STATS"]
    t = vn.state.temp_c
    assert head["Miner"] == "Vnish 1.2.6" and head["Type"].endswith("(Vnish 1.2.6)")
    assert [board[f"fan{i}"] for i in (1, 2, 3, 4)] == [4800] * 4
    assert (board["temp1"], board["temp2_1"]) == (round(t + 6), round(t - 6))
    for sim in (stock, vn):  # asleep: no hash, and each firmware's idle fans
        sim.state.phase, sim.state.ramp = "sleeping", None
    _h, board = _ask(stock, "stats")["STATS"]
    assert (board["chain_rate1"], board["fan1"]) == ("0.00", 0)
    _h, board = _ask(vn, "stats")["STATS"]
    assert (board["chain_rate1"], board["fan4"]) == ("0.00", 1200)
    assert "Type" not in _ask(vn, "version")["VERSION"][0]  # discovery must read VNish
    assert _ask(stock, "version")["VERSION"][0]["Type"] == stock.model


# -- plan's and backtest's price options -------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_price_file_args(p, "price CSV")
    add_event_args(p, "events")
    for flag in ("--price-currency", "--usd-per-unit", "--price-per"):
        p.add_argument(flag)
    return p


def test_price_options_parse_as_before() -> None:
    args = _parser().parse_args(["--config", "s.toml", "--prices", "p.csv"])
    assert args.timestamp_column == "interval_start_utc"
    assert args.price_format is None and args.events is None and args.events_at is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["--config", "s.toml", "--price-format", "xls"])
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --config is required


def test_a_price_file_needs_its_column() -> None:
    args = _parser().parse_args(["--config", "s.toml", "--prices", "p.csv"])
    with pytest.raises(UsageError, match="--price-column is required"):
        read_prices(make_site(), args, 0, 3600, "p.csv", "csv", None)


def test_without_a_file_the_config_prices_are_read() -> None:
    args = _parser().parse_args(["--config", "s.toml"])
    s = read_prices(make_site(), args, 0, 86_400, None, None, None)
    assert s.synthetic and s.unit == "USD/MWh"  # the toy site's [prices]: demo


# -- the site file's zone, currency and rate ---------------------------------------------


def _problems(**sections: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_site(site_dict(**sections), "x.toml")
    return dict(exc.value.problems)


@pytest.mark.parametrize(
    ("sections", "path"),
    [
        ({"site": {"timezone": "Mars/Olympus"}}, "site.timezone"),
        (
            {"site": {"onsite": {"kind": "solar", "timezone": "Mars/Olympus"}}},
            "site.onsite.timezone",
        ),
        ({"prices": {"timezone": "Mars/Olympus"}}, "prices.timezone"),
        (
            {
                "daemon": {
                    "price_feed": {"kind": "file", "path": "p", "column": "c", "timezone": "X"}
                }
            },
            "daemon.price_feed.timezone",
        ),
    ],
)
def test_every_zone_key_refuses_an_unknown_zone(sections: dict[str, Any], path: str) -> None:
    problems = _problems(**sections)
    assert "unknown time zone" in problems[path] and "IANA" in problems[path]


def test_a_currency_needs_its_rate_in_prices_and_in_the_feed() -> None:
    problems = _problems(prices={"currency": "EUR"})
    assert "currency EUR needs usd_per_unit (USD per 1 EUR)" in problems["prices"]
    feed = {"kind": "file", "path": "p", "column": "c", "currency": "EUR"}
    problems = _problems(daemon={"price_feed": feed})
    assert "currency EUR needs usd_per_unit" in problems["daemon.price_feed.usd_per_unit"]
    assert _problems(prices={"currency": "eur", "usd_per_unit": 1.1})["prices.currency"]


# -- what both ASIC back-ends believe from a reading --------------------------------------


def _reading(state: Any, target_w: float | None = 3000.0) -> Telemetry:
    return Telemetry(device_id="d", at=0.0, state=state, target_w=target_w)


@pytest.mark.parametrize("cls", [PyasicMiner, AsicRsMiner])
def test_both_back_ends_believe_a_reading_alike(cls: Any) -> None:
    dev = cls("d", "127.0.0.1", confirm_within_s=None)
    dev._caps = CAPABILITIES[Family.BRAIINS]
    assert dev.confirm_deadline_s() == CAPABILITIES[Family.BRAIINS].confirm_within_s
    assert dev.readback_after_s() == CAPABILITIES[Family.BRAIINS].settle_s
    assert cls("d", "a", confirm_within_s=7.0).confirm_deadline_s() == 7.0
    dev._sleeping, dev._slept_at = True, 100.0
    dev._believe(_reading("running"), 100.0 + SLEEP_SETTLE_S)  # too soon after the sleep
    assert dev._sleeping is True and dev._target_w == 3000.0
    dev._believe(_reading("running", None), 100.5 + SLEEP_SETTLE_S)
    assert dev._sleeping is False and dev._target_w is None
    dev._believe(_reading("sleeping"), 200.0)
    assert (dev._sleeping, dev._slept_at) == (True, None)
    assert dev._target_in_place(3000.4) and not dev._target_in_place(3001.0)
    info = dev._identity("AntMiner", "S19", "BOS+", "1.2", Family.BRAIINS, (2000.0, 3000.0))
    assert (info.kind, info.family, info.min_power_w, info.max_power_w) == (
        "asic",
        "braiins-os",
        2000.0,
        3000.0,
    )
    assert dev._identity("x", "y", "z", "", Family.OTHER, ()).min_power_w is None
