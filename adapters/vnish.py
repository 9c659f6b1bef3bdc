"""VNish (AnthillOS): presets, password refusals and writes, pyasic's web API with checks.

pyasic 0.79 drives VNish's web API (``web/vnish.py``) but some of its answers cannot be
taken as they come:

- ``VNish.set_power_limit`` never succeeds: ``MiningModeConfig.from_vnish`` calls
  ``cls.preset.from_vnish`` on an Enum member, which resolves to the enum's own
  ``from_vnish`` with the overclock table where the settings belong; the mode reads as
  "normal" and the call returns False before sending anything. Here the tuned presets are
  read (``autotune/presets``, a list or ``{"presets": [...]}`` by firmware version, each
  parsed by pyasic's ``MiningPreset.from_vnish``), the preset is written as pyasic's
  ``web.set_power_limit`` writes it and the settings are read back: VNish answers a settings write
  the same whether it applied it or not.
- A refused password (``POST /api/v1/unlock`` answered non-200) surfaces as an
  ``APIError`` "Could not authenticate web token": the miner answered and refused, so it
  is a :class:`ControlRejected` naming the password, not an unreadable or dead miner.
- A token the miner no longer knows (its web server restarted) is answered 401; pyasic
  unlocks again and gives up on that call ("Failed to send command"). The call is sent
  once more when pyasic came back with a new token, so a restart costs no failed read.
- ``VNish.stop_mining`` / ``resume_mining`` post ``mining/stop`` / ``mining/resume`` and
  return the answer's ``success`` (an empty answer reads as success, any other answer
  without it as a refusal); any status but 200 makes pyasic unlock again and give up the
  call, which the adapter could only call unreadable, after sending the write twice.
  Those two, and the settings write of a preset, go out here (:func:`command`,
  :meth:`WebSession.post`) as pyasic posts them, and the answer decides: no connection
  or none that answered is unreachable, a status outside 2xx (a 401 after a fresh unlock
  included) or ``"success": false`` the firmware's refusal, a body that is not JSON
  unreadable, any other 2xx accepted (as asic-rs takes it,
  ``vnish/src/backends/v1_2_0/web.rs``); the read-back decides whether it took effect.

In manual overclock (``miner.overclock.preset`` is "disabled") no preset applies: the
miner has no power target, and a wake is the wake alone.

A reading (:func:`read`) asks for the four answers pyasic's ``VNish.get_data`` takes the
adapter's fields from (the API's ``summary`` and ``stats`` on 4028, the web API's
``summary`` and ``settings``), all at once, and parses them with pyasic's own data
functions. The API calls are sent one by one, as pyasic ends up sending them after its
``summary+stats`` multicommand is refused (bmminer refuses multicommands).

Every web call goes over one kept session per miner (:mod:`adapters.vnish_session`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from adapters import webdigest
from adapters.base import (
    BadReply,
    ControlRejected,
    DeviceUnreachable,
    Telemetry,
    contain,
)
from adapters.payloads import parse_miner_data
from adapters.replywords import unreadable, value_words
from adapters.vnish_session import PASSWORD_REFUSED, WAKES, WebSession, kept, session
from models.firmware import Capabilities, PowerTarget

# WebSession, kept and session are re-exported: adapters/asic.py and asic_commands.py use
# them as vnish.<name>
__all__ = [
    "COMMANDS",
    "MANUAL",
    "PASSWORD_REFUSED",
    "WAKES",
    "WebSession",
    "auth_checked",
    "command",
    "kept",
    "other_wake",
    "presets",
    "read",
    "session",
    "set_preset",
]

T = TypeVar("T")

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
    """Write the preset of ``watts`` as pyasic's ``VNishWebAPI.set_power_limit`` writes it
    (the settings read, their ``miner.overclock`` posted with ``preset`` set) and read the
    settings back. Over the kept session (:func:`kept`) the write's verdict is its answer
    (:func:`_verdict`); without one, through pyasic."""
    name = str(round(watts))
    what = f"set preset {name}"
    web = kept(miner)
    if web is None:
        write = lambda: miner.web.set_power_limit(round(watts))  # noqa: E731 - sent again on renewal
        await _web(device_id, what, miner, write, timeout_s)
        settings = await _web(device_id, "settings", miner, miner.web.settings, timeout_s)
    else:
        settings = await contain(device_id, what, _get(device_id, web, "settings"), timeout_s)
        part = settings.get("miner") if isinstance(settings, dict) else None
        overclock = part.get("overclock") if isinstance(part, dict) else None
        if not isinstance(overclock, dict):
            shown = str(settings)[:120]
            raise BadReply(
                device_id, f"{what}: settings have no miner.overclock object (read: {shown})"
            )
        body = {"miner": {"overclock": {**overclock, "preset": name}}}
        await contain(device_id, what, web.post(device_id, "settings", body), timeout_s)
        settings = await contain(device_id, what, _get(device_id, web, "settings"), timeout_s)
    now = _preset_of(device_id, settings)
    if now != name:
        raise ControlRejected(
            device_id,
            f"{what} W: the firmware answered and kept preset {now!r} (VNish "
            "answers a settings write alike whether it applies it or not)",
        )


async def _get(device_id: str, web: WebSession, command: str) -> Any:
    """:meth:`WebSession.get` with no connection as unreachable, garbage as unreadable."""
    try:
        return await web.get(device_id, command)
    except webdigest.WebError as exc:
        raise webdigest.adapter_error(device_id, command, exc) from None


#: pyasic's sleep and wake as the web API commands its ``VNish`` posts (``web/vnish.py``).
COMMANDS = {"stop_mining": "mining/stop", "resume_mining": "mining/resume"}


async def command(device_id: str, kept: WebSession, fn: str, timeout_s: float) -> None:
    """Send pyasic's ``fn`` (``stop_mining``, ``resume_mining``) as it posts it (a wake as
    the variant in use, :func:`other_wake`), with the verdict from the answer
    (:meth:`WebSession.post`)."""
    path = kept.wake_path if fn == "resume_mining" else COMMANDS.get(fn)
    if path is None:
        raise ValueError(f"no VNish command for pyasic's {fn!r}; known: {', '.join(COMMANDS)}")
    await contain(device_id, path, kept.post(device_id, path, {}), timeout_s)


def other_wake(miner: Any) -> str | None:
    """After a wake accepted and never read back: send the next one as the other
    documented variant (:data:`WAKES`); the one a read-back confirms stays. The variant
    now in use, or None where the miner has no kept session."""
    web = kept(miner)
    if web is None:
        return None
    web.wake_path = WAKES[1] if web.wake_path == WAKES[0] else WAKES[0]
    return web.wake_path


async def read(device_id: str, miner: Any, kept: WebSession, at: float) -> Telemetry:
    """One reading: the four answers at once, parsed by pyasic's VNish data functions (no
    I/O when handed their data), as ``get_data`` would for the adapter's fields."""

    async def web(command: str) -> Any:
        try:
            got = await kept.get(device_id, command)
        except webdigest.Unreachable as exc:
            return exc
        except (webdigest.Garbled, BadReply):
            return {}
        return got if isinstance(got, dict) else {}

    async def rpc(command: str) -> Any:
        from pyasic.errors import APIError

        try:
            got = await miner.rpc.send_command(command)
        except (APIError, OSError, ValueError):
            return {}
        return got if isinstance(got, dict) else {}

    summary, settings, rpc_summary, rpc_stats = await asyncio.gather(
        web("summary"), web("settings"), rpc("summary"), rpc("stats")
    )
    if isinstance(summary, Exception) and isinstance(settings, Exception) and not rpc_summary:
        raise DeviceUnreachable(device_id, f"telemetry: {summary}")
    summary = {} if isinstance(summary, Exception) else summary
    settings = {} if isinstance(settings, Exception) else settings
    answers = {"web summary": summary, "web settings": settings, "RPC stats": rpc_stats}
    step = "wattage"  # the field being read, for the error: a local, cheap on every reading
    try:  # MinerData's fields that parse_miner_data reads, without building MinerData
        wattage = await miner._get_wattage(web_summary=summary)
        step = "wattage_limit"
        wattage_limit = await miner._get_wattage_limit(web_settings=settings)
        step = "hashrate"
        hashrate = await miner._get_hashrate(rpc_summary=rpc_summary)
        step = "hashboards"
        hashboards = await miner._get_hashboards(rpc_stats=rpc_stats)
        step = "errors"
        errors = await miner._get_errors(web_summary=summary)
        step = "is_mining"
        is_mining = await miner._is_mining(web_summary=summary)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        answer, path, expected = _READS.get(step, ("", (), ""))
        if answer in answers:
            why = _field_words(answer, answers[answer], path, expected)
        else:
            why = f"its {step} is unusable: {unreadable(exc)}"
        raise BadReply(device_id, f"telemetry: {why}") from None
    data = SimpleNamespace(
        wattage=wattage,
        wattage_limit=wattage_limit,
        hashrate=hashrate,
        hashboards=hashboards,
        errors=errors,
        is_mining=is_mining,
    )
    return parse_miner_data(device_id, data, at)


