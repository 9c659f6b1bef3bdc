"""Backtest honesty: currency said aloud, gaps explained, markets' information declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import DataError
from models.market import site_prices
from models.site import parse_site
from tests.conftest import T0, site_dict

DAY = 86400


def _csv(path: Path, column: str, values: list[float], start: int = T0, step: int = 3600) -> Path:
    from models.market import iso

    rows = [f"interval_start_utc,{column}"]
    rows += [f"{iso(start + i * step)},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _eur_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    own = _csv(tmp_path / "own_eur.csv", "price", [50.0] * 48)
    d = site_dict(
        prices={
            "format": "csv",
            "path": str(own),
            "column": "price",
            "currency": "EUR",
            "usd_per_unit": 1.1,
        }
    )
    return parse_site(d, str(tmp_path / "site.toml"))


def test_config_currency_does_not_rescale_a_usd_prices_file(tmp_path: Path) -> None:
    cfg = _eur_config(tmp_path)
    usd = _csv(tmp_path / "usd.csv", "HB_WEST", [40.0] * 48)
    s = site_prices(cfg, T0, T0 + DAY, str(usd), "csv", "HB_WEST")
    assert s.currency == "USD"
    assert np.allclose(s.values, 40.0)  # not 44.0
    own = site_prices(cfg, T0, T0 + DAY)  # the config's own EUR file is converted
    assert np.allclose(own.values, 55.0) and own.currency == "USD" and "EUR" in own.label


def test_a_non_usd_prices_file_needs_a_rate(tmp_path: Path) -> None:
    cfg = _eur_config(tmp_path)
    eur = _csv(tmp_path / "de.csv", "price_eur_mwh", [80.0] * 48)
    with pytest.raises(DataError, match="EUR"):
        site_prices(cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh")
    with pytest.raises(DataError, match="rate"):
        site_prices(cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh", currency="EUR")
    s = site_prices(
        cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh", currency="EUR", usd_per_unit=1.08
    )
    assert np.allclose(s.values, 80.0 * 1.08) and "EUR" in s.label


def test_a_rate_for_prices_already_in_usd_is_refused_not_ignored(tmp_path: Path) -> None:
    """The analyst's walk (session 23): --usd-per-unit 2 on a USD file (no
    --price-currency, or USD) changed nothing and said nothing."""
    cfg = _eur_config(tmp_path)
    usd = _csv(tmp_path / "usd.csv", "HB_WEST", [40.0] * 48)
    for currency in (None, "USD"):
        with pytest.raises(DataError, match=r"--usd-per-unit 2 .*USD.*--price-currency"):
            site_prices(
                cfg, T0, T0 + DAY, str(usd), "csv", "HB_WEST", currency=currency, usd_per_unit=2.0
            )
    s = site_prices(cfg, T0, T0 + DAY, str(usd), "csv", "HB_WEST", usd_per_unit=1.0)
    assert np.allclose(s.values, 40.0)  # a rate of 1 says what is true


def _gappy(tmp_path: Path, gap_at: list[int], days: int = 4) -> Path:
    """Hourly USD prices from T0 - 1 day, NaN (empty) at the given hour offsets."""
    vals: list[float] = [200.0 + 10 * (i % 3) for i in range(24 * days)]
    path = _csv(tmp_path / "p.csv", "HB_WEST", vals, start=T0 - DAY)
    lines = path.read_text().splitlines()
    for h in gap_at:
        ts = lines[h + 1].split(",")[0]
        lines[h + 1] = f"{ts},"
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(prices: Path, *extra: str) -> list[str]:
    from tests.conftest import EXAMPLE

    return [
        "backtest",
        "--config",
        str(EXAMPLE),
        "--prices",
        str(prices),
        "--price-format",
        "csv",
        "--price-column",
        "HB_WEST",
        "--from",
        "2023-11-15T00:00:00Z",
        "--to",
        "2023-11-16T00:00:00Z",
        "--decision-step",
        "1h",
        "--horizon",
        "12h",
        "--policy",
        "threshold,best-mode,oracle",
        "--quiet",
        *extra,
    ]


def test_a_gap_in_the_history_before_from_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [5])  # 05:00 on the day BEFORE --from
    assert main(_argv(prices)) == 2
    err = capsys.readouterr().err
    assert "one day before --from" in err and "--horizon" in err and "--fill" in err
    assert "2023-11-14T05:00:00Z" in err


def test_fill_bridges_a_gap_on_purpose_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [30, 31])  # 06:00 and 07:00 of the period
    assert main(_argv(prices)) == 2
    capsys.readouterr()
    assert main(_argv(prices, "--fill", "hold")) == 0
    out = capsys.readouterr().out
    assert "2 missing real-time intervals filled (hold)" in out


def test_report_says_currency_information_and_dr_na(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [])
    assert main(_argv(prices, "--json")) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["currency"] == "USD" and doc["price_visibility"] == "after-interval"
    assert doc["market"] is None  # a plain CSV names no market
    assert doc["strongest_baseline"] in ("threshold", "best-mode")
    assert all(p["dr_compliance"] is None for p in doc["policies"])  # no DR step: n/a
    assert main(_argv(prices, "--market", "PJM", "--foreign-tariff")) == 0
    out = capsys.readouterr().out
    assert "'ERCOT 4CP' is ERCOT's but the prices are PJM's: applied anyway" in out
    assert "DR compliance" in out and "n/a" in out and "100.0% of 0" not in out
    assert "currency: USD" in out and "PJM; day-ahead published 13:30 America/New_York" in out


def test_the_report_says_where_the_hashprice_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analyst's walk (session 23): without --btc the report said "hashprice of the
    previous UTC day" while every step used the site file's fixed figure (mining revenue
    38 % under the real hashprice's, and nobody told)."""
    import json

    from scheduler.cli.main import main
    from tests.conftest import EXAMPLE

    prices = _gappy(tmp_path, [])
    assert main(_argv(prices, "--policy", "threshold")) == 0
    out = capsys.readouterr().out
    from models.site import load_site

    fixed = load_site(EXAMPLE).mining.hashprice_usd_per_ths_day
    assert "hashprice of the previous UTC day" not in out, out
    assert f"hashprice fixed at {fixed:g} USD per TH/s per day" in out and "no --btc" in out
    assert main(_argv(prices, "--policy", "threshold", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    said = f"fixed at {fixed:g} USD per TH/s per day ([mining], no --btc)"
    assert doc["hashprice_source"] == said


def test_a_strongest_baseline_that_broke_dr_caps_is_flagged() -> None:
    """The analyst's walk (session 23): the strongest baseline is the rule with the most
    profit, and breaking a DR cap costs nothing in the settlement, so it could be a rule
    that broke them (2021: best-mode, 96.4 % compliance) with nothing said."""
    from scheduler.cli.backtest_report import baseline_words

    class R:
        def __init__(self, name: str, compliance: float | None, steps: int) -> None:
            self.name, self.dr_compliance, self.dr_steps = name, compliance, steps

    said = baseline_words(R("best-mode", 0.964, 336))  # type: ignore[arg-type]
    assert said.startswith("best-mode (broke DR caps in 12 of 336 DR steps"), said
    assert "no penalty" in said, said
    assert baseline_words(R("best-mode+peaks", 1.0, 336)) == "best-mode+peaks"  # type: ignore[arg-type]
    assert baseline_words(R("threshold", None, 0)) == "threshold"  # type: ignore[arg-type]


def test_option_errors_say_the_real_default_and_refuse_a_zero_streak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analyst's walk (session 23): --blend-tau-h's error said "(default 1)", the
    default being 2; --curtail-after 0 ran as 1 and was labelled "threshold(0/1)"."""
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [])
    assert main(_argv(prices, "--blend-tau-h", "-1")) == 2
    assert "(default 2)" in capsys.readouterr().err
    for flag in ("--curtail-after", "--resume-after"):
        assert main(_argv(prices, "--policy", "threshold", flag, "0")) == 2
        err = capsys.readouterr().err
        assert f"{flag} 0" in err and "1 or more" in err, err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--from", "2023-11-15T00:07:00Z"), "--from 2023-11-15T00:07:00Z: must fall on the"),
        (("--to", "2023-11-16T00:07:00Z"), "--to 2023-11-16T00:07:00Z: must fall on the"),
        (("--horizon", "10min"), "--horizon 10min: must be a whole number of"),
        (("--decision-step", "7min"), "--decision-step 7min: must divide a day"),
    ],
)
def test_times_off_the_decision_grid_are_named_by_their_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, str], said: str
) -> None:
    """The analyst's walk (session 23): each of these said "horizon 5753min is not a
    whole number of 15min steps", a horizon nobody asked for."""
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [])
    argv = _argv(prices)
    flag, value = extra
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err, err


def test_horizon_cut_at_the_end_of_data_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [], days=2)  # the data end at --to: no horizon beyond
    assert main(_argv(prices)) == 0
    assert "horizon cut at the end of data" in capsys.readouterr().out


