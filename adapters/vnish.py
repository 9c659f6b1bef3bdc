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

Every web call, the readings' and pyasic's own (:meth:`WebSession.install`), goes over
:class:`adapters.webdigest.DigestClient` with pyasic's token (``Authorization: <token>``,
as ``VNishWebAPI.send_command`` sends it) instead of a new httpx client per call. A miner
that takes no connection is unreachable (pyasic called a failed unlock a refused password).
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
        overclock = (
            settings.get("miner", {}).get("overclock") if isinstance(settings, dict) else None
        )
        if not isinstance(overclock, dict):
            raise BadReply(device_id, f"{what}: settings have no miner.overclock")
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
    except webdigest.Unreachable as exc:
        raise DeviceUnreachable(device_id, f"{command}: {exc}") from None
    except webdigest.Garbled as exc:
        raise BadReply(device_id, f"{command}: {exc}") from None


class WebSession:
    """One miner's web API calls over one lean client, with pyasic's token (``web.token``);
    :meth:`install` routes pyasic's own calls (commands, presets) through it too."""

    def __init__(self, web: Any) -> None:
        self.web = web  # pyasic's VNishWebAPI: ip, port, pwd, token
        self.client = webdigest.DigestClient(str(web.ip), int(web.port), "", "")
        self.unlocks = 0
        self._renewing = asyncio.Lock()  # one unlock for the calls that found the token gone
        self.wake_path = WAKES[0]  # switched when a wake is never read back (other_wake)

    async def _token(self, device_id: str, stale: str | None, what: str = "telemetry") -> str:
        """The token to send: the current one unless it is ``stale`` (answered 401), else a
        new one; calls at once that found the same token stale share one unlock."""
        async with self._renewing:
            token = self.web.token
            if token and token != stale:
                return str(token)
            return await self._unlock(device_id, what)

    async def _unlock(self, device_id: str, what: str) -> str:
        """``POST /api/v1/unlock`` as pyasic's ``VNishWebAPI.auth`` sends it; the token."""
        reply = await self.client.request("POST", "/api/v1/unlock", {"pw": str(self.web.pwd)})
        self.unlocks += 1
        if reply.status != 200:
            raise ControlRejected(device_id, f"{what}: {PASSWORD_REFUSED}")
        got = reply.json()
        token = got.get("token") if isinstance(got, dict) else None
        if not isinstance(token, str) or not token:
            raise BadReply(device_id, f"unlock answered no token: {str(got)[:80]}")
        self.web.token = token
        return token

    async def get(self, device_id: str, command: str) -> Any:
        """``GET /api/v1/<command>`` with the token; unlocked first when there is none, and
        again (the call sent once more) when the answer is 401: a restarted web server
        forgets its tokens."""
        token = self.web.token or await self._token(device_id, None)
        for again in (False, True):
            reply = await self.client.request(
                "GET", f"/api/v1/{command}", headers=(("Authorization", token),)
            )
            if reply.status == 401 and not again:
                token = await self._token(device_id, token)
                continue
            if reply.status != 200:
                raise BadReply(device_id, f"{command}: HTTP {reply.status} {reply.reason}")
            return reply.json()
        raise AssertionError("unreachable")

    async def post(self, device_id: str, command: str, body: dict[str, Any]) -> Any:
        """``POST /api/v1/<command>`` with ``body`` and the token, as pyasic's
        ``send_command`` posts a privileged call; its verdict from the answer itself
        (:func:`_verdict`). No connection, or none that answered, is unreachable; a 401 is
        sent once more after an unlock (a restarted web server forgets its tokens)."""
        try:
            token = self.web.token or await self._token(device_id, None, command)
            for again in (False, True):
                reply = await self.client.request(
                    "POST", f"/api/v1/{command}", body, headers=(("Authorization", token),)
                )
                if reply.status == 401 and not again:
                    token = await self._token(device_id, token, command)
                    continue
                return _verdict(device_id, command, reply)
        except webdigest.Unreachable as exc:
            raise DeviceUnreachable(device_id, f"{command}: {exc}") from None
        except webdigest.Garbled as exc:
            raise BadReply(device_id, f"{command}: {exc}") from None
        raise AssertionError("unreachable")

    async def _pyasic_token(self, stale: str | None) -> str:
        """:meth:`_token` with a refused unlock as pyasic words it (an ``APIError`` that
        :func:`auth_checked` turns into the password's refusal)."""
        from pyasic.errors import APIError

        try:
            return await self._token("", stale)
        except ControlRejected:
            self.web.token = None
            raise APIError(f"Could not authenticate web token with miner: {self.web}") from None

    def install(self) -> None:
        self.web.send_command = self.send_command

    async def send_command(
        self,
        command: str,
        ignore_errors: bool = False,
        allow_warning: bool = True,
        privileged: bool = False,
        **parameters: Any,
    ) -> Any:
        """As pyasic's ``VNishWebAPI.send_command``: a POST when privileged or with
        parameters (its JSON body), ``Bearer`` before the token for ``system/`` calls, a
        non-200 answer unlocks again and the call fails ("Failed to send command", which
        :func:`auth_checked` sends once more), an empty answer is ``{"success": True}``;
        its errors are pyasic's ``APIError``, but no connection is a ConnectionError."""
        from pyasic import settings
        from pyasic.errors import APIError

        post = privileged or parameters != {}
        try:
            for _attempt in range(int(settings.get("get_data_retries", 1))):
                token = await self._pyasic_token(None)
                auth = "Bearer " + token if command.startswith("system") else token
                reply = await self.client.request(
                    "POST" if post else "GET",
                    f"/api/v1/{command}",
                    parameters if post else None,
                    headers=(("Authorization", auth),),
                )
                if reply.status != 200:
                    await self._pyasic_token(token)  # pyasic unlocks again, gives up the call
                    continue
                try:
                    got = reply.json()
                except webdigest.Garbled as exc:
                    raise APIError(f"JSON decode error for '{command}': {exc}") from None
                return got if got else {"success": True}
        except webdigest.Unreachable as exc:
            raise ConnectionError(f"{command}: {exc}") from None
        except webdigest.Garbled as exc:
            raise APIError(f"{command}: {exc}") from None
        raise APIError(f"Failed to send command to miner: {self.web}")


