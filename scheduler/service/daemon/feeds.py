"""The price and hashprice feeds: read on their schedule through an async HTTP client or a
command run as a subprocess, never blocking the event loop. A failed reading keeps the last
good value and says why in /v1/status; a price feed silent past its limit brings the
fail-safe cap (:mod:`scheduler.service.daemon.failsafe`), a changed value a re-plan."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from adapters.faults import in_words, is_bug, named, traceback_once
from adapters.neterrors import describe
from adapters.replywords import unreadable
from models.config_daemon import HashpriceFeed, PriceFeed
from models.economics import hashprice_from_feed
from models.errors import DataError
from models.market import Series, demo_prices, in_usd_per_mwh, load_price_file, site_prices
from models.signals import MAX_PRICE
from models.site import FeedKind, Mining, SiteConfig
from scheduler.service.daemon.clock import Clock

log = logging.getLogger("gridsched.daemon")
HTTP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 120.0


class FeedError(Exception):
    """A feed's command that failed or hung, in words."""


def feed_error(exc: BaseException, where: str) -> str:
    """A feed's failure in words for /v1/status and the log, naming ``where`` (its URL,
    command or file) where the error does not: never a Python class name, except a bug's.
    A feed's body is read (``reading`` in :func:`adapters.faults.is_bug`): a library
    choking on it is the feed's fault; a bug is ours and keeps its name."""
    if isinstance(exc, httpx.HTTPStatusError):
        r = exc.response
        return f"{where} answered HTTP {r.status_code} {r.reason_phrase}".rstrip()
    if isinstance(exc, httpx.TimeoutException):
        return f"{where}: no answer within {HTTP_TIMEOUT_S:g} s"
    if isinstance(exc, OSError | httpx.HTTPError):  # the network, a file, a command not found
        return f"{where}: {describe(exc)}"
    if is_bug(exc, reading=True):
        return " ".join(named(exc).split())
    if type(exc) is ValueError:  # the parser's words on what the feed sent
        return f"{where}: {' '.join(str(exc).split())}"
    if type(exc).__module__ == "builtins":  # a library choked on the body (pandas' IndexError)
        return f"{where}: the answer cannot be read ({' '.join(unreadable(exc).split())})"
    return " ".join(describe(exc).split())  # ours are worded where raised


def _log_failure(what: str, kind: FeedKind, exc: BaseException, error: str) -> None:
    """One line for a failed reading; a bug's traceback once per place it was raised."""
    log.warning(
        "%s feed (%s): %s", what, kind.value, error, exc_info=traceback_once(exc, reading=True)
    )


