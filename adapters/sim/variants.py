"""Firmware build variants of the simulated miners, selectable where the fleet is started
(``gridsched fleet simulate --variant``) and on its control port (``{"op": "variant"}``).

Each is a field of its simulator class, set per miner, and models a difference between
firmware builds or versions named in the simulator's own docstring (its source there):

- ``antminer``: ``mode_type`` (which JSON type of ``miner-mode`` a build applies: pyasic's
  ``antminer_mining_mode_as_str``), ``mode_key`` (which key of ``set_miner_conf`` it
  applies: asic-rs issue 245, PRs 249 and 251), ``sleep_applies_on_reboot`` (a sleep saved
  and read back while the boards hash on until a reboot: asic-rs issue 245);
- ``luxos``: ``curtail_survives_reboot`` (Luxor's curtail page, today's and older text),
  ``session_ttl_s`` (Luxor's API docs: a session unused for a minute ends),
  ``atm_profileset`` (``profileset`` while ATM is on: refused, or accepted; undocumented,
  :mod:`adapters.sim.luxos_atm`), ``atm_survives_reboot`` (``atmset`` persists with
  autosave on);
- ``whatsminer``, ``whatsminer3``: ``write_access`` (MicroBT's API docs: writes refused
  until the API is enabled in the miner's web page).

A value is checked against the field's kind and, where the simulator knows only some, its
choices; an unknown firmware, field or value is an error naming what is valid.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError("want true or false")


def _choice(*valid: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        if str(text) not in valid:
            raise ValueError(f"want one of {', '.join(valid)}")
        return str(text)

    return parse


def _seconds(text: Any) -> float:
    value = math.nan
    if not isinstance(text, bool):  # JSON true is not 1 s
        with contextlib.suppress(TypeError, ValueError):
            value = float(text)
    if math.isnan(value) or value <= 0:
        raise ValueError("want seconds, a number above 0 (inf: never)")
    return value


#: firmware (``adapters.sim.fleet.FIRMWARE``'s names) -> field -> its parser
VARIANTS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "antminer": {
        "mode_type": _choice("any", "int", "str"),
        "mode_key": _choice("miner-mode", "bitmain-work-mode", "any"),
        "sleep_applies_on_reboot": _bool,
    },
    "luxos": {
        "curtail_survives_reboot": _bool,
        "session_ttl_s": _seconds,
        "atm_profileset": _choice("refuse", "accept"),
        "atm_survives_reboot": _bool,
    },
    "whatsminer": {"write_access": _bool},
    "whatsminer3": {"write_access": _bool},
}


def of(firmware: str, miner: Any) -> dict[str, Any]:
    """``{"variants": {field: value}}`` of a miner whose firmware has build variants."""
    fields = VARIANTS.get(firmware)
    return {"variants": {f: getattr(miner, f) for f in fields}} if fields else {}


def check(firmware: str, name: str, value: Any) -> Any:
    """The value parsed, or ValueError naming the firmware, the field or the value and
    what would be valid."""
    fields = VARIANTS.get(firmware)
    if fields is None:
        have = ", ".join(VARIANTS)
        raise ValueError(f"firmware {firmware!r} has no build variants here; those that do: {have}")
    parse = fields.get(name)
    if parse is None:
        raise ValueError(f"{firmware} has no variant {name!r}; valid: {', '.join(fields)}")
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{firmware} variant {name} = {value!r}: {exc}") from None


def parse_option(text: str) -> tuple[str, str, Any]:
    """``FIRMWARE:NAME=VALUE`` (``antminer:sleep_applies_on_reboot=true``), checked."""
    head, eq, value = text.partition("=")
    firmware, colon, name = head.partition(":")
    if not eq or not colon or not firmware.strip() or not name.strip():
        raise ValueError(
            f"--variant {text!r}: want FIRMWARE:NAME=VALUE, e.g. "
            "antminer:sleep_applies_on_reboot=true"
        )
    firmware, name = firmware.strip(), name.strip()
    return firmware, name, check(firmware, name, value.strip())
