"""Stock Bitmain firmware (Antminer): its web CGI over one kept session, and checked writes.

pyasic's ``AntminerModern.stop_mining`` / ``resume_mining`` read the configuration
(``get_miner_conf.cgi``), set ``miner-mode`` and write it all back (``set_miner_conf.cgi``),
then return True whatever happened: a failed read becomes a default configuration (empty
pools) that is written anyway, and a refused write reads as success. Here the read must
be a configuration (it has ``pools`` and ``bitmain-work-mode``), the write's answer must
say success (``{"stats": "success", "code": "M000"}``), and anything else is an error
in words. Whether the miner then does it is for the read-back to say.

pyasic's web client (``AntminerModernWebAPI.send_command``) opens a new httpx client and a
new ``DigestAuth`` for every request, so each is sent twice: once to be answered 401 with
a challenge, once with the digest. :class:`WebSession` keeps one client and one
``DigestAuth`` per miner instead. lighttpd, which serves the CGI, accepts a nonce for 600 s
from its issue whatever the ``nc`` and answers an older one 401 with ``stale=true``
(lighttpd1.4 ``src/mod_auth.c``, ``mod_auth_digest_validate_nonce``); a kept
``DigestAuth`` sends the last challenge's nonce with the next ``nc`` and, on a 401, takes
the new challenge and sends the request once more (httpx ``DigestAuth.auth_flow``). A
request then costs one round trip, and a stale nonce one more.

A write that went out (its writing had begun) and is not answered within the adapter's
timeout is not a failure: the CGI may answer only once bmminer has restarted. It is left
to finish (up to the family's ``write_timeout_s``, ``models.firmware``) and the command
is reported sent, unanswered; the read-back decides whether it took effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    contain,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("gridsched.fleet")

#: ``miner-mode`` values (pyasic config/mining: MiningModeNormal 0, MiningModeSleep 1).
NORMAL, SLEEP = 0, 1
#: In an Applied note: the write went out and its answer had not come (the read-back decides).
UNANSWERED = "sent, not answered"
#: httpcore's trace event as it starts writing a request: from there some of it may have
#: reached the socket (a write cancelled while it waits for the buffer to drain has), so
#: the request may be on the wire.
_SENDING = "http11.send_request_headers.started"

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class WebSession:
    """One miner's web CGI over one kept httpx client and digest challenge.

    Answers as pyasic's ``AntminerModernWebAPI.send_command`` and ``multicommand`` do (a
    dict; its own failures as ``{"success": False, "message": ...}``), so that
    :meth:`install` can route pyasic's readings through it too.
    """

    def __init__(self, web: Any, write_timeout_s: float) -> None:
        self.web = web  # pyasic's AntminerModernWebAPI: ip, port, username, pwd
        self.write_timeout_s = write_timeout_s
        self._client: httpx.AsyncClient | None = None
        self._auth: httpx.DigestAuth | None = None
        self._creds: tuple[str, str] | None = None
        self._write: asyncio.Task[dict[str, Any]] | None = None  # sent, answer not yet come

    def install(self) -> None:
        """pyasic's own calls on this web API (the readings' CGIs) go through the session."""
        self.web.send_command = self.send_command
        self.web.multicommand = self.multicommand

    def _session(self) -> tuple[httpx.AsyncClient, httpx.DigestAuth]:
        import httpx
        from pyasic import settings

        creds = (str(self.web.username), str(self.web.pwd))
        if self._auth is None or creds != self._creds:  # a new password: a new challenge
            self._auth, self._creds = httpx.DigestAuth(*creds), creds
        if self._client is None:
            # The overall bound is the adapter's (``contain``); this one ends a write left
            # to finish after its command was reported sent.
            self._client = httpx.AsyncClient(
                transport=settings.transport(), timeout=self.write_timeout_s
            )
        return self._client, self._auth

    async def send_command(
        self,
        command: str,
        ignore_errors: bool = False,
        allow_warning: bool = True,
        privileged: bool = False,
        **parameters: Any,
    ) -> dict[str, Any]:
        return await self._send(command, parameters or None, None)

    async def _send(
        self, command: str, body: dict[str, Any] | None, trace: Trace | None
    ) -> dict[str, Any]:
        import httpx

        client, auth = self._session()
        url = f"http://{self.web.ip}:{self.web.port}/cgi-bin/{command}.cgi"
        ext = {"trace": trace} if trace is not None else None
        try:
            if body is not None:
                resp = await client.post(url, auth=auth, json=body, extensions=ext)
            else:
                resp = await client.get(url, auth=auth, extensions=ext)
        except httpx.HTTPError as e:
            return {"success": False, "message": f"HTTP error occurred: {e}"}
        if resp.status_code != 200:
            return {"success": False, "message": f"HTTP {resp.status_code} {resp.reason_phrase}"}
        try:
            got = resp.json()
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            return {"success": False, "message": "Failed to decode JSON"}
        return got if isinstance(got, dict) else {"success": False, "message": f"not a dict: {got}"}

    async def multicommand(
        self, *commands: str, ignore_errors: bool = False, allow_warning: bool = True
    ) -> dict[str, Any]:
        """Each CGI at once; a failed one as ``{}``, as pyasic's multicommand has it."""

        async def one(cmd: str) -> tuple[str, dict[str, Any]]:
            got = await self._send(cmd, None, None)
            return cmd, {} if got.get("success") is False else got

        data: dict[str, Any] = dict(await asyncio.gather(*(one(c) for c in commands)))
        data["multicommand"] = True
        return data

    async def write(
        self, device_id: str, command: str, body: dict[str, Any], answer_within_s: float
    ) -> dict[str, Any] | None:
        """POST ``body``; its answer, or None when the request may have gone out (its
        writing had begun) and no answer came within ``answer_within_s`` (left to finish
        within ``write_timeout_s``). Not begun within it (no connection, or the request
        queued behind others): DeviceTimeout, and nothing reached the miner."""
        if self._write is not None and not self._write.done():  # one write at a time
            await asyncio.wait({self._write}, timeout=answer_within_s)
        sent = False

        async def trace(event: str, _info: dict[str, Any]) -> None:
            nonlocal sent
            sent = sent or event == _SENDING

        task = asyncio.ensure_future(self._send(command, body, trace))
        done, _ = await asyncio.wait({task}, timeout=answer_within_s)
        if task in done:
            return task.result()
        if not sent:
            task.cancel()
            raise DeviceTimeout(
                device_id, f"{command}: not sent within {answer_within_s:g} s (nothing written)"
            )
        self._write = task
        task.add_done_callback(lambda t: _late_answer(device_id, command, t))
        return None

    async def close(self) -> None:
        if self._write is not None:
            self._write.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _late_answer(device_id: str, command: str, task: asyncio.Task[dict[str, Any]]) -> None:
    """A write reported sent and unanswered got its answer (or gave up): the read-back has
    the verdict; this is for whoever reads the debug log."""
    if task.cancelled():
        return
    err = task.exception()
    got = repr(err) if err is not None else str(task.result())
    log.debug("%s: %s answered late: %s", device_id, command, got[:160])