async def fetch(kind: FeedKind, url: str | None, command: tuple[str, ...] | None, what: str) -> str:
    """A feed's body from an HTTP endpoint or a command's stdout."""
    if kind is FeedKind.HTTP:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            resp = await client.get(url or "")
            resp.raise_for_status()
            return resp.text
    proc = await asyncio.create_subprocess_exec(
        *(command or ()), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FeedError(f"{what} command gave no answer within {COMMAND_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()[:300]
        raise FeedError(f"{what} command exited {proc.returncode}: {text}")
    return out.decode(errors="replace")


def _parse_prices(
    text: str, fmt: str, column: str, ts_column: str, where: str, timezone: str | None
) -> Series:
    """The series in ``text``; ``where`` (the feed's URL or command) names a body that
    cannot be used."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        fh.write(text)
        name = fh.name
    try:
        return load_price_file(name, fmt, column, ts_column, timezone)
    except DataError as exc:  # named after the feed, not the scratch file it was parsed from
        if exc.source != name:
            raise
        raise DataError(where, str(exc).removeprefix(f"{name}: ")) from None
    finally:
        Path(name).unlink(missing_ok=True)


def plausible(series: Series) -> Series:
    """The feed's prices, refused by their line where one is beyond any market's (+-1e6
    USD/MWh, a signal's bound): taken as good, 1e300 lifted a silent feed's fail-safe and
    then failed every re-plan in the solver, naming nothing (the SRE's walk, session 24)."""
    beyond = np.flatnonzero(np.abs(np.nan_to_num(series.values)) > MAX_PRICE)
    if beyond.size:
        k = int(beyond[0])
        raise DataError(
            series.label,
            f"line {int(series.lines[k])}: {series.values[k]:,.0f} USD/MWh is beyond any market's "
            f"price (at most {MAX_PRICE:,.0f} either way, as a signal's)",
        )
    return series


class Feeds:
    def __init__(
        self, config: SiteConfig, clock: Clock, changed: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        #: told "prices" or "hashprice" when a new reading differs from the last
        self.changed = changed or (lambda what: None)
        self.prices: Series | None = None
        self.prices_ok_at: float | None = None
        self.price_error: str | None = None
        self.hashprice: float | None = None  # from the feed; None: [mining] as configured
        self.hashprice_ok_at: float | None = None
        self.hashprice_error: str | None = None
        self._logged: dict[str, str | None] = {}  # each feed's error last logged

    def _failed(self, what: str, kind: FeedKind, exc: BaseException, error: str) -> None:
        """A failed reading, logged when its error is new (not at every refresh)."""
        if self._logged.get(what) != error:
            self._logged[what] = error
            _log_failure(what, kind, exc, error)

    def _answered(self, what: str, kind: FeedKind) -> None:
        """A good reading: said once, after failures."""
        if self._logged.pop(what, None) is not None:
            log.info("%s feed (%s) answers again", what, kind.value)

    def _source(self, feed: PriceFeed | HashpriceFeed) -> str:
        """Where a feed reads from, for its errors: its URL, its command, or its file."""
        if feed.kind is FeedKind.HTTP:
            return str(feed.url)
        if feed.kind is FeedKind.COMMAND:
            return f"the command {' '.join(feed.command or ())}"
        if feed.kind is FeedKind.FILE:
            return str(self.config.resolve(feed.path or ""))
        return "[prices]"

    async def refresh_prices(self) -> None:
        feed = self.config.daemon.price_feed
        now = self.clock.time()
        try:
            series = await self.load_prices(now)
        except Exception as exc:
            self.price_error = feed_error(exc, self._source(feed))
            self._failed("price", feed.kind, exc, self.price_error)
            return
        self._answered("price", feed.kind)
        changed = (
            self.prices is None
            or series.label != self.prices.label
            or not np.array_equal(series.values, self.prices.values, equal_nan=True)
        )
        self.prices, self.prices_ok_at, self.price_error = series, now, None
        if changed:
            self.changed("prices")

    def fallback_prices(self, start_s: int, end_s: int) -> tuple[Series, str]:
        """The prices a plan uses while the feed has given none (it has not answered since
        the start; the fail-safe counts its silence from then), and the plan's note saying
        so: the site's ``[prices]`` source, else the demo's synthetic curve."""
        why = self.price_error or "not read yet"
        try:
            series = site_prices(self.config, start_s, end_s)
            what = f"the [prices] source ({series.label})"
        except Exception as exc:  # a file missing or short: said, never a failed plan
            series = demo_prices(start_s, end_s, self.config.site.timezone)
            what = f"the demo's synthetic prices ([prices] unreadable: {in_words(exc)})"
        return series, f"no price read from the feed yet ({why}): planned on {what}"

    async def load_prices(self, now: float) -> Series:
        """The price series the feed gives now (raises what the feed or its parser says)."""
        feed = self.config.daemon.price_feed
        fmt, column, ts = feed.format.value, feed.column or "", feed.timestamp_column
        if feed.kind is FeedKind.CONFIG:  # the [prices] source, with its currency and units
            start = int(now) - int(now) % 3600 - 86400
            return await asyncio.to_thread(site_prices, self.config, start, start + 4 * 86400)
        tz = feed.timezone
        if feed.kind is FeedKind.FILE:
            path = str(self.config.resolve(feed.path or ""))
            series = await asyncio.to_thread(load_price_file, path, fmt, column, ts, tz)
        else:
            text = await fetch(feed.kind, feed.url, feed.command, "price")
            source = (
                (feed.url or "") if feed.kind is FeedKind.HTTP else " ".join(feed.command or ())
            )
            parsed = await asyncio.to_thread(_parse_prices, text, fmt, column, ts, source, tz)
            series = parsed.scaled(1.0, label=f"{feed.kind.value} {source}:{feed.column}")
        return plausible(in_usd_per_mwh(series, feed.currency, feed.usd_per_unit, feed.per))

    def mining(self) -> Mining:
        """[mining] with the hashprice in force: the feed's last good value, or as
        configured."""
        if self.hashprice is None:
            return self.config.mining
        return self.config.mining.model_copy(update={"hashprice_usd_per_ths_day": self.hashprice})

    async def refresh_hashprice(self) -> None:
        """Read the hashprice feed; a change re-plans. A failed reading keeps the last good
        value (hashprice moves slowly; no fail-safe for it) and says why in /v1/status."""
        feed = self.config.daemon.hashprice_feed
        if feed.kind is FeedKind.CONFIG:
            return
        try:
            if feed.kind is FeedKind.FILE:
                path = self.config.resolve(feed.path or "")
                text = await asyncio.to_thread(path.read_text)
            else:
                text = await fetch(feed.kind, feed.url, feed.command, "hashprice")
            value = hashprice_from_feed(text, feed.format, feed.key, feed.per)
        except Exception as exc:
            self.hashprice_error = feed_error(exc, self._source(feed))
            self._failed("hashprice", feed.kind, exc, self.hashprice_error)
            return
        self._answered("hashprice", feed.kind)
        old = self.hashprice
        self.hashprice, self.hashprice_ok_at = value, self.clock.time()
        self.hashprice_error = None
        if old is None or abs(value - old) > 1e-12 * max(1.0, abs(old)):
            log.info("hashprice %.4f USD per TH/s per day (was %s)", value, old)
            self.changed("hashprice")
