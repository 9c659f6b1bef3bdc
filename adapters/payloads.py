"""Vendor payloads as Telemetry: parsed here and only here.

:func:`parse_luxos` reads the LuxOS RPC multicommand (one round trip for a full reading),
:func:`parse_miner_data` pyasic's ``MinerData`` from every other firmware.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adapters.base import BadReply, Telemetry
from adapters.replywords import unreadable, value_words

#: The LuxOS multicommand behind one reading: power, hashrate, temperatures (``stats``) and
#: the profile in force (``config``).
LUXOS_TELEMETRY = "power+summary+stats+config"
#: The same with the profile table (each profile's watts and TH/s: the reading's target and
#: its running/transition threshold), asked on a miner's first reading, whenever the
#: profile in force is not in the table the adapter holds, and at least every
#: ``LUXOS_PROFILES_MAX_AGE_S``. The table is the largest part of the reply (LuxOS lists
#: some 25 profiles) and changes only when profiles are created, removed or re-tuned.
LUXOS_TELEMETRY_FULL = LUXOS_TELEMETRY + "+profiles"
LUXOS_PROFILES_MAX_AGE_S = 300.0
#: A LuxOS profile table: name -> (watts, TH/s), None where the miner does not say.
LuxosProfiles = Mapping[str, tuple[float | None, float | None]]
#: A sleeping ASIC draws its control board and fans only; above this it is not asleep.
SLEEPING_MAX_W = 60.0
#: Hashing at this share of the profile's ideal rate counts as running at that profile.
RUNNING_SHARE = 0.9


def _luxos_body(device_id: str, data: Mapping[str, Any], cmd: str, key: str) -> list[Any]:
    """One part of a LuxOS multicommand reply: its rows, checked for a success STATUS."""
    try:
        part = data[cmd][0]
        status = part["STATUS"][0]
        if status.get("STATUS") not in ("S", "I"):
            raise BadReply(device_id, f"{cmd}: the miner answered {status.get('Msg')!r}")
        rows = part[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BadReply(device_id, f"reply to {cmd!r} has no {key} list") from None
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise BadReply(device_id, f"{key} in the reply to {cmd!r} is empty or not a list")
    return rows


def luxos_profile(device_id: str, data: Mapping[str, Any]) -> str:
    """The profile in force, as a LuxOS reply's ``config`` names it."""
    try:
        return str(_luxos_body(device_id, data, "config", "CONFIG")[0]["Profile"])
    except KeyError as exc:
        raise BadReply(device_id, f"LuxOS reply lacks or garbles {exc}") from None


def luxos_profiles(
    device_id: str, data: Mapping[str, Any]
) -> dict[str, tuple[float | None, float | None]]:
    """The profile table of a reply with ``profiles``: name -> (watts, TH/s), the first row
    of a name kept. A row whose figures do not parse is kept as NaN: a reading at that
    profile is unreadable, one at another is not (as when each reading parsed its own)."""
    table: dict[str, tuple[float | None, float | None]] = {}
    for p in _luxos_body(device_id, data, "profiles", "PROFILES"):
        if not isinstance(p, dict):
            continue
        try:
            watts = float(p["Watts"]) if "Watts" in p else None
            ths = float(p["Hashrate"]) if "Hashrate" in p else None
        except (TypeError, ValueError):
            watts = ths = math.nan
        table.setdefault(str(p.get("Profile Name")), (watts, ths))
    return table


