"""A signal's numbers are numbers (field audit, session 20): JSON ``true`` is a Python bool,
which pydantic reads as 1, so ``"limit_kw": true`` was accepted as a 1 kW cap."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.signals import GridEvent


@pytest.mark.parametrize("field", ["limit_kw", "level", "price"])
def test_true_or_false_is_not_a_number(field: str) -> None:
    body: dict[str, Any] = {"id": "b17", "type": "curtail", "start": "2026-12-02T12:00:00Z",
            "duration": "1h"}  # fmt: skip
    if field != "limit_kw":
        body["limit_kw"] = 40
    with pytest.raises(ValidationError, match=f"{field}[\\s\\S]*a number is needed, not true"):
        GridEvent.model_validate({**body, field: True})


def test_numbers_still_pass() -> None:
    # limit_kw, level and price each in an event of its own: both of the first in one is
    # refused (tests/test_signal_limit_or_level.py), a price on a curtail too
    # (tests/test_signal_fields_by_type.py)
    body = {"id": "a", "type": "curtail", "start": "2026-12-02T12:00:00Z"}
    ev = GridEvent.model_validate({**body, "limit_kw": 40})
    assert ev.limit_kw == 40.0
    ev = GridEvent.model_validate({**body, "level": 2})
    assert ev.level == 2
    ev = GridEvent.model_validate({**body, "type": "price", "price": 55})
    assert ev.price == 55.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("price", 1e300), ("price", -1e300), ("price", 2e6), ("limit_kw", 1e300)],
)
def test_a_price_or_cap_beyond_any_market_is_refused(field: str, value: float) -> None:
    """The bad-input walk (session 23): a signed price of 1e300 was accepted (202), and
    every re-plan after it failed in the solver, naming nothing, until it was cancelled."""
    from pydantic import ValidationError

    from models.signals import GridEvent

    kind = "price" if field == "price" else "curtail"
    body = {"id": "big", "type": kind, "start": "2026-12-03T12:00:00Z", field: value}
    with pytest.raises(ValidationError) as err:
        GridEvent.model_validate(body)
    assert field in str(err.value) and (
        "less than" in str(err.value) or "greater than" in str(err.value)
    )
    ok = {**body, field: 9_000.0}
    assert getattr(GridEvent.model_validate(ok), field) == 9_000.0