#: Where pyasic 0.79's VNish data functions read each field (pyasic/miners/backends/vnish.py),
#: and what they need there: (answer, path, expected). The hashrate's reader (RPC summary)
#: turns any failure into None, so it never raises.
_READS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "wattage": ("web summary", ("miner", "power_usage"), "a number"),
    "wattage_limit": ("web settings", ("miner", "overclock", "preset"), "a number or 'disabled'"),
    "hashboards": ("RPC stats", ("STATS",), "a list of the boards' figures"),
    "errors": ("web summary", ("miner", "chains"), "a list of chains, each an object"),
    "is_mining": ("web summary", ("miner", "miner_status", "miner_state"), "text"),
}


def _field_words(answer: str, got: Any, path: tuple[str, ...], expected: str) -> str:
    """Which part of an answer stopped pyasic: the first level on ``path`` that is not an
    object, or the field's value and what was expected there."""
    node, walked = got, ""
    for key in path:
        if not isinstance(node, dict):
            what = f"answer's {walked}" if walked else "answer"
            return f"the {answer} {what} is {value_words(node)}, not an object"
        if key not in node:
            return f"the {answer} answer has no {key!r} field" + (f" in {walked}" if walked else "")
        node, walked = node[key], f"{walked}.{key}" if walked else key
    return f"the {answer} answer's {walked} is {value_words(node)}, not {expected}"
