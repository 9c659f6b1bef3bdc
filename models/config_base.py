"""What every section of the site file shares: a frozen model that refuses unknown keys,
and the number types its fields use."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Strict(BaseModel):
    """A section of the site file: unknown keys are refused (a misspelt key is an error,
    not a silent default), and the values never change once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