def parse_luxos(
    device_id: str, data: Mapping[str, Any], at: float, profiles: LuxosProfiles | None = None
) -> Telemetry:
    """A LuxOS ``power+summary+stats+config`` multicommand reply as Telemetry; the profile
    table from the reply's own ``profiles`` part where it has one, else ``profiles``."""
    field = "power's Watts"  # the figure being read, for the error
    try:
        watts = float(_luxos_body(device_id, data, "power", "POWER")[0]["Watts"])
        field = "summary's GHS 5s"
        ths = float(_luxos_body(device_id, data, "summary", "SUMMARY")[0]["GHS 5s"]) / 1000.0
        field = "config's Profile"
        profile = luxos_profile(device_id, data)
        field = "stats"
        stats = _luxos_body(device_id, data, "stats", "STATS")
        field = "profiles"
        if "profiles" in data or profiles is None:
            profiles = luxos_profiles(device_id, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadReply(
            device_id, f"LuxOS reply lacks or garbles {field}: {unreadable(exc)}"
        ) from None
    if not (math.isfinite(watts) and math.isfinite(ths)) or watts < 0 or ths < 0:
        raise BadReply(device_id, f"impossible reading: {watts} W, {ths} TH/s")
    target_w, ideal_ths = profiles.get(profile, (None, None))
    if target_w is not None and math.isnan(target_w):
        raise BadReply(device_id, f"profile {profile!r}: its watts or TH/s do not parse")
    temps: list[float] = []
    for board in stats[1:]:
        for k, v in board.items():
            if k.startswith("temp_chip") and isinstance(v, str):
                temps.extend(float(x) for x in v.split("-") if x.strip() not in ("", "0"))
    state = _asic_state(watts, ths, ideal_ths)
    return Telemetry(
        device_id=device_id,
        at=at,
        state=state,
        power_w=watts,
        target_w=target_w,
        hashrate_ths=ths,
        temperatures_c=(max(temps),) if temps else (),
    )


def parse_miner_data(device_id: str, d: Any, at: float) -> Telemetry:
    """pyasic ``MinerData`` (any firmware) as Telemetry."""
    field = "wattage"  # the field being read, for the error: a local, cheap on every reading
    try:
        watts = None if d.wattage is None else float(d.wattage)
        field = "hashrate"
        hr = d.hashrate
        ths = None if hr is None else float(hr.into(hr.unit.TH)) if hasattr(hr, "into") else None
        field = "wattage_limit"
        limit = None if d.wattage_limit is None else float(d.wattage_limit)
        field = "hashboards"
        temps = tuple(float(b.chip_temp) for b in (d.hashboards or []) if b.chip_temp)
        field = "errors"
        errors = tuple(str(getattr(e, "error_message", e)) for e in (d.errors or []))
        field = "is_mining"
        mining = None if d.is_mining is None else bool(d.is_mining)
    except (AttributeError, TypeError, ValueError):
        raise BadReply(device_id, f"pyasic data unusable: {field_words(d, field)}") from None
    if watts is None and ths is None:
        raise BadReply(device_id, "the miner reported neither power nor hashrate")
    return Telemetry(
        device_id=device_id,
        at=at,
        state=asic_state(watts, ths, None, mining),
        power_w=watts,
        target_w=limit,
        hashrate_ths=ths,
        temperatures_c=(max(temps),) if temps else (),
        errors=errors,
    )


#: What each field of a miner's data (pyasic's or asic-rs's ``MinerData``) should hold.
_EXPECTED = {
    "wattage": "a number",
    "hashrate": "a hashrate",
    "wattage_limit": "a number",
    "hashboards": "a list of boards, each with a number for its chip temperature",
    "errors": "a list of errors",
    "is_mining": "true or false",
    "tuning_target": "a power target or a preset named by its watts",
}


def field_words(d: Any, field: str) -> str:
    """What was wrong with one field of a miner's data: its value and what was expected."""
    if not hasattr(d, field):
        return f"no {field!r} field"
    return f"its {field} is {value_words(getattr(d, field))}, not {_EXPECTED[field]}"


def asic_state(
    watts: float | None, ths: float | None, ideal_ths: float | None, mining: bool | None
) -> Any:
    """A miner's state from its power, hashrate and whether it is configured to mine."""
    if mining is False:
        # Configured asleep is asleep once it stops hashing and drawing: stock firmware
        # answers the new configuration before bmminer has stopped.
        quiet = (watts or 0.0) <= SLEEPING_MAX_W and not ths
        return "sleeping" if quiet else "transition"
    return _asic_state(watts, ths, ideal_ths)


def _asic_state(watts: float | None, ths: float | None, ideal_ths: float | None) -> Any:
    if ths is None:
        return "unknown"
    if ths == 0.0:
        return "sleeping" if watts is not None and watts <= SLEEPING_MAX_W else "transition"
    if ideal_ths and ths < RUNNING_SHARE * ideal_ths:
        return "transition"
    return "running"


def run_target(
    power_w: float | None, has_target: bool, presets_w: tuple[float, ...], why_none: str
) -> tuple[float | None, str]:
    """The power target a run request at ``power_w`` sets and the rounding in words: a
    preset where the firmware has them, the watts rounded where it takes any figure;
    (None, "") for a request that keeps the current target, and (None, the reason) on a
    miner with no power target (``why_none``), which is woken at its own setting."""
    if power_w is None:
        return None, ""
    if not has_target:
        return None, f"asked {power_w:g} W; {why_none}: woken at its own setting"
    if presets_w:
        return choose_preset(presets_w, power_w)
    return float(round(power_w)), ""


#: A target and a preset this close (W) are the same preset.
PRESET_TOLERANCE_W = 0.5


def choose_preset(presets_w: tuple[float, ...], target_w: float) -> tuple[float, str]:
    """The preset a target maps to (highest at or below it; the lowest for a target below
    them all) and the rounding in words."""
    below = [p for p in presets_w if p <= target_w + PRESET_TOLERANCE_W]
    chosen = max(below) if below else min(presets_w)
    if abs(chosen - target_w) <= PRESET_TOLERANCE_W:
        return chosen, ""
    if below:
        return chosen, f"asked {target_w:g} W; the firmware has presets only, set {chosen:g} W"
    return chosen, f"asked {target_w:g} W, below the lowest preset; set {chosen:g} W"
