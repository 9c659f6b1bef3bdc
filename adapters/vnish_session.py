"""VNish's web API over one kept session per miner: the token, its unlock, the calls.

Every web call, the readings' and pyasic's own (:meth:`WebSession.install`), goes over
:class:`adapters.webdigest.DigestClient` with pyasic's token (``Authorization: <token>``,
as ``VNishWebAPI.send_command`` sends it) instead of a new httpx client per call. A miner
that takes no connection is unreachable (pyasic called a failed unlock a refused password).
Besides the readings' calls (:meth:`WebSession.get`), the writes the adapter judges itself
(:meth:`WebSession.post`, with the verdict from the answer) go over it; the behaviour of
the firmware they serve is described in :mod:`adapters.vnish`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters import webdigest
from adapters.base import BadReply, ControlRejected

__all__ = ["PASSWORD_REFUSED", "WAKES", "WebSession", "kept", "session"]

PASSWORD_REFUSED = (
    "the miner refused the web password (VNish unlock; pyasic sends 'admin' unless the "
    "adapter's password is set)"
)

#: The two documented wakes after a ``mining/stop``: pyasic's ``mining/resume`` and
#: asic-rs's ``mining/start`` (``vnish/src/backends/v1_2_0/mod.rs``). No source says
#: whether ``mining/resume`` starts a stopped miner or only ends a ``mining/pause``.
WAKES = ("mining/resume", "mining/start")


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
        except webdigest.WebError as exc:
            raise webdigest.adapter_error(device_id, command, exc) from None
        raise AssertionError("unreachable")

    async def _pyasic_token(self, stale: str | None) -> str:
        """:meth:`_token` with a refused unlock as pyasic words it (an ``APIError`` that
        :func:`~adapters.vnish.auth_checked` turns into the password's refusal)."""
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
        :func:`~adapters.vnish.auth_checked` sends once more), an empty answer is
        ``{"success": True}``; its errors are pyasic's ``APIError``, but no connection is a
        ConnectionError."""
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
    ``"success": false`` is the firmware's refusal; a body that is not JSON, or JSON but no
    object (pyasic's ``data.get("success")`` fails on it), is unreadable; an empty one is
    taken as pyasic takes it (``{"success": True}``), any other object as asic-rs takes it
    (done; ``vnish/src/backends/v1_2_0/web.rs``). The read-back decides whether it took
    effect."""
    if not 200 <= reply.status < 300:
        raise webdigest.refused(device_id, command, reply)
    if not reply.body.strip():
        return {"success": True}
    got = reply.json()  # Garbled: not JSON
    if not isinstance(got, dict):
        raise BadReply(device_id, f"{command}: the answer is JSON but no object: {str(got)[:120]}")
    if got.get("success") is False:
        raise ControlRejected(device_id, f"{command}: the firmware answered {str(got)[:120]}")
    return got


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
