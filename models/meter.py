"""``[site.meter]``: the meter at the point of interconnection, read over Modbus TCP.

Two ways to find the site's import in the meter's registers:

- ``kind = "sunspec"``: a SunSpec device. The map starts with the marker ``SunS`` at
  ``base`` (by default tried at 40000, 0 and 50000, the base addresses SunSpec allows);
  models follow as (ID, L, L registers of data) until ID 0xFFFF. The first AC meter model,
  201 (single phase), 202 (split phase), 203 (wye) or 204 (delta), gives ``W`` (total real
  power, int16) at data offset 16 and ``W_SF`` (its power-of-ten scale factor) at 20; the
  float models 211-214 give ``W`` as a float32 at data offset 26.
- ``kind = "registers"``: one register (or a run of them) named here: ``address``,
  ``type``, ``count`` (implied by the type), ``scale`` and ``unit``.

A meter reports import as positive (power delivered to the site); ``invert = true`` where
it is wired the other way round.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Registers each type occupies (16-bit words).
REGISTER_WORDS = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
SUNSPEC_BASES = (40000, 0, 50000)
#: The SunSpec AC meter models (integer + scale factor) and where W and W_SF sit in their
#: data (offsets after the two-register ID, L header).
SUNSPEC_METER_MODELS = (201, 202, 203, 204)
SUNSPEC_W_OFFSET = 16
SUNSPEC_W_SF_OFFSET = 20
#: The float AC meter models: ``W`` is a float32 (no scale factor) after 13 float32 points.
SUNSPEC_FLOAT_METER_MODELS = (211, 212, 213, 214)
SUNSPEC_FLOAT_W_OFFSET = 26


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeterRegister(_Strict):
    """Where a meter without SunSpec keeps the site's real power."""

    address: Annotated[int, Field(ge=0, le=65535)]
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]
    count: Annotated[int, Field(ge=1, le=4)] | None = None  # implied by type
    scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0  # multiplies the raw value
    unit: Literal["W", "kW", "MW"] = "W"
    table: Literal["holding", "input"] = "holding"
    word_order: Literal["big", "little"] = "big"

    @model_validator(mode="after")
    def _check(self) -> Self:
        words = REGISTER_WORDS[self.type]
        if self.count is not None and self.count != words:
            raise ValueError(f"count = {self.count} but a {self.type} takes {words} registers")
        if self.address + words > 65536:
            raise ValueError(f"address {self.address} + {words} registers is past 65535")
        return self

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


class SiteMeter(_Strict):
    """The meter at the point of interconnection (Modbus TCP)."""

    kind: Literal["sunspec", "registers"] = "sunspec"
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    base: Annotated[int, Field(ge=0, le=65535)] | None = None  # SunSpec: where SunS is
    map: MeterRegister | None = None  # kind = "registers": where the power is
    invert: bool = False  # the meter reports import as negative

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "registers" and self.map is None:
            raise ValueError(
                "kind = 'registers' needs [site.meter.map] (address, type, scale, unit)"
            )
        if self.kind == "sunspec" and self.map is not None:
            raise ValueError("[site.meter.map] is for kind = 'registers', not 'sunspec'")
        return self
