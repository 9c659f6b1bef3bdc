"""Stock Bitmain firmware (Antminer): its web CGI over one kept session, and checked writes.

pyasic's ``AntminerModern.stop_mining`` / ``resume_mining`` read the configuration
(``get_miner_conf.cgi``), set ``miner-mode`` and write it all back (``set_miner_conf.cgi``),
then return True whatever happened: a failed read becomes a default configuration (empty
pools) that is written anyway, and a refused write reads as success. Here the read must
be a configuration (it has ``pools`` and ``bitmain-work-mode``), the write's answer must
say success (``{"stats": "success", "code": "M000"}``), and anything else is an error
in words. Whether the miner then does it is for the read-back to say. Some stock builds
apply ``bitmain-work-mode`` and answer a ``miner-mode`` write success while ignoring it,
others the reverse (asic-rs issue 245, PRs 249 and 251), so the write carries both keys.

pyasic's web client (``AntminerModernWebAPI.send_command``) opens a new httpx client and a
new ``DigestAuth`` for every request, so each is sent twice: once to be answered 401 with
a challenge, once with the digest. :class:`WebSession` keeps one challenge per miner
instead, over :class:`adapters.webdigest.DigestClient` (HTTP/1.1 on asyncio, the request
and the digest as httpx writes them, at a fraction of httpx's CPU per request). lighttpd,
which serves the CGI, accepts a nonce for 600 s from its issue whatever the ``nc`` and
answers an older one 401 with ``stale=true`` (lighttpd1.4 ``src/mod_auth.c``,
``mod_auth_digest_validate_nonce``); the kept challenge is sent with the next ``nc`` and,
on a 401, the new challenge is taken and the request sent once more (as httpx's
``DigestAuth.auth_flow`` does). A request then costs one round trip, and a stale nonce one
more.

A reading (:func:`adapters.antminer_reading.read`) asks only for what the adapter uses,
from where pyasic's ``AntminerModern.get_data`` takes it: the hashrate from the cgminer
API's ``summary`` (``GHS 5s``), the chip temperatures from ``stats.cgi``, the firmware's
own checks from ``summary.cgi`` and the work mode from ``get_miner_conf.cgi``; all four at
once, parsed without pyasic's ``MinerData``.

A command reads the configuration (``get_miner_conf.cgi``) before each write, as pyasic
does, even when a reading has just read it: the CGI has no conditional write, so a
configuration kept from an earlier reading would overwrite what the operator changed since
with a stale one. The read is bounded by the adapter's timeout only; the write's own bound
(``write_timeout_s``) is armed only when its answer has not come within the adapter's.

A write that went out (its writing had begun) and is not answered within the adapter's
timeout is not a failure: the CGI may answer only once bmminer has restarted. It is left
to finish (up to the family's ``write_timeout_s``, ``models.firmware``) and the command
is reported sent, unanswered; the read-back decides whether it took effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from adapters import webdigest
from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    contain,
)
from adapters.neterrors import describe

log = logging.getLogger("gridsched.fleet")

#: ``miner-mode`` values (pyasic config/mining: MiningModeNormal 0, MiningModeSleep 1).
NORMAL, SLEEP = 0, 1
#: In an Applied note: the write went out and its answer had not come (the read-back decides).
UNANSWERED = "sent, not answered"
#: A failed call's answer, as pyasic's web API words its own failures, with its kind.
_KIND = "gridsched_error"
UNREACHABLE, UNREADABLE, REFUSED = "unreachable", "unreadable", "refused"


def _failed(kind: str, message: str) -> dict[str, Any]:
    return {"success": False, "message": message, _KIND: kind}


class WebSession:
    """One miner's web CGI over one kept digest challenge.

    Answers as pyasic's ``AntminerModernWebAPI.send_command`` and ``multicommand`` do (a
    dict; its own failures as ``{"success": False, "message": ...}``), so that
    :meth:`install` can route pyasic's own calls through it too.
    """

    def __init__(self, web: Any, write_timeout_s: float) -> None:
        self.web = web  # pyasic's AntminerModernWebAPI: ip, port, username, pwd
        self.write_timeout_s = write_timeout_s
        self._client: webdigest.DigestClient | None = None
        self._write: asyncio.Task[dict[str, Any]] | None = None  # sent, answer not yet come
        #: (mode, as_str) -> (the configuration read, the body made from it, its JSON)
        self._bodies: dict[tuple[int, bool], tuple[dict[str, Any], dict[str, Any], bytes]] = {}
        #: Whether the latest reading's get_miner_conf.cgi said sleep (None: not read).
        self.conf_asleep: bool | None = None

    def body_for(self, conf: dict[str, Any], mode: int, as_str: bool) -> dict[str, Any] | None:
        """The ``set_miner_conf`` body made before from a configuration equal to ``conf``
        (None: none yet). pyasic's ``MinerConfig`` round trip is a pure function of the
        configuration read and the mode (pyasic's one setting it reads, the mode's JSON
        type, is overwritten), and a miner's configuration rarely changes between writes."""
        kept = self._bodies.get((mode, as_str))
        return kept[1] if kept is not None and kept[0] == conf else None

    def keep_body(
        self, conf: dict[str, Any], mode: int, as_str: bool, body: dict[str, Any]
    ) -> None:
        self._bodies[mode, as_str] = (conf, body, webdigest.json_bytes(body))

    def _encoded(self, body: dict[str, Any]) -> bytes:
        """``body``'s JSON as the client sends it: kept with the body when it is the one
        :meth:`keep_body` kept (the same object), else encoded now."""
        for _conf, kept, raw in self._bodies.values():
            if kept is body:
                return raw
        return webdigest.json_bytes(body)

    def install(self) -> None:
        """pyasic's own calls on this web API go through the session."""
        self.web.send_command = self.send_command
        self.web.multicommand = self.multicommand

    def _session(self) -> webdigest.DigestClient:
        user, pwd = str(self.web.username), str(self.web.pwd)
        c = self._client
        if c is None or (c.username, c.password) != (user, pwd):  # a new password: anew
            c = self._client = webdigest.DigestClient(
                str(self.web.ip), int(self.web.port), user, pwd
            )
        return c

    async def send_command(
        self,
        command: str,
        ignore_errors: bool = False,
        allow_warning: bool = True,
        privileged: bool = False,
        **parameters: Any,
    ) -> dict[str, Any]:
        return await self._send(command, parameters or None, None)

    async def get(self, command: str, bounded: bool = True) -> dict[str, Any]:
        """``GET /cgi-bin/<command>.cgi``: its JSON object, or a failure as pyasic words it
        (``bounded`` False: only by the caller's own timeout)."""
        return await self._send(command, None, None, bounded)

    async def _send(
        self,
        command: str,
        body: dict[str, Any] | None,
        on_sending: Callable[[], None] | None,
        bounded: bool = True,
    ) -> dict[str, Any]:
        """The CGI's JSON object; a failure as pyasic words it, its kind under ``_KIND``.
        Bounded by ``write_timeout_s`` (the adapter's own, shorter bound is outside), or
        not here when ``bounded`` is False: the caller's bound is the only one."""
        try:
            if bounded:
                async with asyncio.timeout(self.write_timeout_s):
                    reply = await self._request(command, body, on_sending)
            else:
                reply = await self._request(command, body, on_sending)
            if reply.status != 200:
                return _failed(REFUSED, f"HTTP {reply.status} {reply.reason}")
            got = reply.json()
        except webdigest.Unreachable as e:
            return _failed(UNREACHABLE, f"HTTP error occurred: {e}")
        except TimeoutError:
            return _failed(
                UNREACHABLE, f"HTTP error occurred: no answer within {self.write_timeout_s:g} s"
            )
        except webdigest.Garbled as e:
            return _failed(UNREADABLE, f"Failed to decode the answer: {e}")
        if not isinstance(got, dict):
            return _failed(UNREADABLE, f"not a JSON object: {str(got)[:80]}")
        return got

    def _request(
        self, command: str, body: dict[str, Any] | None, on_sending: Callable[[], None] | None
    ) -> Awaitable[webdigest.Reply]:
        path = f"/cgi-bin/{command}.cgi"
        if body is None:
            return self._session().request("GET", path, None, on_sending)
        raw = self._encoded(body)
        return self._session().request("POST", path, body, on_sending, raw_body=raw)

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

        def sending() -> None:
            nonlocal sent
            sent = True

        # unbounded inside: answered within answer_within_s, or cut off here, or left to
        # finish within write_timeout_s from its start (one timer each, not two)
        task = asyncio.ensure_future(self._send(command, body, sending, bounded=False))
        done, _ = await asyncio.wait({task}, timeout=answer_within_s)
        if task in done:
            return task.result()
        if not sent:
            task.cancel()
            raise DeviceTimeout(
                device_id, f"{command}: not sent within {answer_within_s:g} s (nothing written)"
            )
        self._write = task
        left_s = max(0.0, self.write_timeout_s - answer_within_s)
        ends = asyncio.get_running_loop().call_later(left_s, task.cancel)

        def finished(t: asyncio.Task[dict[str, Any]]) -> None:
            ends.cancel()
            _late_answer(device_id, command, t)

        task.add_done_callback(finished)
        return None

    async def close(self) -> None:
        if self._write is not None:
            self._write.cancel()
        self._client = None


