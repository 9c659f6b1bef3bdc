"""VNish (AnthillOS) presets and password refusals, through pyasic's web API with checks.

pyasic 0.79 drives VNish's web API (``web/vnish.py``) but two of its answers cannot be
taken as they come:

- ``VNish.set_power_limit`` never succeeds: ``MiningModeConfig.from_vnish`` calls
  ``cls.preset.from_vnish`` on an Enum member, which resolves to the enum's own
  ``from_vnish`` with the overclock table where the settings belong; the mode reads as
  "normal" and the call returns False before sending anything. Here the tuned presets are
  read (``autotune/presets``, a list or ``{"presets": [...]}`` by firmware version, each
  parsed by pyasic's ``MiningPreset.from_vnish``), the preset is written with pyasic's
  ``web.set_power_limit`` and the settings are read back: VNish answers a settings write
  the same whether it applied it or not.
- A refused password (``POST /api/v1/unlock`` answered non-200) surfaces as an
  ``APIError`` "Could not authenticate web token": the miner answered and refused, so it
  is a :class:`ControlRejected` naming the password, not an unreadable or dead miner.
- A token the miner no longer knows (its web server restarted) is answered 401; pyasic
  unlocks again and gives up on that call ("Failed to send command"). The call is sent
  once more when pyasic came back with a new token, so a restart costs no failed read.

In manual overclock (``miner.overclock.preset`` is "disabled") no preset applies: the
miner has no power target, and a wake is the wake alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from adapters.base import BadReply, ControlRejected, contain
from models.firmware import Capabilities, PowerTarget

T = TypeVar("T")

PASSWORD_REFUSED = (
    "the miner refused the web password (VNish unlock; pyasic sends 'admin' unless the "
    "adapter's password is set)"
)
MANUAL = "VNish in manual overclock has no presets"


async def auth_checked(device_id: str, what: str, web: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``, a pyasic call over ``web`` (its ``VNishWebAPI``); once more when
    it failed after pyasic renewed the token; a refused unlock is :class:`ControlRejected`."""
    from pyasic.errors import APIError

    for again in (False, True):
        token = getattr(web, "token", None)
        try:
            return await call()
        except APIError as exc:
            if "authenticate" in str(exc).lower():
                raise ControlRejected(device_id, f"{what}: {PASSWORD_REFUSED}") from None
            renewed = getattr(web, "token", None) not in (None, token)
            if again or not renewed:
                raise
    raise AssertionError("unreachable")


async def _web(
    device_id: str, what: str, miner: Any, call: Callable[[], Awaitable[Any]], timeout_s: float
) -> Any:
    return await contain(device_id, what, auth_checked(device_id, what, miner.web, call), timeout_s)


def _preset_of(device_id: str, settings: Any) -> str:
    try:
        return str(settings["miner"]["overclock"]["preset"])
    except (KeyError, TypeError):
        raise BadReply(
            device_id, f"settings have no miner.overclock.preset ({str(settings)[:120]})"
        ) from None


async def presets(
    device_id: str, miner: Any, caps: Capabilities, timeout_s: float
) -> tuple[Capabilities, tuple[float, ...], str]:
    """The family's capabilities as this miner has them, its tuned presets (W, ascending),
    and why it has no power target ("" when it has presets)."""
    from pyasic.config.mining.presets import MiningPreset

    settings = await _web(device_id, "settings", miner, miner.web.settings, timeout_s)
    if _preset_of(device_id, settings) == "disabled":
        return dataclasses.replace(caps, power_target=PowerTarget.NONE), (), MANUAL
    reply = await _web(device_id, "autotune/presets", miner, miner.web.autotune_presets, timeout_s)
    rows = reply.get("presets") if isinstance(reply, dict) else reply
    if not isinstance(rows, list):
        raise BadReply(device_id, f"autotune/presets answered {str(reply)[:120]}")
    watts: set[float] = set()
    for row in rows:
        try:
            p = MiningPreset.from_vnish(row)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a preset pyasic cannot read is one the adapter does not offer
        if p.tuned and p.power is not None:
            watts.add(float(p.power))
    if not watts:
        return dataclasses.replace(caps, power_target=PowerTarget.NONE), (), "no tuned preset"
    return caps, tuple(sorted(watts)), ""


async def set_preset(device_id: str, miner: Any, watts: float, timeout_s: float) -> None:
    """Write the preset of ``watts`` and read the settings back."""
    name = str(round(watts))
    write = lambda: miner.web.set_power_limit(round(watts))  # noqa: E731 - sent again on renewal
    await _web(device_id, f"set preset {name}", miner, write, timeout_s)
    settings = await _web(device_id, "settings", miner, miner.web.settings, timeout_s)
    now = _preset_of(device_id, settings)
    if now != name:
        raise ControlRejected(
            device_id,
            f"set preset {name} W: the firmware answered and kept preset {now!r} (VNish "
            "answers a settings write alike whether it applies it or not)",
        )
