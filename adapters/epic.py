"""ePIC PowerPlay (UMC) sleep and wake, the verdict from the firmware's answer.

pyasic 0.79 (``web/epic.py``, ``miners/backends/epic.py``) posts ``/miner`` on the HTTP
API on port 4028 with ``{"param": "Stop"}`` (sleep) or ``{"param": "Autostart"}`` (wake)
and the web password (``"letmein"`` unless its setting ``default_epic_web_password`` or
the adapter's password says otherwise), then returns the answer's ``success``. ePIC
answers ``{"result": true|false, "error": ...}`` (asic-rs,
``asic-rs-firmwares/epic/src/backends/v1/mod.rs``: its pause and resume read ``result``),
so a stop the firmware took read as refused; its client answers an empty JSON object
with ``{"success": True}``, so ``{}`` read as success; and a connection closed unanswered
or refused came back as ``APIError`` "Failed to send command", unreadable.

Here the same request goes over :class:`adapters.webdigest.DigestClient` (no digest: ePIC
takes the password in the body) and the answer decides: no connection or none that
answered is unreachable, a status outside 2xx or ``"result": false`` the firmware's
refusal in its words, ``"result": true`` accepted (the read-back decides whether it took
effect), and anything else, ``{}`` and an empty body included, unreadable: never success.
"""

from __future__ import annotations

from typing import Any

from adapters import webdigest
from adapters.base import BadReply, ControlRejected, contain

#: pyasic's sleep and wake as the ``param`` it posts to ``/miner`` (``web/epic.py``).
PARAMS = {"stop_mining": "Stop", "resume_mining": "Autostart"}


def handles(miner: Any, fn: str) -> bool:
    """Whether ``fn`` on this miner is an ePIC write sent here (pyasic's ``ePICWebAPI``)."""
    from pyasic.web.epic import ePICWebAPI

    return fn in PARAMS and isinstance(getattr(miner, "web", None), ePICWebAPI)


async def command(device_id: str, miner: Any, fn: str, timeout_s: float) -> None:
    """Post pyasic's ``fn`` as it posts it; the verdict from the answer (module docstring)."""
    web = miner.web
    what = f"miner {PARAMS[fn]}"
    client = webdigest.DigestClient(str(web.ip), int(web.port), "", "")
    body = {"param": PARAMS[fn], "password": str(web.pwd)}

    async def post() -> webdigest.Reply:
        try:
            return await client.request("POST", "/miner", body)
        except webdigest.WebError as exc:
            raise webdigest.adapter_error(device_id, what, exc) from None

    verdict(device_id, what, await contain(device_id, what, post(), timeout_s))


def verdict(device_id: str, what: str, reply: webdigest.Reply) -> None:
    """Accepted, or the refusal / unreadable answer raised (module docstring)."""
    if not 200 <= reply.status < 300:
        raise webdigest.refused(device_id, what, reply)
    try:
        got = reply.json()
    except webdigest.Garbled as exc:
        raise webdigest.adapter_error(device_id, what, exc) from None
    result = got.get("result") if isinstance(got, dict) else None
    if result is True:
        return
    if result is False:
        error = got.get("error") or "no reason given"
        raise ControlRejected(device_id, f"{what}: the firmware refused: {error}")
    raise BadReply(device_id, f"{what}: an answer without result true/false: {str(got)[:120]}")
