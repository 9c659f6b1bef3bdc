"""A newcomer's own price data: another market's CSV in local time, and its mistakes.

Each test is one step of the walk through docs/configuration.md and docs/backtest.md with
a file that is not ERCOT's: hourly EUR prices stamped in Europe/Berlin local time, across
both daylight-saving changes, and the malformed files a user writes by accident.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from models.errors import DataError
from models.market import load_csv_series, site_prices
from models.site import load_site

BERLIN = ZoneInfo("Europe/Berlin")


def _local_hours(path: Path, first_utc: datetime, hours: int) -> Path:
    """An EPEX-like export: one row per hour, local wall-clock time, no offset."""
    rows = ["timestamp_local,price_eur_mwh"]
    for h in range(hours):
        local = (first_utc + timedelta(hours=h)).astimezone(BERLIN)
        rows.append(f"{local:%Y-%m-%d %H:%M},{50 + h}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_local_time_file_across_the_autumn_change_is_read_in_order(tmp_path: Path) -> None:
    # 2023-10-29: 02:00-03:00 happens twice in Berlin (CEST, then CET); the export lists
    # "02:00" twice, in that order, and each row is its own hour
    first = datetime(2023, 10, 28, 22, tzinfo=UTC)  # 00:00 CEST on the 29th
    f = _local_hours(tmp_path / "fall.csv", first, 6)
    assert f.read_text().count("2023-10-29 02:00") == 2
    s = load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    assert s.interval_s == 3600
    assert s.start_s == int(first.timestamp())
    assert s.values.tolist() == [50, 51, 52, 53, 54, 55]


def test_a_local_time_file_across_the_spring_change_is_read(tmp_path: Path) -> None:
    first = datetime(2023, 3, 25, 23, tzinfo=UTC)  # 00:00 CET on the 26th; 02:00 skipped
    f = _local_hours(tmp_path / "spring.csv", first, 6)
    assert "2023-03-26 02:00" not in f.read_text()
    s = load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    assert s.start_s == int(first.timestamp()) and s.values.tolist() == [50, 51, 52, 53, 54, 55]


def test_a_local_time_the_clocks_skip_is_refused_by_line(tmp_path: Path) -> None:
    f = tmp_path / "gap.csv"
    f.write_text(
        "timestamp_local,price_eur_mwh\n2023-03-26 01:00,50\n2023-03-26 02:00,51\n"
        "2023-03-26 03:00,52\n"
    )
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    text = str(exc.value)
    assert "line 3" in text and "'2023-03-26 02:00'" in text and "does not exist" in text
    assert "nonexistent" not in text  # pandas' own wording, which names no line


def test_a_repeated_local_hour_given_once_is_refused_by_line(tmp_path: Path) -> None:
    f = tmp_path / "once.csv"
    f.write_text(
        "timestamp_local,price_eur_mwh\n2023-10-29 01:00,50\n2023-10-29 02:00,51\n"
        "2023-10-29 03:00,52\n"
    )
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    text = str(exc.value)
    assert "line 3" in text and "occurs twice" in text and "Europe/Berlin" in text
    assert "ambiguous' argument" not in text


def test_no_offset_error_says_how_to_name_the_zone(tmp_path: Path) -> None:
    f = _local_hours(tmp_path / "p.csv", datetime(2023, 3, 20, tzinfo=UTC), 3)
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local")
    assert "--price-timezone" in str(exc.value) and "[prices] timezone" in str(exc.value)


def _eu_site(tmp_path: Path, prices: str, extra: str = "") -> Path:
    site = tmp_path / "site.toml"
    site.write_text(
        f"""
[site]
name = "EU walk"
timezone = "Europe/Berlin"
interconnect_kw = 2000

[prices]
format = "csv"
path = "{prices}"
column = "price_eur_mwh"
timestamp_column = "timestamp_local"
currency = "EUR"
usd_per_unit = 1.08
{extra}

