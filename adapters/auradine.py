"""Auradine Teraflux (FluxOS) sleep, wake and power target, the verdict from the firmware's
answer.

pyasic 0.79 (``web/auradine.py``, ``miners/backends/auradine.py``) logs on with ``POST
/token`` (``{"command": "token", "user": "admin", "password": ...}`` on the web API, port
8080; the token is ``Token[0].Token``) and posts ``/mode`` with the token in a ``Token``
header: ``{"sleep": "on"}`` to stop, ``{"sleep": "off"}`` to resume, ``{"mode": "custom",
"tune": "power", "power": <W>}`` for a power limit, each with ``"command": "mode"`` added.
It answers True for whatever its client did not raise on, and its client raises only when
``STATUS`` says other than "S"/"I": an empty ``{}``, or any JSON without a ``STATUS``
table, read as done. It raises the same ``APIError`` for no connection as for an error
answer, and the backend turns both into False: a miner gone from the network read as
refusing, and the firmware's reason was lost. After a stale-token answer it logs on again
but does not resend within the call, so the write failed once.

Here the same requests go over :class:`adapters.webdigest.DigestClient` (no digest) with
pyasic's token (shared with its readings, so one session per miner) and the answer
decides, as asic-rs reads it (``asic-rs-firmwares/auradine/src/backends/v1/``: ``web.rs``
and ``rpc.rs``' ``from_auradine_v1``): no connection, or none that answered, is
unreachable; ``STATUS[0].STATUS`` "S" or "I" accepted (the read-back decides whether it
took effect); any other status the firmware's refusal in its ``Msg``; a status outside 2xx
the refusal in the words of its body; and anything else (``{}``, a ``STATUS`` that is not
a table, a body that is not JSON) unreadable, never done. A 401, or an error naming the
token or session, logs on again once and sends the write once more (asic-rs does the
same); a log-on the firmware refuses is a refusal in its words.
"""

from __future__ import annotations

from typing import Any

from adapters import webdigest
from adapters.base import BadReply, ControlRejected, contain

#: pyasic's writes and the ``mode`` parameters each posts (``backends/auradine.py``).
COMMANDS = ("stop_mining", "resume_mining", "set_power_limit")
#: Words of an error answer that mean the token is no longer good (asic-rs ``web.rs``).
_STALE_WORDS = ("TOKEN", "SESSION", "EXPIRED", "UNAUTHORIZED")


def handles(miner: Any, fn: str) -> bool:
    """Whether ``fn`` on this miner is an Auradine write sent here (pyasic's web client)."""
    from pyasic.web.auradine import AuradineWebAPI

    return fn in COMMANDS and isinstance(getattr(miner, "web", None), AuradineWebAPI)


def body_of(fn: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The ``/mode`` body pyasic posts for ``fn`` (with the ``command`` it adds)."""
    if fn == "stop_mining":
        params: dict[str, Any] = {"sleep": "on"}
    elif fn == "resume_mining":
        params = {"sleep": "off"}
    else:
        params = {"mode": "custom", "tune": "power", "power": int(args[0])}
    return {**params, "command": "mode"}


async def command(
    device_id: str, miner: Any, fn: str, args: tuple[Any, ...], timeout_s: float
) -> None:
    """Post pyasic's ``fn`` as it posts it; the verdict from the answer (module docstring)."""
    web = miner.web
    what = f"mode {fn}"
    client = webdigest.DigestClient(str(web.ip), int(web.port), "", "")
    body = body_of(fn, args)

    async def send(path: str, payload: dict[str, Any], token: str | None) -> webdigest.Reply:
        headers = (("Token", token),) if token else ()
        try:
            return await client.request("POST", path, payload, headers=headers)
        except webdigest.WebError as exc:
            raise webdigest.adapter_error(device_id, what, exc) from None

    async def log_on() -> str:
        creds = {"command": "token", "user": str(web.username), "password": str(web.pwd)}
        reply = await send("/token", creds, None)
        got = _status(device_id, "log-on", reply)
        try:
            token = got["Token"][0]["Token"]
        except (KeyError, IndexError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise BadReply(device_id, f"log-on: an answer without Token[0].Token: {str(got)[:120]}")
        web.token = token  # pyasic's readings use it too: one session per miner
        return token

    async def post() -> webdigest.Reply:
        token = web.token if isinstance(web.token, str) and web.token else await log_on()
        reply = await send("/mode", body, token)
        if _stale(reply):
            web.token = None
            reply = await send("/mode", body, await log_on())
        return reply

    _status(device_id, what, await contain(device_id, what, post(), timeout_s))


def _stale(reply: webdigest.Reply) -> bool:
    """Whether the answer says the token is no longer good: a 401, or an error naming it."""
    if reply.status == 401:
        return True
    try:
        got = reply.json()
    except webdigest.Garbled:
        return False
    first = _first_status(got)
    if first is None or first.get("STATUS") in ("S", "I"):
        return False
    msg = str(first.get("Msg", "")).upper()
    return any(w in msg for w in _STALE_WORDS)


def _first_status(got: Any) -> dict[str, Any] | None:
    status = got.get("STATUS") if isinstance(got, dict) else None
    first = status[0] if isinstance(status, list) and status else None
    return first if isinstance(first, dict) else None


def _status(device_id: str, what: str, reply: webdigest.Reply) -> dict[str, Any]:
    """The answer's JSON when its ``STATUS`` says success; the refusal or unreadable answer
    raised otherwise (module docstring)."""
    if not 200 <= reply.status < 300:
        try:
            first = _first_status(reply.json())
        except webdigest.Garbled:
            first = None
        words = str(first["Msg"]) if first is not None and first.get("Msg") else None
        raise webdigest.refused(device_id, what, reply, words)
    try:
        got = reply.json()
    except webdigest.Garbled as exc:
        raise webdigest.adapter_error(device_id, what, exc) from None
    first = _first_status(got)
    if first is None or not isinstance(first.get("STATUS"), str):
        shown = str(got)[:120]
        raise BadReply(device_id, f"{what}: an answer without a STATUS table: {shown}")
    if first["STATUS"] in ("S", "I"):
        assert isinstance(got, dict)  # _first_status found a table in it
        return got
    msg = first.get("Msg") or "no reason given"
    raise ControlRejected(device_id, f"{what}: the firmware refused ({first['STATUS']}): {msg}")