def _late_answer(device_id: str, command: str, task: asyncio.Task[dict[str, Any]]) -> None:
    """A write reported sent and unanswered got its answer (or gave up): the read-back has
    the verdict; this is for whoever reads the debug log."""
    if task.cancelled():  # cut off at write_timeout_s, or the session closed
        log.debug("%s: %s not answered at all", device_id, command)
        return
    err = task.exception()
    got = describe(err) if err is not None else str(task.result())
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
    """Write ``miner-mode`` = ``mode`` (as a JSON string when ``as_str``), and
    ``bitmain-work-mode`` = ``mode`` in the JSON type the configuration read shows (stock
    builds differ in which of the two keys they apply), keeping the rest of the miner's
    configuration as it reads. Returns "" when the write was answered
    success, or :data:`UNANSWERED` in words when it went out through ``kept`` and its answer
    had not come within ``timeout_s``."""
    from pyasic.config import MinerConfig, MiningModeConfig

    web = miner.web
    what = "sleep" if mode == SLEEP else "wake"
    read = web.get_miner_conf() if kept is None else kept.get("get_miner_conf", bounded=False)
    conf = await contain(device_id, f"{what}: get_miner_conf", read, timeout_s)
    _raise_web_error(device_id, f"{what}: get_miner_conf", conf)
    if not isinstance(conf, dict) or "pools" not in conf or "bitmain-work-mode" not in conf:
        raise BadReply(
            device_id,
            f"{what}: get_miner_conf answered no configuration ({str(conf)[:120]}); "
            "nothing written, so that its pools are not overwritten",
        )
    body = kept.body_for(conf, mode, as_str) if kept is not None else None
    if body is None:
        try:
            cfg = MinerConfig.from_am_modern(conf)
            sleep = mode == SLEEP
            cfg.mining_mode = MiningModeConfig.sleep() if sleep else MiningModeConfig.normal()
            body = cfg.as_am_modern()
        except (KeyError, TypeError, ValueError) as exc:  # the miner's fields, as pyasic reads them
            why = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) and exc.args else exc
            raise BadReply(device_id, f"{what}: configuration unusable: {why}") from None
        body["miner-mode"] = str(mode) if as_str else mode
        # builds differ in the key they apply (asic-rs issue 245, PRs 249/251): the other
        # is answered success and ignored, so both are sent, this one in the type read
        read_mode = conf["bitmain-work-mode"]
        body["bitmain-work-mode"] = mode if isinstance(read_mode, int) else str(mode)
        if kept is not None:
            kept.keep_body(conf, mode, as_str, body)
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
    a wrong password). The kept session says which (``_KIND``)."""
    if not (isinstance(reply, dict) and reply.get("success") is False):
        return
    message = str(reply.get("message", ""))
    kind = reply.get(_KIND)
    if kind is None:  # pyasic's own client
        kind = (
            UNREACHABLE
            if message.startswith("HTTP error")
            else UNREADABLE
            if "decode" in message.lower()
            else REFUSED
        )
    err: AdapterError
    if kind == UNREACHABLE:
        err = DeviceUnreachable(device_id, f"{what}: {message}")
    elif kind == UNREADABLE:
        err = BadReply(device_id, f"{what}: {message}")
    else:
        err = ControlRejected(device_id, f"{what}: {message} (a wrong web password answers 401)")
    raise err