async def session(miner: Any, write_timeout_s: float, old: WebSession | None) -> WebSession | None:
    """A kept web session for a stock Antminer whose web API is pyasic's modern one
    (``AntminerModernWebAPI``), installed on it: ``old`` where it already serves this
    miner object, else a new one (``old`` closed); None for any other web API (older
    firmware's ``AntminerOldWebAPI``), which stays pyasic's."""
    from pyasic.web.antminer import AntminerModernWebAPI

    web = getattr(miner, "web", None)
    if old is not None and old.web is web:
        return old
    if old is not None:
        await old.close()
    if type(web) is not AntminerModernWebAPI:
        return None
    kept = WebSession(web, write_timeout_s)
    kept.install()
    return kept


async def set_work_mode(
    device_id: str,
    miner: Any,
    mode: int,
    as_str: bool,
    timeout_s: float,
    kept: WebSession | None = None,
) -> str:
    """Write ``miner-mode`` = ``mode`` (as a JSON string when ``as_str``), keeping the rest
    of the miner's configuration as it reads. Returns "" when the write was answered
    success, or :data:`UNANSWERED` in words when it went out through ``kept`` and its answer
    had not come within ``timeout_s``."""
    from pyasic.config import MinerConfig, MiningModeConfig

    web = miner.web
    what = "sleep" if mode == SLEEP else "wake"
    conf = await contain(device_id, f"{what}: get_miner_conf", web.get_miner_conf(), timeout_s)
    _raise_web_error(device_id, f"{what}: get_miner_conf", conf)
    if not isinstance(conf, dict) or "pools" not in conf or "bitmain-work-mode" not in conf:
        raise BadReply(
            device_id,
            f"{what}: get_miner_conf answered no configuration ({str(conf)[:120]}); "
            "nothing written, so that its pools are not overwritten",
        )
    try:
        cfg = MinerConfig.from_am_modern(conf)
        cfg.mining_mode = MiningModeConfig.sleep() if mode == SLEEP else MiningModeConfig.normal()
        body = cfg.as_am_modern()
    except (KeyError, TypeError, ValueError) as exc:
        raise BadReply(device_id, f"{what}: configuration unusable: {exc!r}") from None
    body["miner-mode"] = str(mode) if as_str else mode
    step = f"{what}: set_miner_conf"
    if kept is None:
        reply = await contain(device_id, step, web.set_miner_conf(body), timeout_s)
    else:  # bounded inside; contain() only words what the library raises
        sent = kept.write(device_id, "set_miner_conf", body, timeout_s)
        reply = await contain(device_id, step, sent, 3 * timeout_s + 1.0)
        if reply is None:
            return f"{what}: set_miner_conf {UNANSWERED} within {timeout_s:g} s"
    _raise_web_error(device_id, step, reply)
    if not isinstance(reply, dict):
        raise BadReply(device_id, f"{step} answered {str(reply)[:120]}")
    if reply.get("stats") != "success" and reply.get("code") != "M000":
        raise ControlRejected(device_id, f"{step} refused: {str(reply)[:160]}")
    return ""


def _raise_web_error(device_id: str, what: str, reply: Any) -> None:
    """pyasic's web API answers its own failures as ``{"success": False, "message": ...}``:
    an HTTP error (no connection), JSON that does not decode, or any other status (401 for
    a wrong password)."""
    if not (isinstance(reply, dict) and reply.get("success") is False):
        return
    message = str(reply.get("message", ""))
    err: AdapterError
    if message.startswith("HTTP error"):
        err = DeviceUnreachable(device_id, f"{what}: {message}")
    elif "decode" in message.lower():
        err = BadReply(device_id, f"{what}: {message}")
    else:
        err = ControlRejected(device_id, f"{what}: {message} (a wrong web password answers 401)")
    raise err