def test_a_forecast_needs_a_market_and_a_matching_currency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [])
    assert main(_argv(prices, "--forecast", str(prices))) == 2
    assert "--forecast needs --market" in capsys.readouterr().err
    eur = _csv(tmp_path / "eur.csv", "price_eur", [60.0] * 96, start=T0 - DAY)
    argv = _argv(eur)
    argv[argv.index("HB_WEST")] = "price_eur"
    assert main(argv) == 2  # EUR read as USD is refused
    assert "EUR" in capsys.readouterr().err
    assert main([*argv, "--price-currency", "EUR", "--usd-per-unit", "1.1"]) == 0
    out = capsys.readouterr().out
    assert "EUR/MWh -> USD/MWh at 1.1 USD/EUR" in out and "currency: USD" in out


def test_market_table_covers_the_markets_named_by_the_issue() -> None:
    from models.markets import MARKETS, market_info

    for name in ("ERCOT", "PJM", "CAISO", "MISO", "NYISO", "SPP", "EPEX", "Nord Pool"):
        m = market_info(name)
        assert 0 < m.dam_published_min < 24 * 60 and m.rt_settlement_s in (300, 900)
    assert market_info("epex").currency == "EUR" and MARKETS["ERCOT"].dam_published_local == "13:30"
    with pytest.raises(ValueError, match="valid"):
        market_info("AEMO")


