"""How a LuxOS miner picks a profile from what ``profileset`` and ``atmset`` are given.

The profiles themselves are LuxOS's 25 built-in ones (:func:`adapters.sim.physics.presets_for`:
``default`` and 24 named by frequency, ``520MHz``). Sources: Luxor's API docs
(docs.luxor.tech, ``profileset``, ``atmset``, ``atm``):

- by name: the profile of that name;
- by selector suffix, on estimated hashrate or power: ``THs`` (TH/s, up to 1 decimal
  place), ``kW`` (up to 2 decimal places), ``W``. Which profile a value selects is in the
  part of Luxor's page this project could not read; here the nearest estimate
  (:data:`SELECTOR_RULE`, ties to the lower), an assumption to check on a real miner;
- by relative position prefix, ``+N`` / ``-N``: N steps above or below ``default`` (the
  ``atm`` reply counts its bounds so: ``MaxProfile "default"``, ``MaxProfileStep "0"``);
  a step beyond the ladder selects nothing;
- ``profileset``'s legacy board id: a second parameter that reads as a number from 0 to 3
  is a board id, and the profile name follows it (the profile still applies to all
  boards).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from adapters.sim.physics import Preset

#: How a ``W`` / ``kW`` / ``THs`` selector picks among the profiles' estimates:
#: "nearest" (ties to the lower), or "at_or_below" (the highest not above it).
SELECTOR_RULE = "nearest"

#: Legacy board ids (``profileset``): "a number between 0 and 3".
BOARD_IDS = ("0", "1", "2", "3")


def step_of(presets: Sequence[Preset], name: str) -> int | None:
    """A profile's position relative to ``default`` (``default`` is 0); None for a name
    not listed (or none: "")."""
    names = [p.name for p in presets]
    if name not in names or "default" not in names:
        return None
    return names.index(name) - names.index("default")


def resolve(presets: Sequence[Preset], selector: str) -> Preset | None:
    """The profile ``selector`` selects (a name, a ``W``/``kW``/``THs`` estimate, or a
    ``+N``/``-N`` position), or None where it selects none."""
    for p in presets:
        if p.name == selector:
            return p
    if selector[:1] in ("+", "-"):
        return _relative(presets, selector)
    for suffix, field, scale in (("THs", "ths", 1.0), ("kW", "watts", 1000.0), ("W", "watts", 1.0)):
        if selector.endswith(suffix):
            try:
                value = float(selector.removesuffix(suffix)) * scale
            except ValueError:
                return None
            return _by_estimate(presets, field, value)
    return None


def resolve_position(presets: Sequence[Preset], selector: str) -> Preset | None:
    """A profile as ``atmset``'s ``min_profile`` / ``max_profile`` take it: by name or by
    relative position ("It is also possible to use the relative position of the profiles
    (e. g. "+1", "-2") ... like in the profileset command": Luxor, ``atmset``)."""
    for p in presets:
        if p.name == selector:
            return p
    if selector[:1] in ("+", "-"):
        return _relative(presets, selector)
    return None


def _relative(presets: Sequence[Preset], selector: str) -> Preset | None:
    digits = selector[1:]
    if not digits.isdigit():
        return None
    step = int(digits) * (1 if selector[0] == "+" else -1)
    names = [p.name for p in presets]
    if "default" not in names:
        return None
    i = names.index("default") + step
    return presets[i] if 0 <= i < len(presets) else None


def _by_estimate(presets: Sequence[Preset], field: str, value: float) -> Preset | None:
    if math.isnan(value) or not presets:
        return None

    def of(p: Preset) -> float:
        return float(getattr(p, field))

    if SELECTOR_RULE == "at_or_below":
        below = [p for p in presets if of(p) <= value]
        return max(below, key=of) if below else None
    return min(presets, key=lambda p: (abs(of(p) - value), of(p)))
