"""The web port of the simulated Braiins OS+ miner (:mod:`adapters.sim.braiins`): its page
and the GraphQL API at ``POST /graphql``, as asic-rs (pyasic-rs 0.8.6) reads and writes them.

Real Braiins OS+ 24.09 serves this API on port 80 beside the BOSminer API and gRPC:
asic-rs's test data holds GraphQL replies captured from a 24.09 miner
(``asic-rs-firmwares/braiins/src/test/json/v24.09/gql_system.json``, whose shape the data
below follows). pyasic 0.79 does not use it (it reads ``devdetails`` and gRPC); asic-rs
reads a Braiins miner's model (``bosminer.info.modelName``) and version
(``bos.info.version.full``) only from here, and drives a miner below 25.07 through it
(``asic-rs-firmwares/braiins/src/backends/v21_09``):

- ``auth { login(username, password) }`` answers a ``session_id`` cookie, which a
  mutation needs (without it: a GraphQL error). Queries need none: asic-rs's discovery
  reads ``modelName`` and the version without logging in.
- Reads: ``bos { hostname faultLight info { version { full } } uptime { durationS } }``,
  ``bosminer { info { modelName workSolver { realHashrate { mhs5S } nominalMhs
  childSolvers {...} } fans {...} summary { power { limitW approxConsumptionW } } }
  config { autotuning { mode powerTarget hashrateTarget } } }`` (the tuner's target, as
  in asic-rs's ``test/json/v24_09/gql_tuning.json``);
  asic-rs counts the miner mining while ``workSolver`` is not null, so a paused miner
  answers it null.
- Writes: ``bosminer { stop }`` and ``bosminer { start }`` (``VoidResult``), and
  ``bosminer { config { updateAutotuning(input: {powerTarget: $limit}, apply: true) } }``
  answered ``AutotuningOut { autotuning { powerTarget enabled } }``.

Only what a selection asks for is answered, as GraphQL does; a field this simulator does
not know answers null (a real server refuses the query). The error texts are this
simulator's own: Braiins does not document them.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from adapters.sim.server import FaultKind

if TYPE_CHECKING:
    from adapters.sim.braiins import BraiinsSim

#: ``GET /``: asic-rs's and pyasic's discovery look for "Braiins OS" in the page.
INDEX_HTML = (
    b"<!doctype html><html><head><title>Braiins OS</title></head>"
    b'<body><div id="root">Braiins OS</div></body></html>'
)
_TOKEN = re.compile(r"\.\.\.|[{}]|[A-Za-z_][A-Za-z0-9_]*")


def _strip_arguments(text: str) -> str:
    """The document without its parenthesised arguments and variable definitions (which
    may hold braces: ``input: {powerTarget: $limit}``)."""
    out, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def selection(document: str) -> tuple[str, dict[str, Any]]:
    """The operation (``query`` or ``mutation``) and its selection set as nested dicts
    (field -> sub-selection, ``{}`` for a leaf); inline fragments merge into their parent."""
    tokens = _TOKEN.findall(_strip_arguments(document))
    op = tokens[0] if tokens and tokens[0] in ("query", "mutation") else "query"
    start = tokens.index("{")  # ValueError: no selection set

    def block(i: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        last = ""
        i += 1
        while tokens[i] != "}":
            t = tokens[i]
            if t == "...":  # "... on Type { ... }"
                sub, i = block(i + 3)
                out.update(sub)
            elif t == "{":
                sub, i = block(i)
                out[last] = sub
            else:
                out[t], last = {}, t
                i += 1
        return out, i + 1

    sel, _ = block(start)
    return op, sel


def project(value: Any, sel: dict[str, Any]) -> Any:
    """``value`` cut down to the selection."""
    if not sel or value is None:
        return value
    if isinstance(value, list):
        return [project(v, sel) for v in value]
    return {k: project(value.get(k), s) for k, s in sel.items()}


def page(sim: BraiinsSim, method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
    """(status, body, extra headers) for one request on the web port."""
    if path in ("/", "/index.html") and method == "GET":
        return 200, INDEX_HTML, []
    if path != "/graphql" or method != "POST":
        return 404, b"<h1>404 Not Found</h1>", []
    try:
        body = json.loads(raw)
        op, sel = selection(str(body["query"]))
        variables = body.get("variables") or {}
    except (ValueError, KeyError, TypeError, IndexError):
        return 400, {"errors": [{"message": "invalid GraphQL request"}], "data": None}, []
    sim.web_calls.append(op + " " + " ".join(sorted(sel)))
    if op == "mutation" and "login" in sel.get("auth", {}):
        return _login(sim, variables)
    if sim._fault(FaultKind.GARBLE) is not None:
        return 200, {"data": {"bosminer": {"info": "?"}}}, []
    if op == "mutation":
        cookie = headers.get("cookie", "")
        if not sim.web_session or f"session_id={sim.web_session}" not in cookie:
            return 200, {"errors": [{"message": "unauthorized: log in first"}], "data": None}, []
        return 200, {"data": project(_mutate(sim, sel, variables), sel)}, []
    return 200, {"data": project(_tree(sim), sel)}, []


def _login(sim: BraiinsSim, variables: dict[str, Any]) -> Any:
    if variables.get("username") != sim.username or variables.get("password") != sim.password:
        err = {"auth": {"login": {"message": "invalid username or password"}}}
        return 200, {"data": err}, []
    sim.web_session = sim.web_session or secrets.token_hex(16)
    ok = {"data": {"auth": {"login": {"void": None}}}}
    return 200, ok, [f"Set-Cookie: session_id={sim.web_session}; Path=/; HttpOnly"]


def _tree(sim: BraiinsSim) -> dict[str, Any]:
    """Everything the simulator answers, as GraphQL would before a selection cuts it."""
    from adapters.sim.braiins import BOS_VERSION

    w, ths = sim._advance()
    p = sim.preset("default")
    solving = sim.state.phase in ("mining", "waking")
    boards = [
        {
            "name": str(i + 1),
            "realHashrate": {"mhs5S": ths * 1e6 / 3},
            "nominalMhs": p.ths * 1e6 / 3,
            "hwDetails": {"chips": 126, "frequencyMhz": 525.0, "voltageV": 13.4},
            "temperatures": [
                {"name": "Board", "degreesC": round(sim.state.temp_c - 6, 1)},
                {"name": "Chip", "degreesC": round(sim.state.temp_c + 6, 1)},
            ],
        }
        for i in range(3)
    ]
    work = {
        "realHashrate": {"mhs5S": ths * 1e6},
        "nominalMhs": p.ths * 1e6,
        "childSolvers": boards,
    }
    return {
        "bos": {
            "hostname": "braiins-os",
            "faultLight": False,
            "info": {"version": {"full": BOS_VERSION}},
            "uptime": {"durationS": int(sim.clock() - sim.state.boot_at)},
        },
        "bosminer": {
            # the tuner's configuration, as in asic-rs's test data v24_09/gql_tuning.json
            "config": {
                "autotuning": {
                    "mode": "POWER_TARGET",
                    "powerTarget": int(sim.target_w),
                    "hashrateTarget": None,
                }
            },
            "info": {
                "modelName": f"Bitmain {sim.model}",
                "workSolver": work if solving else None,
                "fans": [{"name": str(i), "speed": 100, "rpm": 6000} for i in range(4)],
                "summary": {"power": {"limitW": int(sim.target_w), "approxConsumptionW": round(w)}},
            },
        },
    }


def _mutate(sim: BraiinsSim, sel: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """Do what the mutation asks (nothing under an ``ignore`` fault) and answer it."""
    ignore = sim._fault(FaultKind.IGNORE) is not None
    bosminer = sel.get("bosminer", {})
    out: dict[str, Any] = {}
    if "stop" in bosminer:
        if not ignore:
            sim.sleep()
        out["stop"] = {"void": None}
    if "start" in bosminer:
        if not ignore:
            sim.wake()
        out["start"] = {"void": None}
    if "updateAutotuning" in bosminer.get("config", {}):
        watts = int(variables.get("limit", 0))
        lo, hi = sim.power_range()  # the tuner's range, as the gRPC SetPowerTarget keeps it
        if watts <= 0 or not lo <= watts <= hi:
            reply: dict[str, Any] = {
                "message": f"power target {watts} W out of range [{lo:g}, {hi:g}] W"
            }
        else:
            if not ignore:
                sim.set_target(float(watts))
            reply = {"autotuning": {"powerTarget": watts, "enabled": True}}
        out["config"] = {"updateAutotuning": reply}
    return {"bosminer": out}