def test_a_tariff_of_another_market_is_refused_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [])
    assert main(_argv(prices, "--market", "CAISO")) == 2
    err = capsys.readouterr().err
    assert "'ERCOT 4CP' is ERCOT's but the prices are CAISO's" in err and "--foreign-tariff" in err
    assert main(_argv(prices)) == 0  # no market named: said, not refused
    assert "'ERCOT 4CP' is ERCOT's; the prices name no market" in capsys.readouterr().out


def _pjm_files(tmp_path: Path) -> tuple[Path, Path]:
    """A small synthetic PJM pair, hourly USD from 2023-11-14 to 2023-11-18 UTC: real-time
    prices, and day-ahead prices that are 500 USD/MWh on operating day 2023-11-16 in PJM's
    clock (Eastern: 05:00Z to 05:00Z) and 50 on every other day."""
    start, hours = T0 - DAY, 24 * 4
    rt = [40.0 + 5 * (i % 7) for i in range(hours)]
    d16 = T0 + DAY + 5 * 3600  # 2023-11-16T00:00 EST
    da = [500.0 if d16 <= start + 3600 * i < d16 + DAY else 50.0 for i in range(hours)]
    return (
        _csv(tmp_path / "pjm_rt.csv", "WESTERN_HUB", rt, start=start),
        _csv(tmp_path / "pjm_da.csv", "WESTERN_HUB", da, start=start),
    )


def test_a_pjm_file_runs_with_pjm_information_and_the_tariff_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other markets cannot be judged here (only ERCOT data is at hand), but a user's PJM
    file must get PJM's information model: its day-ahead publication time in its own clock,
    said in the report, and the example's ERCOT 4CP tariff refused or reported."""
    import json

    from scheduler.cli.main import main

    rt, da = _pjm_files(tmp_path)
    argv = _argv(rt, "--market", "PJM", "--forecast", str(da), "--forecast-format", "csv")
    argv[argv.index("HB_WEST")] = "WESTERN_HUB"
    assert main(argv) == 2  # the ERCOT 4CP windows are not PJM's
    assert "'ERCOT 4CP' is ERCOT's but the prices are PJM's" in capsys.readouterr().err
    argv += ["--foreign-tariff", "--policy", "scheduler,best-mode,oracle"]
    assert main(argv) == 0  # the scheduler plans on PJM's day-ahead timeline
    out = capsys.readouterr().out
    assert "market: PJM; day-ahead published 13:30 America/New_York" in out
    assert "'ERCOT 4CP' is ERCOT's but the prices are PJM's: applied anyway" in out
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["market"]["name"] == "PJM" and doc["market"]["rt_settlement_s"] == 300
    assert doc["market"]["dam_published_local"] == "13:30" and doc["currency"] == "USD"
    assert {p["policy"] for p in doc["policies"]} >= {"scheduler", "best-mode", "oracle"}


