"""A signal's numbers are numbers (field audit, session 20): JSON ``true`` is a Python bool,
which pydantic reads as 1, so ``"limit_kw": true`` was accepted as a 1 kW cap."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.signals import GridEvent


@pytest.mark.parametrize("field", ["limit_kw", "level", "price"])
def test_true_or_false_is_not_a_number(field: str) -> None:
    body = {"id": "b17", "type": "curtail", "start": "2026-12-02T12:00:00Z", "duration": "1h"}
    if field != "limit_kw":
        body["limit_kw"] = 40
    with pytest.raises(ValidationError, match=f"{field}[\\s\\S]*a number is needed, not true"):
        GridEvent.model_validate({**body, field: True})


def test_numbers_still_pass() -> None:
    ev = GridEvent.model_validate(
        {"id": "a", "type": "curtail", "start": "2026-12-02T12:00:00Z", "limit_kw": 40, "level": 2}
    )
    assert ev.limit_kw == 40.0 and ev.level == 2
