"""What every section of the site file shares: a frozen model that refuses unknown keys,
and the number, time zone, currency and energy unit types its fields use."""

from __future__ import annotations

import math
import typing
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.errors import at_key

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def iana_zone(v: str) -> str:
    if v.lower() in ("localtime", "posixrules", "factory"):  # not a place: the host's, or none
        raise ValueError(
            f"{v!r} is this host's zone, or no place's: another host reads the same file "
            "differently; name the site's zone, e.g. 'America/Chicago' or 'UTC'"
        )
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


#: The largest size a number of the site file may have: no site's kW, tokens, prices or
#: seconds come near it, and HiGHS refuses a model with figures of 1e20 and more, naming
#: none of them (1e308 passed validation before, bad-input walk M7, session 23).
MAX_FIGURE = 1e15


class NoBoolNumbers(BaseModel):
    """A part of the site file where ``true`` is no number, nor is 1e300 anything's figure."""

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        """``true`` where a number is meant is refused: pydantic read ``interconnect_kw =
        true`` as 1 kW and ``count = true`` as one unit (bad-input walk, session 23). A
        finite number beyond ``MAX_FIGURE`` is refused by its key, not left to the solver."""
        if not isinstance(data, dict):
            return data
        own = {  # fields whose own "before" check says what is valid (fleet_workers)
            f
            for d in cls.__pydantic_decorators__.field_validators.values()
            if d.info.mode == "before"
            for f in d.info.fields
        }
        for key, value in data.items():
            if isinstance(value, bool):
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and key not in own and not _takes_bool(field.annotation):
                    raise at_key(key, f"a number or text is needed, not {str(value).lower()}")
            elif (
                isinstance(value, int | float) and math.isfinite(value) and abs(value) > MAX_FIGURE
            ):
                raise at_key(
                    str(key),
                    f"{value:g} is beyond any site's figure (at most {MAX_FIGURE:g} in size)",
                )
        return data


class Strict(NoBoolNumbers):
    """A section of the site file: unknown keys are refused (a misspelt key is an error,
    not a silent default), and the values never change once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _takes_bool(tp: Any) -> bool:
    """Whether a field's type admits a boolean (bool itself, or a union or Any with it)."""
    if tp is bool or tp is Any:
        return True
    return any(_takes_bool(a) for a in typing.get_args(tp))
