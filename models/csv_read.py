"""Reading a time-series CSV: its header, timestamps (offsets, or a named zone across
clock changes) and numbers, each problem named by line (``models.market`` builds on it)."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from models.config_base import MAX_FIGURE
from models.errors import DataError
from models.textfile import not_utf8


def read_csv(path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except pd.errors.ParserError as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:  # pandas' "Error tokenizing data. C error: ..." in the file's words
            want, line, saw = fields.groups()
            raise DataError(
                str(path),
                f"line {line}: {saw} fields where the header has {want} (a ',' inside a "
                "value, e.g. a decimal comma, splits it: use '.' or quote the value)",
            ) from None
        raise DataError(str(path), f"malformed CSV: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(str(path), not_utf8(path.read_bytes()) or "not UTF-8") from None
    except ValueError as exc:
        raise DataError(str(path), f"cannot read as CSV: {exc}") from None


#: a timestamp that ends in a UTC offset after its time of day (``...05:00Z``, ``...-05:00``)
_HAS_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")


def parse_times(raw: pd.Series, source: str, column: str, timezone: str | None) -> np.ndarray:
    # Offsets that differ by row (local time across a DST change) are exact instants, read
    # as such; a row without one among rows with one is refused by line, never guessed.
    if raw.empty:  # a header and nothing under it (an export not yet filled in)
        raise DataError(source, f"no rows under the header ({column} and the others are empty)")
    text = raw.str.strip()
    dated = text.str.match(r"\d{4}-?\d{2}-?\d{2}").to_numpy(dtype=bool)  # others: not ISO
    with_offset = text.str.contains(_HAS_OFFSET).to_numpy(dtype=bool)
    if with_offset.any() and not with_offset[dated].all():
        has = int(np.flatnonzero(with_offset)[0])
        lacks = int(np.flatnonzero(dated & ~with_offset)[0])
        raise DataError(
            source,
            f"line {lacks + 2}: {column} = {raw.iloc[lacks]!r} has no UTC offset while line "
            f"{has + 2} ({raw.iloc[has]!r}) has one; give every row an offset (e.g. "
            "2023-08-10T05:00:00Z)",
        )
    parsed = pd.to_datetime(raw, errors="coerce", utc=bool(with_offset.any()), format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            source,
            f"line {i + 2}: {column} = {raw.iloc[i]!r} is not an ISO 8601 "
            "timestamp (e.g. 2023-08-10T05:00:00Z)",
        )
    if getattr(parsed.dt, "tz", None) is None:
        if timezone is None:
            raise DataError(
                source,
                f"{column} has no UTC offset (e.g. {raw.iloc[0]!r}); add offsets, or name "
                "the file's time zone: --price-timezone Europe/Berlin on the command line, "
                '[prices] timezone or [site.onsite] timezone = "Europe/Berlin" in the site file',
            )
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise DataError(
                source,
                f"unknown time zone {timezone!r} for {column}; use an IANA name such as "
                "'Europe/Berlin' or 'America/Chicago'",
            ) from None
        parsed = _localise(parsed, raw, source, column, timezone)
    return parsed.dt.tz_convert("UTC").dt.as_unit("s").astype("int64").to_numpy()


def _localise(naive: pd.Series, raw: pd.Series, source: str, column: str, tz: str) -> pd.Series:
    """Wall-clock times in ``tz`` as instants, by line where the clock change makes it unsure.

    Market exports in local time list the hour the clocks repeat twice, in file order
    (summer time first when the file runs forward): the two rows are the two instants. A
    repeated hour that appears once, or an hour the clocks skip, cannot be placed and is
    refused with its line, never guessed."""
    summer = naive.dt.tz_localize(tz, ambiguous=True, nonexistent="NaT")
    winter = naive.dt.tz_localize(tz, ambiguous=False, nonexistent="NaT")
    skipped = summer.isna().to_numpy()
    if skipped.any():
        i = int(np.flatnonzero(skipped)[0])
        raise DataError(
            source,
            f"line {i + 2}: {column} = {raw.iloc[i]!r} does not exist in {tz} (the clocks "
            "skip that hour when summer time starts); remove the row or give offsets",
        )
    twice = (summer != winter).to_numpy()
    if not twice.any():
        return summer
    forward = bool(naive.iloc[0] <= naive.iloc[-1])
    seen_before = naive.duplicated(keep="first").to_numpy()
    counts = naive.map(naive.value_counts()).to_numpy()
    once = twice & (counts == 1)
    if once.any():
        i = int(np.flatnonzero(once)[0])
        raise DataError(
            source,
            f"line {i + 2}: {column} = {raw.iloc[i]!r} cannot be placed in {tz}: that local "
            "time occurs twice (summer time, then standard time) and the file has it once; "
            "give offsets (e.g. 2023-10-29T02:00:00+02:00) or both rows",
        )
    # a forward file's first occurrence is summer time; a backward file's is standard time
    is_summer = ~seen_before if forward else seen_before
    return naive.dt.tz_localize(tz, ambiguous=is_summer, nonexistent="raise")


def parse_values(raw: pd.Series, source: str, column: str) -> np.ndarray:
    text = raw.str.strip()
    nan_words = text.str.lower().isin(["", "nan", "na", "null", "none"])
    vals = pd.to_numeric(text.where(~nan_words, "nan"), errors="coerce")
    bad = vals.isna() & ~nan_words
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(source, f"line {i + 2}: {column} = {raw.iloc[i]!r} is not a number")
    out = vals.to_numpy(dtype=np.float64)
    huge = np.abs(out) > MAX_FIGURE  # inf too; NaN compares False (a gap, said elsewhere)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise DataError(
            source,
            f"line {i + 2}: {column} = {raw.iloc[i]!r} is beyond any market's figure (at "
            f"most {MAX_FIGURE:g} in size)",
        )
    return out
