"""The site configuration: one TOML file describes the site, its tariff, its markets,
its inference business, its devices and the penalties of its soft constraints.

``load_site(path)`` validates everything and raises ``ConfigError`` listing each bad key
path, the value found and what would be valid.
"""

from __future__ import annotations

import ipaddress
import tomllib
from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.devices import DeviceClass
from models.meter import SiteMeter
from models.signals import GridEvent

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnsiteGeneration(_Strict):
    """On-site generation (wind, solar) behind the meter.

    Either a built-in clear-sky ``solar`` shape scaled to ``capacity_kw``, or a CSV series
    (``path``, ``column``, ``timestamp_column``) in kW.
    """

    kind: Annotated[str, Field(pattern=r"^(solar|csv)$")] = "solar"
    capacity_kw: NonNeg = 0.0
    path: str | None = None
    column: str | None = None
    timestamp_column: str = "interval_start_utc"
    price_usd_per_mwh: NonNeg = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "csv" and (self.path is None or self.column is None):
            raise ValueError("kind = 'csv' needs path and column")
        return self


class SiteSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    timezone: str = "UTC"
    interconnect_kw: Pos
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.0
    base_load_kw: NonNeg = 0.0
    ramp_up_kw_per_min: Pos | None = None
    ramp_down_kw_per_min: Pos | None = None
    current_load_kw: NonNeg | None = None
    onsite: OnsiteGeneration | None = None
    meter: SiteMeter | None = None  # [site.meter]: import at the point of interconnection

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name such as 'America/Chicago' or 'UTC'"
            ) from None
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class PriceFormat(StrEnum):
    DEMO = "demo"
    ERCOT_RTM = "ercot-rtm"
    ERCOT_DAM = "ercot-dam"
    CSV = "csv"


class PriceSource(_Strict):
    format: PriceFormat = PriceFormat.DEMO
    path: str | None = None
    column: str | None = None
    timestamp_column: str = "interval_start_utc"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    usd_per_unit: Pos = 1.0
    per: Annotated[str, Field(pattern=r"^(MWh|kWh)$")] = "MWh"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.format is not PriceFormat.DEMO and self.path is None:
            raise ValueError(f"format = '{self.format}' needs path")
        if self.format is not PriceFormat.DEMO and self.column is None:
            raise ValueError(f"format = '{self.format}' needs column (the price column)")
        if self.currency != "USD" and self.usd_per_unit == 1.0:
            raise ValueError(
                f"currency {self.currency} needs usd_per_unit (USD per 1 {self.currency})"
            )
        return self


class Mining(_Strict):
    """Hashprice as known at planning time (USD per TH/s per day, before pool fee)."""

    hashprice_usd_per_ths_day: NonNeg = 0.05
    pool_fee: Annotated[float, Field(ge=0, lt=1)] = 0.0

    @field_validator("hashprice_usd_per_ths_day")
    @classmethod
    def _per_th(cls, v: float) -> float:
        # 0.03-0.45 since 2020: a value in the tens is a per-PH/s figure, 1000x too large
        if v > 5.0:
            raise ValueError(
                f"{v:g} USD per TH/s per day is implausible (0.03-0.45 since 2020, at most 5 "
                f"taken); a per PH/s figure divides by 1000, e.g. {v / 1000:g}"
            )
        return v

    @property
    def net_hashprice(self) -> float:
        return self.hashprice_usd_per_ths_day * (1.0 - self.pool_fee)


class CoincidentPeak(_Strict):
    """Recurring local-time windows in which import is billed per kW of its peak.

    ERCOT 4CP: transmission cost is allocated by the site's load in the four monthly
    system peaks of June-September, which fall in summer weekday afternoons.
    """

    name: Annotated[str, Field(min_length=1)]
    months: tuple[Annotated[int, Field(ge=1, le=12)], ...] = tuple(range(1, 13))
    start: time
    end: time
    weekdays_only: bool = True
    usd_per_kw: NonNeg

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start} (local time)")
        return self


class Tariff(_Strict):
    demand_charge_usd_per_kw_month: NonNeg = 0.0
    billing_peak_so_far_kw: NonNeg = 0.0
    coincident_peaks: tuple[CoincidentPeak, ...] = ()
    dr_payment_usd_per_mwh: NonNeg = 0.0
    dr_baseline_kw: NonNeg | None = None
    dr_levels_kw: dict[str, NonNeg] = Field(default_factory=dict)

    @field_validator("dr_levels_kw")
    @classmethod
    def _levels(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in ("1", "2", "3")]
        if bad:
            raise ValueError(f"levels {bad} are not SIMPLE levels; valid keys: '1', '2', '3'")
        return v


class BatchJob(_Strict):
    """Deferrable inference: ``tokens`` must be served between release and deadline."""

    name: Annotated[str, Field(min_length=1)]
    tokens: Pos
    release: datetime | None = None
    deadline: datetime
    usd_per_mtok: NonNeg = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("release", "deadline"):
            v = getattr(self, name)
            if v is not None and v.tzinfo is None:
                raise ValueError(f"{name} {v.isoformat()} has no UTC offset")
        if self.release is not None and self.deadline <= self.release:
            raise ValueError("deadline must be after release")
        return self


