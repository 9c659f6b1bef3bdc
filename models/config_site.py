"""The site file's ``[site]``, ``[prices]``, ``[mining]``, ``[tariff]`` and ``[penalties]``:
the place, its meter, what energy costs and what hashing earns."""

from __future__ import annotations

import unicodedata
from datetime import time
from enum import StrEnum
from typing import Annotated, Self
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, field_validator, model_validator

from models.config_base import Currency, EnergyUnit, NonNeg, Pos, Strict, Zone
from models.meter import SiteMeter


def rate_missing(currency: str, usd_per_unit: float) -> str | None:
    """Why prices in ``currency`` at ``usd_per_unit`` USD per unit cannot be converted (a
    currency other than USD at the default rate of 1), or None."""
    if currency != "USD" and usd_per_unit == 1.0:
        return f"currency {currency} needs usd_per_unit (USD per 1 {currency})"
    return None


class OnsiteGeneration(Strict):
    """On-site generation (wind, solar) behind the meter.

    Either a built-in clear-sky ``solar`` shape scaled to ``capacity_kw``, or a CSV series
    (``path``, ``column``, ``timestamp_column``) in kW.
    """

    kind: Annotated[str, Field(pattern=r"^(solar|csv)$")] = "solar"
    capacity_kw: NonNeg = 0.0
    path: str | None = None
    column: str | None = None
    timestamp_column: str = "interval_start_utc"
    #: the file's wall-clock zone, for timestamps written without a UTC offset
    timezone: Zone | None = None
    price_usd_per_mwh: NonNeg = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "csv" and (self.path is None or self.column is None):
            raise ValueError("kind = 'csv' needs path and column")
        return self


def _printable_name(v: str) -> str:
    """A name reports, logs, metric labels and the audit trail print as given: no control or
    direction-changing characters (U+202E turned a report's line around), 200 at most."""
    bad = [c for c in v if unicodedata.category(c) in ("Cc", "Cf")]
    if bad:
        raise ValueError(
            f"name has {len(bad)} control or formatting character(s) (e.g. U+{ord(bad[0]):04X}); "
            "use printable text"
        )
    return v


class SiteSpec(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable_name)]
    timezone: Zone = "UTC"
    interconnect_kw: Pos
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.0
    base_load_kw: NonNeg = 0.0
    ramp_up_kw_per_min: Pos | None = None
    ramp_down_kw_per_min: Pos | None = None
    current_load_kw: NonNeg | None = None
    onsite: OnsiteGeneration | None = None
    meter: SiteMeter | None = None  # [site.meter]: import at the point of interconnection

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class PriceFormat(StrEnum):
    DEMO = "demo"
    ERCOT_RTM = "ercot-rtm"
    ERCOT_DAM = "ercot-dam"
    CSV = "csv"


class PriceSource(Strict):
    format: PriceFormat = PriceFormat.DEMO
    path: str | None = None
    column: str | None = None
    timestamp_column: str = "interval_start_utc"
    #: the file's wall-clock zone, for timestamps written without a UTC offset
    timezone: Zone | None = None
    currency: Currency = "USD"
    usd_per_unit: Pos = 1.0
    per: EnergyUnit = "MWh"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.format is not PriceFormat.DEMO and self.path is None:
            raise ValueError(f"format = '{self.format}' needs path")
        if self.format is not PriceFormat.DEMO and self.column is None:
            raise ValueError(f"format = '{self.format}' needs column (the price column)")
        if why := rate_missing(self.currency, self.usd_per_unit):
            raise ValueError(why)
        return self


class Mining(Strict):
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


def _some_month(months: tuple[int, ...]) -> tuple[int, ...]:
    if not months:
        raise ValueError("at least one month is needed: a window in no month never applies")
    return months


class CoincidentPeak(Strict):
    """Recurring local-time windows in which import is billed per kW of its peak.

    ERCOT 4CP: transmission cost is allocated by the site's load in the four monthly
    system peaks of June-September, which fall in summer weekday afternoons.
    """

    name: Annotated[str, Field(min_length=1)]
    months: Annotated[
        tuple[Annotated[int, Field(ge=1, le=12)], ...], AfterValidator(_some_month)
    ] = tuple(range(1, 13))
    start: time
    end: time
    weekdays_only: bool = True
    usd_per_kw: NonNeg

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start} (local time)")
        return self


class Tariff(Strict):
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


class Penalties(Strict):
    """Prices of breaking soft constraints. Their order sets what breaks first.

    Defaults rank: interconnect > DR cap > committed SLA > min-on > ramp > batch deadlines. An H100
    serves about 2 million tokens per kWh, so 50 USD/Mtok of SLA penalty is about
    100,000 USD/MWh; the DR cap's 500,000 USD/MWh puts grid compliance above it.
    """

    site_import_limit_usd_per_mwh: Pos = 5_000_000.0
    dr_cap_usd_per_mwh: Pos = 500_000.0
    inference_sla_usd_per_mtok: Pos = 50.0
    batch_deadline_usd_per_mtok: Pos = 10.0
    ramp_usd_per_mw: Pos = 2_000.0
    #: stopping a unit woken before the plan within its class's ``min_on_s``: per MWh of
    #: its top mode's power over each step cut short; above any energy price, below the
    #: committed SLA and the DR cap, so that a grid cap stops it early
    min_on_usd_per_mwh: Pos = 20_000.0