@pytest.mark.parametrize(
    ("market", "seen_at_19z"),
    [("PJM", True), ("ERCOT", False)],  # 19:00Z is 14:00 in New York, 13:00 in Chicago
)
def test_day_ahead_prices_appear_at_the_markets_own_publication_time(
    tmp_path: Path, market: str, seen_at_19z: bool
) -> None:
    from models.market import load_csv_series
    from models.markets import MARKETS
    from models.site import load_site
    from scheduler.backtest.forecast import dam_forecast
    from scheduler.backtest.period import prepare
    from tests.conftest import EXAMPLE

    rt_path, da_path = _pjm_files(tmp_path)
    cfg = load_site(EXAMPLE)
    rt = load_csv_series(rt_path, "WESTERN_HUB")
    da = load_csv_series(da_path, "WESTERN_HUB")
    m = MARKETS[market]
    setup = prepare(cfg, rt, T0, T0 + DAY, 3600, 12 * 3600, da, market=m, foreign_tariff=True)
    assert setup.dam is not None
    dam = setup.dam
    # 2023-11-16 in both clocks: from 00:00 Chicago (06:00Z), 5 hours into New York's day
    d16 = T0 + DAY + 6 * 3600

    def ahead_of(hour_utc: int) -> np.ndarray:
        k = setup.k0 + hour_utc
        f = dam_forecast(dam, setup.mkt_day, setup.mkt_min, k, 16, 24, m.dam_published_min)
        return f[setup.inp.grid.starts_s[k : k + 16] >= d16]

    assert len(ahead_of(18)) and (ahead_of(18) == 50.0).all()  # 13:00 NY: not yet published
    assert bool((ahead_of(19) == 500.0).any()) is seen_at_19z


def test_a_window_names_its_market_by_a_whole_word() -> None:
    """The analyst's walk (session 25, finding 5): market names were matched inside words,
    so "Summer peak (utility queue)" was refused as SDAC's ("EU" in "QUEUE") on ERCOT
    prices, where a window naming no market is to be reported, not refused."""
    from models.markets import MARKETS, tariff_market_problems

    ercot = MARKETS["ERCOT"]
    names = ["Summer peak (utility queue)", "Neutral hours", "DEUTSCHLAND peak"]
    conflicts, notes = tariff_market_problems(names, ercot)
    assert conflicts == [], conflicts
    assert len(notes) == 3 and all("names no market" in n for n in notes), notes
    conflicts, _ = tariff_market_problems(["EU 2024 peak", "PJM-5CP", "Nord Pool hours"], ercot)
    assert len(conflicts) == 3, conflicts
    assert tariff_market_problems(["ERCOT 4CP"], ercot) == ([], [])


def test_a_market_in_another_currency_needs_the_files_currency_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analyst's walk (session 25, finding 2a): --market SDAC (EUR in the market table)
    read a price file given without --price-currency as USD, with no word."""
    from scheduler.cli.main import main

    prices = _csv(tmp_path / "p.csv", "HB_WEST", [60.0] * 96, start=T0 - DAY, step=3600)
    argv = _argv(prices, "--market", "SDAC", "--foreign-tariff")
    assert main(argv) == 2
    assert "--price-currency EUR" in capsys.readouterr().err
    assert main([*argv, "--price-currency", "USD"]) == 0  # already converted: said so


def test_a_currency_column_is_read_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analyst's walk (session 25, finding 2c): a file whose every row says EUR in a
    ``currency`` column was read as USD."""
    from scheduler.cli.main import main

    rows = ["interval_start_utc,HB_WEST,currency"]
    rows += [f"{_iso(T0 - DAY + i * 3600)},60,EUR" for i in range(96)]
    f = tmp_path / "cur.csv"
    f.write_text("\n".join(rows) + "\n")
    assert main(_argv(f)) == 2
    err = capsys.readouterr().err
    assert "'currency' column says EUR" in err and "--price-currency EUR" in err, err
    assert main(_argv(f, "--price-currency", "EUR", "--usd-per-unit", "1.1")) == 0
    f.write_text(f.read_text().replace(",EUR\n", ",USD\n", 3))
    assert main(_argv(f, "--price-currency", "EUR", "--usd-per-unit", "1.1")) == 2
    assert "EUR, USD" in capsys.readouterr().err


