"""The site file's ``[daemon]`` (how ``gridsched run`` behaves, its price and hashprice
feeds, its shutdown and fail-safe postures) and ``[openadr]`` (this site as an OpenADR 3 VEN)."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.config_base import Currency, EnergyUnit, NonNeg, Pos, Strict, Zone
from models.config_site import PriceFormat, rate_missing
from models.errors import at_key


class FeedKind(StrEnum):
    CONFIG = "config"  # re-read the [prices] source
    FILE = "file"
    HTTP = "http"
    COMMAND = "command"


class _FeedSource(Strict):
    """Where a feed is read: a file, an HTTP endpoint (GET) or a command's stdout."""

    kind: FeedKind = FeedKind.CONFIG
    path: str | None = None
    url: str | None = None
    command: tuple[str, ...] | None = None

    def _need_source(self) -> None:
        need = {FeedKind.FILE: "path", FeedKind.HTTP: "url", FeedKind.COMMAND: "command"}
        key = need.get(self.kind)
        if key is not None and getattr(self, key) is None:
            raise ValueError(f"kind = '{self.kind}' needs {key}")


class PriceFeed(_FeedSource):
    """Where the daemon refreshes prices: a file, an HTTP endpoint or a command's stdout,
    each giving a price file in ``format`` (columns named as in [prices])."""

    format: PriceFormat = PriceFormat.CSV
    column: str | None = None
    timestamp_column: str = "interval_start_utc"
    #: as in [prices]: the zone of timestamps written without an offset, the currency
    #: (converted at usd_per_unit USD per unit) and the energy unit of the prices
    timezone: Zone | None = None
    currency: Currency = "USD"
    usd_per_unit: Pos = 1.0
    per: EnergyUnit = "MWh"
    refresh_s: Annotated[float, Field(ge=5)] = 300.0
    silent_after_s: Annotated[float, Field(gt=0)] = 3600.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._need_source()
        if (
            self.kind is not FeedKind.CONFIG
            and self.column is None
            and self.format is not PriceFormat.DEMO
        ):
            raise ValueError(f"kind = '{self.kind}' needs column (the price column)")
        if why := rate_missing(self.currency, self.usd_per_unit):
            raise at_key("usd_per_unit", why)
        if self.kind is FeedKind.CONFIG and (
            self.timezone or self.currency != "USD" or self.per != "MWh"
        ):
            raise ValueError(
                "kind = 'config' reads [prices] with its own timezone, currency and per; "
                "say them there"
            )
        return self


class HashpriceFeed(_FeedSource):
    """Where the daemon refreshes hashprice (gross USD per TH/s per day; [mining] pool_fee
    still applies): a file, an HTTP endpoint or a command's stdout. ``format``: ``number``
    (the body is the figure), ``json`` (``key`` is a dotted path to it) or ``network`` (a
    JSON object with btc_price_usd and difficulty or network_hashrate_ths, optionally
    subsidy_btc and fees_btc_per_block). Until the first good reading, and whenever one
    fails, the last good value (at first [mining] hashprice_usd_per_ths_day) stands."""

    format: Literal["number", "json", "network"] = "number"
    key: str | None = None
    per: Literal["TH", "PH"] = "TH"
    refresh_s: Annotated[float, Field(ge=30)] = 3600.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._need_source()
        if self.format == "json" and not self.key:
            raise ValueError("format = 'json' needs key (a dotted path to the figure)")
        return self


class Posture(StrEnum):
    SLEEP_MINERS = "sleep_miners"  # miners asleep, inference as it is
    HOLD = "hold"  # leave every device as it is
    SLEEP_ALL = "sleep_all"


