"""The HTTP side of the simulated VNish miner (:mod:`adapters.sim.vnish`): AnthillOS's web
page and its JSON API under ``/api/v1/``, as pyasic's ``VNishWebAPI`` (``web/vnish.py``)
calls it with httpx.

One request per connection (the answer says ``Connection: close``). ``GET /`` answers the
UI page pyasic's discovery recognises; ``POST /api/v1/unlock`` trades the password for a
token; every other ``/api/v1/`` call needs the token (401 without it, as after a wrong
password), then is answered by the miner's ``web_get`` / ``web_post``; an unknown path is
404. The miner's faults apply here as on its API port.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.sim.server import FaultKind
from adapters.sim.web_port import read_http_request, write_http_reply

if TYPE_CHECKING:
    from adapters.sim.vnish import VnishSim

#: The page ``GET /`` answers: pyasic's discovery looks for "AnthillOS" in it.
INDEX_HTML = (
    b"<!doctype html><html><head><title>AnthillOS</title></head>"
    b'<body><div id="app">AnthillOS</div></body></html>'
)
API = "/api/v1/"
#: Reads VNish answers without a token: a VNish 1.2.6 API reference lists ``info``,
#: ``model``, ``status``, ``perf-summary`` and ``chains`` without an ``Authorization``
#: header (``summary``, ``settings``, ``autotune/presets`` with one), and asic-rs's
#: discovery reads ``info`` without unlocking (``asic-rs-firmwares/vnish/src/firmware.rs``).
PUBLIC_GETS = frozenset({"info", "model", "status", "perf-summary", "chains"})


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: Any  # JSON-able, or bytes sent as HTML


async def serve_http(
    sim: VnishSim, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer one HTTP request on the miner's web port."""
    async with sim._connection(writer, http=True):
        method, target, headers, raw = await read_http_request(reader)
        sim.commands_seen += 1
        if not await sim._hang_or_slow(lambda: sim.web_listening):
            return  # hung until the fault ended or the miner went away: no answer
        reply = route(sim, method, target.split("?", 1)[0], headers, raw)
        garbled = None
        if sim._fault(FaultKind.MALFORMED) is not None:
            garbled = b'{"miner":{"miner_status":' + b"\xff\xfe"
        await write_http_reply(writer, reply.status, reply.body, garbled)


def route(sim: VnishSim, method: str, path: str, headers: dict[str, str], raw: bytes) -> HttpReply:
    """The answer to one request, as the firmware's web server gives it."""
    if path in ("/", "/index.html"):
        return HttpReply(200, INDEX_HTML)
    if not path.startswith(API):
        return HttpReply(404, b"<h1>404 Not Found</h1>")
    name = path[len(API) :].strip("/")
    sim.web_calls.append((method, name))
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return HttpReply(400, {"err": "invalid JSON"})
    if name == "unlock":
        return sim.unlock(body) if method == "POST" else HttpReply(405, {"err": "POST only"})
    public = method == "GET" and name in PUBLIC_GETS
    if not public and not sim.authorised(name, headers.get("authorization")):
        return HttpReply(401, {"err": "Unauthorized"})
    if sim._fault(FaultKind.GARBLE) is not None:
        return HttpReply(200, [name, {"miner": None}])  # JSON, not what pyasic reads
    if method == "GET":
        got = sim.web_get(name)
    elif method == "POST":
        got = sim.web_post(name, body)
    else:
        return HttpReply(405, {"err": f"{method} not allowed"})
    if got is None:
        return HttpReply(404, {"err": f"no such endpoint: {name}"})
    return got if isinstance(got, HttpReply) else HttpReply(200, got)