[[devices]]
name = "s21"
kind = "asic"
model = "S21"
count = 10
"""
    )
    return site


def test_prices_section_names_the_time_zone_of_its_file(tmp_path: Path) -> None:
    first = datetime(2023, 10, 28, 22, tzinfo=UTC)
    _local_hours(tmp_path / "fall.csv", first, 30)
    config = load_site(_eu_site(tmp_path, "fall.csv", 'timezone = "Europe/Berlin"'))
    start = int(first.timestamp())
    s = site_prices(config, start, start + 24 * 3600)
    assert s.start_s == start and s.values[0] == pytest.approx(50 * 1.08)
    # without it, the error names both ways to say it
    with pytest.raises(DataError, match=r"\[prices\] timezone"):
        site_prices(load_site(_eu_site(tmp_path, "fall.csv")), start, start + 24 * 3600)


def test_prices_timezone_is_checked_like_the_sites(tmp_path: Path) -> None:
    from models.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_site(_eu_site(tmp_path, "fall.csv", 'timezone = "CET+1"'))
    assert "prices.timezone" in str(exc.value) and "IANA" in str(exc.value)


def test_plan_takes_the_currency_its_error_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    first = datetime(2023, 10, 28, 22, tzinfo=UTC)
    prices = _local_hours(tmp_path / "fall.csv", first, 30)
    site = _eu_site(tmp_path, "fall.csv")
    argv = ["plan", "--config", str(site), "--prices", str(prices), "--price-format", "csv"]
    argv += ["--price-column", "price_eur_mwh", "--timestamp-column", "timestamp_local"]
    argv += ["--price-timezone", "Europe/Berlin", "--start", "2023-10-28T22:00:00Z"]
    argv += ["--horizon", "24h", "--step", "1h"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--price-currency EUR --usd-per-unit RATE" in err  # what the user is told to add
    assert main([*argv, "--price-currency", "EUR", "--usd-per-unit", "1.08"]) == 0
    out = capsys.readouterr().out
    assert "EUR/MWh -> USD/MWh at 1.08 USD/EUR" in out


def test_audit_export_answers_a_bad_range_and_out_path_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.audit.store import Store
    from scheduler.cli.main import main

    db = tmp_path / "state.db"
    Store(db).close()
    base = ["audit", "export", "--db", str(db)]
    # --to before --from gave an empty file and exit 0, as if nothing had happened
    assert main([*base, "--from", "2026-12-03T00:00:00Z", "--to", "2026-12-02T00:00:00Z"]) == 2
    assert "--to 2026-12-02T00:00:00Z must be after --from" in capsys.readouterr().err
    # a directory that does not exist was a FileNotFoundError traceback
    out = tmp_path / "no-such-dir" / "events.csv"
    span = ["--from", "2026-12-02T00:00:00Z", "--to", "2026-12-03T00:00:00Z"]
    assert main([*base, *span, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "No such file or directory" in err


@pytest.mark.parametrize(
    ("currency", "rate", "wanted"),
    [
        ("EUR", 0.0, "--usd-per-unit 0: USD per 1 EUR must be a number > 0"),
        ("EUR", -1.08, "--usd-per-unit -1.08: USD per 1 EUR must be a number > 0"),
        ("EUR", float("nan"), "--usd-per-unit nan: USD per 1 EUR must be a number > 0"),
        ("EURO", 1.08, "--price-currency 'EURO' is not a 3-letter currency code"),
    ],
)
def test_a_rate_or_currency_that_cannot_be_meant_is_refused(
    tmp_path: Path, currency: str, rate: float, wanted: str
) -> None:
    # a rate of 0 was read as 1 USD/EUR (and said so), a negative one flipped every price
    first = datetime(2023, 10, 28, 22, tzinfo=UTC)
    prices = _local_hours(tmp_path / "fall.csv", first, 30)
    config = load_site(_eu_site(tmp_path, "fall.csv"))
    start = int(first.timestamp())
    with pytest.raises(DataError) as exc:
        site_prices(
            config, start, start + 3600, str(prices), "csv", "price_eur_mwh",
            "timestamp_local", "Europe/Berlin", currency, rate,
        )  # fmt: skip
    assert wanted in str(exc.value)


def test_validate_reads_the_price_file_the_site_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    # "valid" was printed for a site whose price file did not exist or could not be read;
    # the first plan or the daemon's start found out
    assert main(["validate", str(_eu_site(tmp_path, "missing.csv"))]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err
    _local_hours(tmp_path / "fall.csv", datetime(2023, 10, 28, 22, tzinfo=UTC), 30)
    assert main(["validate", str(_eu_site(tmp_path, "fall.csv"))]) == 2
    assert "[prices] timezone" in capsys.readouterr().err  # no offsets, no zone named
    site = _eu_site(tmp_path, "fall.csv", 'timezone = "Europe/Berlin"')
    assert main(["validate", str(site)]) == 0
    out = capsys.readouterr().out
    assert "prices: fall.csv:price_eur_mwh" in out and "30 intervals of 60 min" in out
    assert "2023-10-28T22:00:00Z to 2023-10-30T04:00:00Z" in out


def test_a_missing_column_error_says_how_to_name_it(tmp_path: Path) -> None:
    f = _local_hours(tmp_path / "p.csv", datetime(2023, 3, 20, tzinfo=UTC), 3)
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh")  # the default timestamp column is not in it
    text = str(exc.value)
    assert "no column 'interval_start_utc'" in text and "--timestamp-column" in text
    assert "[prices] timestamp_column" in text


def test_a_semicolon_file_is_named_as_such(tmp_path: Path) -> None:
    # a spreadsheet export in a European locale: ';' between fields, ',' in numbers
    f = tmp_path / "de.csv"
    f.write_text("timestamp_local;price_eur_mwh\n2023-03-20 00:00;60,5\n")
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    text = str(exc.value)
    assert "separated by ';'" in text and "comma-separated" in text


def test_a_row_with_an_extra_field_is_named_by_line(tmp_path: Path) -> None:
    # a decimal comma in a comma-separated file: "12,5" is two fields
    f = tmp_path / "p.csv"
    f.write_text("ts,price\n2023-03-20T00:00:00Z,60.5\n2023-03-20T01:00:00Z,12,5\n")
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price", "ts")
    text = str(exc.value)
    assert "line 3: 3 fields where the header has 2" in text and "decimal comma" in text
    assert "C error" not in text


def test_the_daemon_reads_a_local_time_prices_file_through_its_config_feed(
    tmp_path: Path,
) -> None:
    import asyncio

    from scheduler.service.daemon import Daemon

    first = datetime(2023, 10, 28, 22, tzinfo=UTC)
    _local_hours(tmp_path / "fall.csv", first, 30)
    config = load_site(_eu_site(tmp_path, "fall.csv", 'timezone = "Europe/Berlin"'))
    daemon = Daemon(config, tmp_path / "s.db")
    s = asyncio.run(daemon.feeds.load_prices(first.timestamp()))
    # the repeated 02:00 (CEST, then CET) are two hours: 02:00 CET is 01:00Z, the 4th row
    assert s.value_at(int(first.timestamp()) + 3 * 3600) == pytest.approx(53 * 1.08)


def test_a_per_kwh_file_on_the_command_line_is_not_read_per_mwh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    # a retail tariff export in USD/kWh: 0.06 read as USD/MWh made energy free
    rows = "".join(f"2023-03-20T{h:02d}:00:00Z,0.0{5 + h % 4}\n" for h in range(24))
    (tmp_path / "kwh.csv").write_text("interval_start_utc,price_usd_kwh\n" + rows)
    site = _eu_site(tmp_path, "kwh.csv")
    argv = ["plan", "--config", str(site), "--prices", str(tmp_path / "kwh.csv")]
    argv += ["--price-column", "price_usd_kwh", "--start", "2023-03-20T00:00:00Z"]
    argv += ["--horizon", "6h", "--step", "1h"]
    assert main(argv) == 2
    assert "looks like prices per kWh" in capsys.readouterr().err
    assert main([*argv, "--price-per", "kWh"]) == 0
    out = capsys.readouterr().out
    assert "(USD/kWh -> USD/MWh)" in out and "min 50.00" in out and "max 80.00 USD/MWh" in out


def test_an_own_hashprice_file_is_told_the_layout_btc_takes(tmp_path: Path) -> None:
    from models.market import load_btc_hashprice

    # a hashprice index export: its own column names, and per PH/s
    f = tmp_path / "hashprice.csv"
    f.write_text("timestamp,usd_hashprice_ph_day\n2023-03-20,62.1\n")
    with pytest.raises(DataError) as exc:
        load_btc_hashprice(f)
    text = str(exc.value)
    assert "no column 'date_utc'" in text and "derived_hashprice_usd_per_ths_day" in text
    assert "USD per TH/s per day" in text
    assert "--timestamp-column" not in text  # that flag is the price file's


def test_a_hashprice_file_quoted_per_ph_is_refused_not_planned_on(tmp_path: Path) -> None:
    from models.market import load_btc_hashprice

    # 62.1 USD per PH/s per day, in the TH/s column: mining revenue 1,000 times too high
    f = tmp_path / "btc.csv"
    f.write_text("date_utc,derived_hashprice_usd_per_ths_day\n2023-03-20,0.0621\n2023-03-21,62.1\n")
    with pytest.raises(DataError) as exc:
        load_btc_hashprice(f)
    text = str(exc.value)
    assert "2023-03-21" in text and "62.1 USD per TH/s per day is implausible" in text
    assert "divides by 1000, e.g. 0.0621" in text


def test_an_unknown_zone_or_a_directory_is_answered_by_name(tmp_path: Path) -> None:
    f = _local_hours(tmp_path / "p.csv", datetime(2023, 3, 20, tzinfo=UTC), 3)
    # --price-timezone Mars/Olympus was a ZoneInfoNotFoundError traceback
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone="Mars/Olympus")
    assert "unknown time zone 'Mars/Olympus'" in str(exc.value) and "IANA" in str(exc.value)
    # a directory (or a file without an extension) was "no column ...; columns are []"
    with pytest.raises(DataError, match="is a directory"):
        load_csv_series(tmp_path, "price_eur_mwh", "timestamp_local")
    bare = tmp_path / "prices"
    bare.write_text(f.read_text())
    s = load_csv_series(bare, "price_eur_mwh", "timestamp_local", timezone="Europe/Berlin")
    assert s.values.tolist() == [50, 51, 52]


@pytest.mark.parametrize("timezone", [None, "Europe/Berlin"])
def test_a_file_with_a_header_and_no_rows_is_refused_in_words(
    tmp_path: Path, timezone: str | None
) -> None:
    """A day's export not yet filled in: the header and nothing else. Before, pandas'
    ``IndexError: single positional indexer is out-of-bounds`` came out of `gridsched plan`
    as a traceback."""
    f = tmp_path / "p.csv"
    f.write_text("timestamp_local,price_eur_mwh\n")
    with pytest.raises(DataError) as exc:
        load_csv_series(f, "price_eur_mwh", "timestamp_local", timezone=timezone)
    assert str(f) in str(exc.value) and "no rows" in str(exc.value), exc.value


def test_plan_on_a_header_only_price_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    f = tmp_path / "p.csv"
    f.write_text("interval_start_utc,price\n")
    site = Path(__file__).parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    code = main(["plan", "--config", str(site), "--prices", str(f), "--price-column", "price"])
    err = capsys.readouterr().err
    assert code != 0 and "no rows" in err and "Traceback" not in err, err
