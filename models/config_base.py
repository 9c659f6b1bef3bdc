"""What every section of the site file shares: a frozen model that refuses unknown keys,
and the number, time zone, currency and energy unit types its fields use."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def iana_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {v!r}; use an IANA name such as 'America/Chicago' or 'UTC'"
        ) from None
    return v


#: A time zone by its IANA name, refused otherwise; an ISO 4217 currency code; the energy
#: unit a price is per (each key of the site file that holds one).
Zone = Annotated[str, AfterValidator(iana_zone)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
EnergyUnit = Annotated[str, Field(pattern=r"^(MWh|kWh)$")]


class Strict(BaseModel):
    """A section of the site file: unknown keys are refused (a misspelt key is an error,
    not a silent default), and the values never change once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
