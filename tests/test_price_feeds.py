"""The daemon's price feeds: the config source, a file, an HTTP endpoint, a command."""

from __future__ import annotations

import asyncio
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from models.site import parse_site
from scheduler.service.daemon import Daemon
from tests.conftest import site_dict
from tests.support.httpserver import loopback_http

CSV = (
    "interval_start_utc,price\n"
    "2026-08-10T00:00:00Z,20\n2026-08-10T01:00:00Z,35.5\n2026-08-10T02:00:00Z,41\n"
)


def daemon_with(tmp_path: Path, feed: dict[str, Any]) -> Daemon:
    d = site_dict()
    d["daemon"] = {"price_feed": feed}
    return Daemon(parse_site(d, "x.toml", str(tmp_path)), tmp_path / "s.db")


def test_file_and_command_feeds(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    s = asyncio.run(
        daemon_with(
            tmp_path, {"kind": "file", "path": "p.csv", "column": "price"}
        ).feeds.load_prices(0)
    )
    assert s.value_at(1_786_323_600) == pytest.approx(35.5)  # 2026-08-10T01:00Z
    cmd = [sys.executable, "-c", f"print({CSV!r}, end='')"]
    s = asyncio.run(
        daemon_with(
            tmp_path, {"kind": "command", "command": cmd, "column": "price"}
        ).feeds.load_prices(0)
    )
    assert s.value_at(1_786_327_200) == pytest.approx(41.0) and s.label.startswith("command ")


def test_a_feed_in_local_time_eur_per_kwh_is_read_in_usd_per_mwh(tmp_path: Path) -> None:
    """A feed of another market says its zone, currency and unit as [prices] does; before,
    a file, HTTP or command feed was read as UTC-less USD/MWh whatever it held (a
    newcomer's walk: no key could say so), so EUR/kWh came in 1,000 times too cheap."""
    local = "timestamp,eur_kwh\n2026-08-10 03:00,0.2\n2026-08-10 04:00,0.3\n2026-08-10 05:00,0.4\n"
    (tmp_path / "p.csv").write_text(local)
    feed = {
        "kind": "file",
        "path": "p.csv",
        "column": "eur_kwh",
        "timestamp_column": "timestamp",
        "timezone": "Europe/Berlin",  # CEST: UTC+2 on 10 August
        "currency": "EUR",
        "usd_per_unit": 1.1,
        "per": "kWh",
    }
    s = asyncio.run(daemon_with(tmp_path, feed).feeds.load_prices(0))
    assert s.value_at(1_786_327_200) == pytest.approx(0.3 * 1.1 * 1000)  # 02:00Z = 04:00+2
    assert "EUR/kWh -> USD/MWh" in s.label


def test_a_feed_in_another_currency_needs_its_rate(tmp_path: Path) -> None:
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="usd_per_unit"):
        daemon_with(tmp_path, {"kind": "file", "path": "p.csv", "column": "x", "currency": "EUR"})


def test_http_feed(tmp_path: Path) -> None:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(CSV.encode())

        def log_message(self, *a: Any) -> None:
            pass

    with loopback_http(H) as base:
        url = base + "/prices.csv"
        s = asyncio.run(
            daemon_with(
                tmp_path, {"kind": "http", "url": url, "column": "price"}
            ).feeds.load_prices(0)
        )
        assert s.value_at(1_786_320_000) == pytest.approx(20.0)


def test_a_failing_feed_is_reported_not_fatal(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; sys.exit('upstream down')"]
    d = daemon_with(tmp_path, {"kind": "command", "command": cmd, "column": "price"})

    async def go() -> None:
        d.store.start()
        await d.feeds.refresh_prices()
        d.store.close()

    asyncio.run(go())
    assert d.feeds.price_error is not None and "upstream down" in d.feeds.price_error
    assert d.feeds.prices is None


@pytest.mark.parametrize("price", ["1e300", "5000000", "-2e6"])
def test_a_feed_price_no_market_has_is_an_error_not_a_good_reading(
    tmp_path: Path, price: str
) -> None:
    """The SRE's walk (session 24, D4): a feed serving 1e300 was a good reading: it lifted
    the fail-safe of a silent feed, every re-plan then failed with "solver highs ended with
    error (Unknown)", and /v1/status said the prices were fresh with no error. A signed
    signal's price is held to +-1,000,000 USD/MWh; a feed's is held to the same."""
    bad = CSV.replace("35.5", price)
    (tmp_path / "p.csv").write_text(bad)
    d = daemon_with(tmp_path, {"kind": "file", "path": "p.csv", "column": "price"})

    async def go() -> None:
        d.store.start()
        await d.feeds.refresh_prices()
        d.store.close()

    asyncio.run(go())
    assert d.feeds.prices is None
    err = d.feeds.price_error or ""
    named = price in err or f"{float(price):,.0f}" in err
    assert "p.csv" in err and "line 3" in err and named, err


def test_hashprice_from_a_command_and_an_http_endpoint(tmp_path: Path) -> None:
    """The network's figures from a command (as a site would script mempool.space or its
    node), a pool's USD/PH/day from HTTP; a command that fails keeps the value."""

    def hp_daemon(feed: dict[str, Any]) -> Daemon:
        d = site_dict()
        d["daemon"] = {"hashprice_feed": feed}
        return Daemon(parse_site(d, "x.toml", str(tmp_path)), tmp_path / "s.db")

    net = tmp_path / "network.json"
    net.write_text('{"btc_price_usd": 90000, "difficulty": 1.1e14, "fees_btc_per_block": 0.05}')
    cmd = [sys.executable, "-c", f"print(open({str(net)!r}).read())"]
    d = hp_daemon({"kind": "command", "command": cmd, "format": "network"})

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"hashprice": [{"usd": 49.5}]}')

        def log_message(self, *a: Any) -> None:
            pass

    with loopback_http(H) as base:
        url = base + "/hashprice"
        h = hp_daemon({"kind": "http", "url": url, "format": "json", "key": "hashprice.0.usd",
                       "per": "PH"})  # fmt: skip

        async def go() -> None:
            await d.feeds.refresh_hashprice()
            await h.feeds.refresh_hashprice()

        asyncio.run(go())
    assert (
        d.feeds.hashprice is not None
        and 0.03 < d.feeds.hashprice < 0.1
        and d.feeds.hashprice_error is None
    )
    assert h.feeds.hashprice == pytest.approx(0.0495)
    good = d.feeds.hashprice
    net.unlink()  # the command now fails
    asyncio.run(d.feeds.refresh_hashprice())
    assert d.feeds.hashprice == good and "hashprice command exited 1" in (
        d.feeds.hashprice_error or ""
    )


def test_feed_config_errors_name_the_key(tmp_path: Path) -> None:
    from models.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        daemon_with(tmp_path, {"kind": "http", "column": "price"})
    assert "needs url" in str(exc.value)
    d = site_dict()
    d["daemon"] = {"hashprice_feed": {"kind": "file", "path": "hp.json", "format": "json"}}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml", str(tmp_path))
    assert "daemon.hashprice_feed" in str(exc.value) and "needs key" in str(exc.value)


def test_daemon_grid_aligns_to_the_first_resolution_step(tmp_path: Path) -> None:
    d = site_dict()
    d["daemon"] = {"resolution": "15min:2h,1h", "horizon": "6h"}
    daemon = Daemon(parse_site(d, "x.toml", str(tmp_path)), tmp_path / "s.db")
    now = 1_699_999_200 + 310  # 5 min 10 s past a quarter hour
    grid = daemon.planning.grid(now)
    assert grid.starts_s[0] == 1_699_999_200
    daemon.store.close()
