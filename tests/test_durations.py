"""Durations as people and senders write them: ``5min``, ``48h``, ``1h30min``, and ISO 8601's
``PT30M`` (the form OpenADR and most aggregators' systems use)."""

from __future__ import annotations

import pytest

from models.durations import parse_duration_s, parse_seconds
from models.signals import GridEvent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5min", 300), ("48h", 172800), ("1h30min", 5400), ("PT30M", 1800), ("PT1H", 3600),
     ("P1D", 86400), ("P1DT2H", 93600), ("pt15m", 900), ("PT90S", 90), ("P2W", 1209600)],
)  # fmt: skip
def test_a_duration_is_read_in_either_form(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["P1M", "P1Y", "PT", "P", "PT1H30", "P-1D"])
def test_an_iso_duration_of_no_fixed_length_or_malformed_is_refused_in_words(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_duration_s(text)


def test_a_simple_signal_takes_an_iso_duration() -> None:
    """The aggregator's walk (session 24, DD3): `"duration": "PT30M"` was refused ("use a
    number and a unit"), while an aggregator's system, and OpenADR, write ISO 8601."""
    ev = GridEvent.model_validate(
        {"id": "a", "type": "curtail", "start": "2026-12-03T12:00:00Z", "duration": "PT30M",
         "limit_kw": 10}
    )  # fmt: skip
    assert (ev.end_utc - ev.start_utc).total_seconds() == 1800


def test_seconds_take_an_iso_duration_too() -> None:
    assert parse_seconds("PT1.5S") == 1.5