class InferenceDemand(_Strict):
    """Inference demand read from the serving engines' own metrics pages (docs/daemon.md)."""

    engine: Literal["vllm", "tgi"] = "vllm"
    #: the engines' metrics pages (``http://host:8000/metrics``); their demand is summed
    urls: Annotated[tuple[Annotated[str, Field(pattern=r"^https?://")], ...], Field(min_length=1)]
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 15.0
    #: a measured demand this far (relative) from what the plan assumed re-plans
    replan_threshold: Annotated[float, Field(gt=0, le=10)] = 0.2
    #: how fast a surge or lull seen now fades back to the hourly profile in the forecast
    tau_h: Pos = 1.0
    #: the time in which a queue of waiting requests should be served (backlog demand)
    backlog_s: Pos = 60.0
    #: longest wait for a GPU's in-flight requests to finish before its power goes down
    drain_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    #: a reading older than this is not used: the site file's figures are (default 4 polls)
    stale_s: Pos | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: device id -> the metrics page of the engine on that GPU, read for its drain
    gpu_engines: dict[str, Annotated[str, Field(pattern=r"^https?://")]] = Field(
        default_factory=dict
    )


class Inference(_Strict):
    committed_tokens_s: NonNeg = 0.0
    committed_usd_per_mtok: NonNeg = 0.0
    spot_tokens_s: NonNeg = 0.0
    spot_usd_per_mtok: NonNeg = 0.0
    hourly_profile: tuple[NonNeg, ...] | None = None
    batch: tuple[BatchJob, ...] = ()
    #: latency objectives of committed inference (95th percentile, seconds): reported as
    #: met / missed / unverified from the serving metrics, not planned for
    ttft_p95_s: Pos | None = None
    itl_p95_s: Pos | None = None
    demand: InferenceDemand | None = None

    @field_validator("hourly_profile")
    @classmethod
    def _profile(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and len(v) != 24:
            raise ValueError(f"hourly_profile needs 24 values (local hours 0-23), got {len(v)}")
        return v


class Penalties(_Strict):
    """Prices of breaking soft constraints. Their order sets what breaks first.

    Defaults rank: interconnect > DR cap > committed SLA > ramp > batch deadlines. An H100
    serves about 2 million tokens per kWh, so 50 USD/Mtok of SLA penalty is about
    100,000 USD/MWh; the DR cap's 500,000 USD/MWh puts grid compliance above it.
    """

    site_import_limit_usd_per_mwh: Pos = 5_000_000.0
    dr_cap_usd_per_mwh: Pos = 500_000.0
    inference_sla_usd_per_mtok: Pos = 50.0
    batch_deadline_usd_per_mtok: Pos = 10.0
    ramp_usd_per_mw: Pos = 2_000.0


class FeedKind(StrEnum):
    CONFIG = "config"  # re-read the [prices] source
    FILE = "file"
    HTTP = "http"
    COMMAND = "command"


class _FeedSource(_Strict):
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


class Daemon(_Strict):
    """How ``gridsched run`` behaves (all optional)."""

    listen: Annotated[str, Field(pattern=r"^[^:]+:\d{1,5}$")] = "127.0.0.1:8080"
    state_dir: str = "state"
    replan_s: Annotated[float, Field(ge=10)] = 300.0
    poll_s: Annotated[float, Field(ge=1)] = 15.0
    command_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 256
    read_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    confirm_after_s: Annotated[float, Field(ge=0)] = 6.0  # read again after a shed; 0: off
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


class OpenADRResource(_Strict):
    """One of this VEN's resources as enrolled with the VTN, and what it covers here."""

    name: Annotated[str, Field(min_length=1, max_length=128)]  # its resourceName
    targets: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    #: device classes it stands for; empty: the whole site behind the meter
    classes: tuple[str, ...] = ()


_UNIT = Annotated[str, Field(pattern=r"^[A-Z_]{1,32}$")]


class OpenADR(_Strict):
    """This site as an OpenADR 3 VEN: its name, targets and resources (docs/daemon.md).

    ``units`` and ``currency`` stand in for the program's payload descriptors: they apply to
    payloads whose event carries no descriptor (e.g. ``units = { PRICE = "KWH" }``)."""

    ven_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    targets: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    resources: tuple[OpenADRResource, ...] = ()
    units: dict[Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,128}$")], _UNIT] = Field(
        default_factory=dict
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None

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


class SiteConfig(_Strict):
    site: SiteSpec
    prices: PriceSource = PriceSource()
    mining: Mining = Mining()
    tariff: Tariff = Tariff()
    inference: Inference = Inference()
    devices: tuple[DeviceClass, ...]
    penalties: Penalties = Penalties()
    events: tuple[GridEvent, ...] = ()
    daemon: Daemon = Daemon()
    openadr: OpenADR = OpenADR()
    base_dir: str = "."

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate device class names {dup}")
        if not self.devices:
            raise ValueError("at least one device class is needed under [[devices]]")
        for r in self.openadr.resources:
            unknown = [c for c in r.classes if c not in names]
            if unknown:
                raise ValueError(
                    f"openadr resource {r.name!r}: classes {unknown} are not device classes "
                    f"(valid: {names})"
                )
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _value_at(data: Any, loc: tuple[int | str, ...]) -> tuple[bool, Any]:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, cur


def validation_problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        found, value = _value_at(data, loc)
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/configuration.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif found and not isinstance(value, dict | list):
            msg = f"{msg} (got {value!r})"
        problems.append((_format_loc(loc), msg))
    return problems


def parse_site(data: dict[str, Any], source: str, base_dir: str = ".") -> SiteConfig:
    from models.errors import ConfigError

    try:
        return SiteConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc, data)) from None


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate a site TOML file."""
    from models.errors import ConfigError

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), [("(file)", "not found")]) from None
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot be read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("(syntax)", str(exc))]) from None
    return parse_site(data, str(p), str(p.resolve().parent))