class Daemon(Strict):
    """How ``gridsched run`` behaves (all optional)."""

    listen: Annotated[str, Field(pattern=r"^[^:]+:\d{1,5}$")] = "127.0.0.1:8080"
    state_dir: str = "state"
    replan_s: Annotated[float, Field(ge=10)] = 300.0
    poll_s: Annotated[float, Field(ge=1)] = 15.0
    command_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 512
    read_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    #: worker processes that drive the miners (adapters.fleet_shards): 1, all in the
    #: daemon's process; "auto", one per core beyond the first (1 on a 2-core host)
    fleet_workers: int | Literal["auto"] = 1
    #: after a shed, read the site meter again this long after (no meter: nothing; the
    #: devices are read back on their own, each reading counted as it comes); 0: off
    confirm_after_s: Annotated[float, Field(ge=0)] = 6.0
    stage_ahead_s: Annotated[float, Field(ge=0)] = 3600.0  # stage sleepers' next wake; 0: off
    horizon: str = "24h"
    step: str = "5min"
    resolution: str | None = None
    max_plan_age_s: Annotated[float, Field(gt=0)] = 900.0
    shutdown_posture: Posture = Posture.SLEEP_MINERS
    #: on shutdown, how long to read devices back until the posture shows on each (bounded
    #: by their firmware's confirmation deadline; keep it under systemd's TimeoutStopSec)
    shutdown_confirm_s: Annotated[float, Field(ge=0, le=600)] = 40.0
    failsafe_cap_kw: NonNeg | None = None  # cap while a feed is silent; default DR level 1
    # with no good plan covering now: hold (miners shed to the fail-safe cap) or sleep_miners;
    # committed inference serves in both (sleep_all would stop it, so it is not offered)
    failsafe_posture: Posture = Posture.HOLD
    #: the plan keeps this share of a DR or fail-safe cap free: units draw a few percent
    #: over their nameplate and readings are noisy, and a plan that fills a cap to the
    #: last nameplate watt measures over it (the fast path still enforces the cap itself)
    cap_margin_pct: Annotated[float, Field(ge=0, le=20)] = 2.0
    signal_silence_s: Annotated[float, Field(gt=0)] | None = None
    body_max_bytes: Annotated[int, Field(ge=1024, le=16_777_216)] = 65536
    rate_per_s: Annotated[float, Field(gt=0)] = 2000.0
    require_read_token: bool = False
    #: proxies whose X-Forwarded-For / X-Forwarded-Proto is believed (IPs or CIDRs, "*"
    #: for any); empty: none, the client is the TCP peer (rate limits key on it)
    forwarded_allow_ips: tuple[str, ...] = ()
    #: open connections beyond which a request is answered 503 (uvicorn limit_concurrency)
    max_connections: Annotated[int, Field(ge=8, le=1_000_000)] = 1000
    #: time a client has to send a request's headers and body, from connecting or from the
    #: last response; a connection that stalls longer is closed (slow clients, idle sockets)
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: an idle keep-alive connection is closed after this long
    keep_alive_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    price_feed: PriceFeed = PriceFeed()
    hashprice_feed: HashpriceFeed = HashpriceFeed()

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, v: object) -> object:
        # the pattern's form (a host without ':' and a port), said in words before pydantic
        # would answer with the regex
        if isinstance(v, str) and not re.fullmatch(r"[^:]+:\d{1,5}", v):
            raise ValueError(
                "not HOST:PORT; valid: e.g. '127.0.0.1:8080' (this host only) "
                "or '0.0.0.0:8080' (every interface)"
            )
        if isinstance(v, str) and int(v.rpartition(":")[2]) > 65535:
            raise ValueError("the port must be 0-65535 (0: one the system chooses)")
        return v

    @field_validator("horizon", "step")
    @classmethod
    def _duration(cls, v: str, info: ValidationInfo) -> str:
        # read at the daemon's start before: "duration 'forever' is not understood", naming
        # neither the key nor the file (bad-input walk, session 23)
        from models.durations import parse_duration_s

        try:
            seconds = parse_duration_s(v)
        except ValueError as exc:
            raise ValueError(f"{exc}; e.g. '24h' for the horizon, '5min' for the step") from None
        if seconds <= 0:
            raise ValueError(f"{info.field_name} must be longer than 0")
        return v

    @field_validator("fleet_workers", mode="before")
    @classmethod
    def _fleet_workers(cls, v: object) -> object:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64):
            return v
        raise ValueError(
            "valid are a number of worker processes from 1 to 64 (1: the miners are "
            "driven in the daemon's process) and 'auto' (one per core beyond the first)"
        )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. '10.0.0.5', "
                    "'10.0.0.0/24'), nor '*'"
                ) from None
        return v

    @field_validator("failsafe_posture")
    @classmethod
    def _keeps_committed(cls, v: Posture) -> Posture:
        if v is Posture.SLEEP_ALL:
            raise ValueError("sleep_all would stop committed inference; valid: hold, sleep_miners")
        return v


class Metrics(Strict):
    """What ``/metrics`` exposes. Per class and mode always; one series per
    device (its power and whether it answers; GPUs with DCGM-exporter's labels) only when
    ``per_device`` is true, or, left unset, while the site has at most
    ``per_device_up_to`` managed devices, so that a 30,000-miner site does not send
    Prometheus 60,000 series it did not ask for."""

    per_device: bool | None = None
    per_device_up_to: Annotated[int, Field(ge=0, le=1_000_000)] = 1000
    #: ``host:port`` of a listener of its own for ``/metrics``, answered from a thread so
    #: that a busy event loop cannot hold a scrape; unset: ``/metrics`` on the API's port only
    listen: str | None = None
    #: how long a scrape on ``listen`` waits for the loop to render the state now before it
    #: is answered with the last rendering (its age in gridsched_metrics_snapshot_age_seconds)
    render_wait_s: Annotated[float, Field(ge=0, le=10)] = 0.05

    def per_device_for(self, devices: int) -> bool:
        return self.per_device if self.per_device is not None else devices <= self.per_device_up_to

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            listen_address(v)
        return v

    def listen_at(self) -> tuple[str, int] | None:
        return None if self.listen is None else listen_address(self.listen)


def listen_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9108`` for IPv6; port 0: the OS picks) as (host, port);
    ValueError naming what is wrong and what is valid."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    valid = "valid: 'host:port', e.g. '127.0.0.1:9108', '0.0.0.0:9108' or '[::1]:9108'"
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen {text!r} is not a host and port 0-65535; {valid}")
    return host, int(port)


class OpenADRResource(Strict):
    """One of this VEN's resources as enrolled with the VTN, and what it covers here."""

    name: Annotated[str, Field(min_length=1, max_length=128)]  # its resourceName
    targets: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    #: device classes it stands for; empty: the whole site behind the meter
    classes: tuple[str, ...] = ()


_UNIT = Annotated[str, Field(pattern=r"^[A-Z_]{1,32}$")]


class OpenADR(Strict):
    """This site as an OpenADR 3 VEN: its name, targets and resources (docs/daemon.md).

    ``units`` and ``currency`` stand in for the program's payload descriptors: they apply to
    payloads whose event carries no descriptor (e.g. ``units = { PRICE = "KWH" }``)."""

    ven_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    targets: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    resources: tuple[OpenADRResource, ...] = ()
    units: dict[Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,128}$")], _UNIT] = Field(
        default_factory=dict
    )
    currency: Currency | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [r.name for r in self.resources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate resource names {dup}")
        whole = [r.name for r in self.resources if not r.classes]
        if len(whole) > 1:
            raise ValueError(f"resources {whole} all stand for the whole site; at most one may")
        return self