def test_price_per_kwh_describes_a_csv_file_never_an_ercot_one(tmp_path: Path) -> None:
    """The analyst's walk (session 25, finding 1): --price-per kWh for a csv of real-time
    prices also rescaled the ERCOT day-ahead --forecast (USD/MWh by its format) by 1,000:
    the scheduler saw day-ahead prices 1,000 times too high and never mined (22 % of the
    oracle where 97 %). An ERCOT file is per MWh; the flag is refused on one."""
    import argparse

    from scheduler.cli.options import read_prices

    cfg = _eur_config(tmp_path)
    dam = _csv(tmp_path / "dam.csv", "HB_WEST", [40.0] * 48)
    args = argparse.Namespace(
        timestamp_column="interval_start_utc", price_timezone=None,
        price_currency=None, usd_per_unit=None, price_per="kWh",
    )  # fmt: skip
    fc = read_prices(cfg, args, T0, T0 + DAY, str(dam), "ercot-dam", "HB_WEST", forecast=True)
    assert np.allclose(fc.values, 40.0), fc.values[:3]
    with pytest.raises(DataError, match="per MWh, not per kWh"):
        read_prices(cfg, args, T0, T0 + DAY, str(dam), "ercot-dam", "HB_WEST")


def _iso(t: int) -> str:
    from models.market import iso

    return iso(t)


def test_a_gap_after_to_that_no_decision_reads_is_held_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analyst's walk (session 25, finding 6b): a real-time gap after --to, in the
    horizon, was refused, though no interval after --to is settled and no decision reads
    a realised price past it; filled with --fill, the note said the intervals were
    "settled at filled prices", which they never are."""
    from scheduler.cli.main import main

    prices = _gappy(tmp_path, [24 + 24 + 5])  # 05:00 the day after --to: in the horizon
    assert main(_argv(prices)) == 0
    out = capsys.readouterr().out
    assert "1 missing real-time intervals after --to held" in out, out
    assert "settled at filled prices" not in out
    (tmp_path / "whole").mkdir()
    base = _gappy(tmp_path / "whole", [])  # the same prices without the gap
    assert main(_argv(base)) == 0
    same = capsys.readouterr().out
    profit = [line for line in out.splitlines() if line.startswith("| profit")]
    assert profit == [line for line in same.splitlines() if line.startswith("| profit")]


def test_a_day_ahead_gap_on_a_day_no_decision_saw_published_is_held(tmp_path: Path) -> None:
    """The analyst's walk (session 25, finding 6a): a day-ahead file ending at the last
    published day was accepted ("not read"), but the same file with a gap on that later
    day was refused."""
    from models.market import load_csv_series
    from models.markets import MARKETS
    from models.site import load_site
    from scheduler.backtest.period import prepare
    from tests.conftest import EXAMPLE

    rt_path, da_path = _pjm_files(tmp_path)
    lines = da_path.read_text().splitlines()
    # 2023-11-17T12:00Z, in a 48 h horizon: operating day 17 Nov (Eastern) is published on
    # the 16th, after the last decision (15 Nov 23:00Z); no decision reads it
    gap = 3 * 24 + 12 + 1  # hours from the file's start, plus the header
    lines[gap] = lines[gap].rsplit(",", 1)[0] + ","
    da_path.write_text("\n".join(lines) + "\n")
    cfg = load_site(EXAMPLE)
    rt = load_csv_series(rt_path, "WESTERN_HUB")
    da = load_csv_series(da_path, "WESTERN_HUB")
    setup = prepare(
        cfg, rt, T0, T0 + DAY, 3600, 48 * 3600, da, market=MARKETS["PJM"], foreign_tariff=True
    )
    assert any("day-ahead" in n and "no decision saw published" in n for n in setup.notes), (
        setup.notes
    )