def _verdict(device_id: str, command: str, reply: webdigest.Reply) -> Any:
    """What a write's answer says: outside 2xx (a 401 after a fresh unlock included) or
    ``"success": false`` is the firmware's refusal; a body that is not JSON is unreadable;
    an empty one is taken as pyasic takes it (``{"success": True}``), any other JSON as
    asic-rs takes it (done; ``vnish/src/backends/v1_2_0/web.rs``). The read-back decides
    whether it took effect."""
    if not 200 <= reply.status < 300:
        words = webdigest.snippet(reply.body, 120)
        raise ControlRejected(
            device_id,
            f"{command}: the firmware answered HTTP {reply.status} {reply.reason}: {words}",
        )
    if not reply.body.strip():
        return {"success": True}
    got = reply.json()  # Garbled: not JSON
    if isinstance(got, dict) and got.get("success") is False:
        raise ControlRejected(device_id, f"{command}: the firmware answered {str(got)[:120]}")
    return got


#: pyasic's sleep and wake as the web API commands its ``VNish`` posts (``web/vnish.py``).
COMMANDS = {"stop_mining": "mining/stop", "resume_mining": "mining/resume"}
#: The two documented wakes after a ``mining/stop``: pyasic's ``mining/resume`` and
#: asic-rs's ``mining/start`` (``vnish/src/backends/v1_2_0/mod.rs``). No source says
#: whether ``mining/resume`` starts a stopped miner or only ends a ``mining/pause``.
WAKES = ("mining/resume", "mining/start")


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


def kept(miner: Any) -> WebSession | None:
    """The web session installed on this miner (:func:`session`), if any."""
    web = getattr(miner, "web", None)
    owner = getattr(getattr(web, "send_command", None), "__self__", None)
    return owner if isinstance(owner, WebSession) else None


def session(miner: Any, old: WebSession | None) -> WebSession | None:
    """The kept web session of a VNish miner, installed on it (``old`` where it serves the
    same web API); None where the web API is not pyasic's ``VNishWebAPI``."""
    from pyasic.web.vnish import VNishWebAPI

    web = getattr(miner, "web", None)
    if old is not None and old.web is web:
        return old
    if type(web) is not VNishWebAPI:
        return None
    kept = WebSession(web)
    kept.install()
    return kept


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
    try:  # MinerData's fields that parse_miner_data reads, without building MinerData
        data = SimpleNamespace(
            wattage=await miner._get_wattage(web_summary=summary),
            wattage_limit=await miner._get_wattage_limit(web_settings=settings),
            hashrate=await miner._get_hashrate(rpc_summary=rpc_summary),
            hashboards=await miner._get_hashboards(rpc_stats=rpc_stats),
            errors=await miner._get_errors(web_summary=summary),
            is_mining=await miner._is_mining(web_summary=summary),
        )
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        raise BadReply(device_id, f"telemetry: {type(exc).__name__}: {exc}") from None
    return parse_miner_data(device_id, data, at)
