"""What LuxOS's ATM (Advanced Thermal Management) does to a simulated miner's profile.

Sources, read on docs.luxor.tech:

- "Advanced Thermal Management" (firmware/features/atmsettings): ATM under- and overclocks
  by moving the miner through its profiles as the temperature changes, down as it heats,
  back up (to stock, or above where allowed) as it cools; ``min_profile`` is the lowest it
  goes ("" unbounded: the lowest profile), ``max_profile`` the highest (the default
  profile unless set otherwise).
- "Temps and Fans" (firmware/features/tempsandfans): the Hot temperature is what drives
  ATM's steps, against the hottest hashboard sensor.
- ``atmset`` (API): ``temp_window`` is the band below Hot in which ATM changes the
  profile; ``startup_minutes`` and ``post_ramp_minutes`` the least time before ATM acts
  after a boot and after a ramp (a profile change); the bounds take names or ``+N``/``-N``.
- ``atm`` (API): the defaults (15 and 15 minutes, a 5 degree window, MaxProfile
  "default", MinProfile "").

Not documented, and chosen here on the harsher side (each an assumption to check on a
real miner):

- one profile per step, each step a ramp, so the next waits ``post_ramp_minutes`` again;
- down when the hottest board is within ``temp_window`` of Hot; up only when it is more
  than twice the window below Hot (some hysteresis: the docs name none), else hold;
- a profile outside ATM's bounds (set while ATM was off, or the bounds changed) is moved
  one step a time back within them, the ceiling first;
- the steps are taken when the miner is next asked anything (the simulator has no clock
  of its own), at most one per ask.

``profileset`` while ATM is on: Luxor's pages do not say. pyasic's LuxOS
``set_power_limit`` ("must disable it before setting power limit") and Luxor's own helper
(luxos-tooling ``src/luxos/luxminer.py``, ``set_profile`` within ``with_atm(False)``,
copied from luxor-firmware's integration tests) both turn ATM off around it. The simulator
refuses it by default (``PROFILESET_WHILE_ATM``, the harsher variant, with a code and words
of its own); ``"accept"``: set, and ATM moves it from there once ``post_ramp_minutes`` pass.
"""

from __future__ import annotations

from collections.abc import Sequence

#: How ``profileset`` is answered while ATM is on: "refuse" (an error, nothing changes) or
#: "accept" (set; ATM goes on from it).
PROFILESET_WHILE_ATM = ("refuse", "accept")
#: The refusal's code and words: the simulator's own (Luxor documents none).
REFUSED_CODE = 328
REFUSED_MSG = "Cannot set profile while ATM is enabled; disable ATM first (atmset)"


def next_profile(
    names: Sequence[str],
    current: str,
    temp_c: float,
    hot_c: float,
    window_c: float,
    lowest: str,
    highest: str,
) -> str | None:
    """The profile ATM steps to from ``current`` (``names`` lowest first), or None to hold.
    ``lowest`` / ``highest``: its bounds by name, "" for unbounded."""
    if current not in names:
        return None
    i = names.index(current)
    lo = names.index(lowest) if lowest in names else 0
    hi = names.index(highest) if highest in names else len(names) - 1
    if i > hi:
        return names[i - 1]
    if i < lo and i < hi:
        return names[i + 1]
    if temp_c >= hot_c - window_c:
        return names[i - 1] if i > lo else None
    if temp_c < hot_c - 2 * window_c:
        return names[i + 1] if i < hi else None
    return None
