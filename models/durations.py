"""Parse durations as people write them (``5min``, ``48h``, ``1h30min``) and as ISO 8601
does (``PT30M``, ``P1DT2H``: the form OpenADR and aggregators' systems use)."""

from __future__ import annotations

import re

_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(min|sec|s|m|h|d)")


#: An ISO 8601 duration, ``-?P[nY][nM][nW][nD][T[nH][nM][nS]]``, its fields named (y, mo,
#: w, d, h, mi, s); upper case, as the standard writes it
ISO_DURATION = re.compile(
    r"^-?P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def iso_parts(text: object) -> dict[str, float] | None:
    """The fields of an ISO 8601 duration (0 where absent), or None when ``text`` is none
    (not text, no field given, or a ``T`` with nothing after it). What each caller makes of
    years and months is its own: the site file refuses them, OpenADR reads ``P9999Y`` as
    until cancelled (:func:`scheduler.service.openadr_timing.parse_iso_duration`)."""
    if not isinstance(text, str):
        return None
    m = ISO_DURATION.match(text)
    if m is None or not any(m.groupdict().values()) or text.endswith("T"):
        return None
    return {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}


def _iso_s(text: str) -> float:
    f = iso_parts(text.strip().upper())
    if f is None:
        raise ValueError(
            f"duration {text!r} is not understood: ISO 8601 as P[nW][nD][T[nH][nM][nS]] "
            "(e.g. 'PT30M', 'P1DT2H'), or a number and a unit (e.g. '30min', '1h30min')"
        )
    if f["y"] or f["mo"]:
        raise ValueError(
            f"duration {text!r}: years and months have no fixed length; give days, "
            "hours, minutes or seconds (e.g. 'P30D', 'PT1H')"
        )
    return f["w"] * 604800 + f["d"] * 86400 + f["h"] * 3600 + f["mi"] * 60 + f["s"]


def _total_s(text: str) -> float:
    """The seconds of one or more ``<number><unit>`` parts, or of an ISO 8601 duration
    (``PT30M``); ValueError naming the text."""
    if text.strip()[:1] in ("P", "p"):
        return _iso_s(text)
    s = text.strip().lower().replace(" ", "")
    pos = 0
    total = 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(
            f"duration {text!r} is not understood: use a number and a unit "
            "(s, min, h, d), e.g. '5min', '48h', '1h30min'"
        )
    return total


def parse_duration_s(text: str) -> int:
    """Return the duration in whole seconds.

    Accepts one or more ``<number><unit>`` parts with units s, min (or m), h, d:
    ``"5min"``, ``"48h"``, ``"1h30min"``, or ISO 8601 without years and months
    (``"PT30M"``, ``"P1DT2H"``). Raises ValueError naming the text otherwise.
    """
    total = _total_s(text)
    if total <= 0 or total != int(total):
        raise ValueError(f"duration {text!r} must be a positive whole number of seconds")
    return int(total)


def parse_seconds(text: str) -> float:
    """Seconds as a plain number (``1.5``) or a duration (``0.5s``, ``10min``): the options
    that have always taken a number of seconds take the duration forms too."""
    try:
        return float(text)
    except ValueError:
        return _total_s(text)


def format_duration(seconds: float) -> str:
    """Shortest readable form: ``300 -> '5min'``, ``172800 -> '48h'``."""
    s = int(seconds)
    if s % 86400 == 0 and s >= 86400 * 2:
        return f"{s // 86400}d"
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}min"
    return f"{s}s"
