"""A simulated Auradine Teraflux miner (FluxOS): its GCMiner API on 4028, its web API on 8080.

Auradine publishes no API reference that this repository could read; every shape below is
what two independent clients send and parse, and the replies captured from a Teraflux
AT1500 that one of them tests against:

- pyasic 0.79 (``miners/factory.py``, ``miners/backends/auradine.py``,
  ``web/auradine.py``), installed in the virtual environment. Discovery: the socket probe
  (``version``) names "GCMiner" (``_parse_socket_type``: "GCMINER" or "FLUXOS"), the model
  is ``devdetails``' ``DEVDETAILS[0].Model`` (``get_miner_model_auradine``: "AT1500",
  "AT2860", ...). Readings: hashrate and uptime from the RPC ``summary``
  (``SUMMARY[0]["MHS 5s"]``, ``Elapsed``), boards from ``devs`` (``DEVS[].ID`` from 1,
  ``"MHS 5s"``, ``Temperature``) and the web ``ipreport`` (``IPReport[0].HBSerialNo``,
  ``mac``, ``version``, ``hostname``); power from the web ``psu``
  (``PSU[0].PowerIn`` as "58.94W"), the power target from ``mode`` (``Mode[0].Power``,
  else ``PSU[0].PoutMax``), mining from ``Mode[0].Sleep == "off"``, fans from ``fan``,
  the locate light from ``led``. Auth: ``POST /token`` with ``{"command": "token",
  "user": "admin", "password": "admin"}`` (pyasic's setting
  ``default_auradine_web_password``) answers ``Token[0].Token``, sent as a ``Token``
  header with every call; a write is a POST to ``/<command>`` of its parameters with
  ``"command"`` added: ``stop_mining`` posts ``mode`` with ``{"sleep": "on"}``,
  ``resume_mining`` ``{"sleep": "off"}``, ``set_power_limit`` ``{"mode": "custom",
  "tune": "power", "power": <W>}``.
- asic-rs (``asic-rs-firmwares/auradine/src/backends/v1/``: ``web.rs``, ``rpc.rs``,
  ``mod.rs``) sends the same requests (pause ``{"sleep": "on"}``, resume
  ``{"sleep": "off"}``, power limit as above) and reads every answer's verdict from the
  cgminer-style ``STATUS[0].STATUS`` ("S"/"I" success, anything else an error with
  ``Msg``); a 401, or an error whose message names the token or session, makes it log on
  again once. Its test fixtures (``src/test/json/v1/*.json``) are replies captured from a
  Teraflux: ``version`` (Code 22, "GCMiner versions"), ``summary`` (11), ``devs`` (9),
  ``mode`` (540, "Operating mode: 'normal', sleep: 'false'"), ``psu`` (570), ``fan``
  (510), ``ipreport`` (620), each with its ``Description`` ("GCMiner-<date>-<hash>" on the
  RPC, "FluxOS-<date>-<hash>" on the web API). Their shapes are served here as captured.

Not from a source, and so chosen here and named: how the firmware answers a wrong password
(HTTP 200 with ``STATUS`` "E", which both clients read as a failure), a missing or stale
token (401 with ``STATUS`` "E", "Token is invalid or expired": both clients log on again
on it), a write it refuses (``STATUS`` "E" and its reason, e.g. a power outside the PSU's
range) and a write it takes (``STATUS`` "S" with the ``Mode`` table, as the ``mode``
read). ``command_answer`` puts another answer in place of the firmware's to ``POST
/mode`` (the tests' "answers in a shape nobody documents").

What the commands do is this simulator's physics (:mod:`adapters.sim.physics`): sleep
ramps down to the control board's draw, wake boots and ramps up, a power target retunes
(an exact target, as Braiins OS+ and Whatsminer). No Auradine model is in the catalog:
the dynamics are those of the catalog ``model`` given (the fleet's), the firmware reports
``reported_model``. Faults as the other simulators (:class:`~adapters.sim.server.FaultKind`)
on both ports: ``ignore`` (writes answered "S" and not done), ``garble`` (JSON in no shape
either client reads), ``slow-write``, ``malformed``, ``hang``, ``slow``, ``refuse``,
``dropout``, ``reboot``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters.sim.calllog import CallLog
from adapters.sim.server import FaultKind, MinerServer
from adapters.sim.web_port import read_http_request, write_http_reply

GCMINER = "GCMiner-2023-12.27-9bf070ee"
FLUXOS = "FluxOS-2023-12.27-9bf070ee"
FW_VERSION = "2023-12.27"
STALE = "Token is invalid or expired"


@dataclass
class AuradineSim(MinerServer):
    """One simulated Auradine miner on ``host``:4028 (GCMiner API) and ``web_port`` (web)."""

    web_port: int = 8080
    username: str = "admin"
    password: str = "admin"
    reported_model: str = "AT1500"
    #: A token stops working this long after it was issued (inf: while the miner runs).
    token_ttl_s: float = math.inf
    #: (HTTP status, JSON body or bytes) answered to ``POST /mode`` in place of the
    #: firmware's own; the write is done only when the body's ``STATUS`` says "S".
    command_answer: tuple[int, Any] | None = None
    web_calls: CallLog[tuple[str, str]] = field(default_factory=CallLog)  # (method, command)
    mode_posts: CallLog[dict[str, Any]] = field(default_factory=CallLog)

    description: ClassVar[str] = GCMINER

    def __post_init__(self) -> None:
        super().__post_init__()
        self._web: asyncio.AbstractServer | None = None
        self._tokens: dict[str, float] = {}
        self.tuned = False  # a power target was set ("custom" mode, "power" tune)

    # -- serving: the web API beside the GCMiner API, following the same faults ------------

    async def _open_more(self) -> None:
        self._web = await asyncio.start_server(
            self._serve_web, self.host, self.web_port, reuse_address=True
        )

    def _close_more(self) -> None:
        if self._web is not None:
            self._web.close()
            self._web = None
        self._tokens.clear()  # tokens live in the web server's memory

    def restart_api(self) -> None:
        """The web API server restarts (pyasic's ``restart_api_server``): tokens are gone."""
        self._tokens.clear()

    # -- the GCMiner API on 4028 ----------------------------------------------------------

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        return self._ok(22, "GCMiner versions", "VERSION", [{"GCMiner": "0.5", "API": "1.0"}])

    def _cmd_devdetails(self, _: list[str]) -> dict[str, Any]:
        rows = [
            {"DEVDETAILS": i, "Name": "ASICBoard", "ID": i + 1, "Model": self.reported_model}
            for i in range(3)
        ]
        return self._ok(69, "Device Details", "DEVDETAILS", rows)

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        self.state.accepted += 1 if ths > 0 else 0
        mhs = ths * 1e6
        body = {
            "Elapsed": int(self.clock() - self.state.boot_at),
            "MHS av": mhs,
            "MHS 5s": mhs,
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_devs(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        rows = [
            {
                "DEV": i,
                "Name": "ASICBoard",
                "ID": i,
                "Enabled": True,
                "Status": "Alive",
                "Temperature": round(t + i * 0.5, 2),
                "MHS 5s": ths * 1e6 / 3,
            }
            for i in (1, 2, 3)
        ]
        return self._ok(9, "3 Dev(s)", "DEVS", rows)

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "1 Pool(s)", "POOLS", [self._pool()])

    # -- the web API -------------------------------------------------------------------------

    def _web_status(self, code: str, num: int, msg: str) -> dict[str, Any]:
        st = {"STATUS": code, "When": int(time.time()), "Code": num, "Msg": msg}
        return {"STATUS": [{**st, "Description": FLUXOS}], "id": 1}

    def _web_ok(self, num: int, msg: str, key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        out = self._web_status("S", num, msg)
        out[key] = rows
        return out

    async def _serve_web(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connection(writer, http=True):
            method, target, headers, raw = await read_http_request(reader)
            self.commands_seen += 1
            if not await self._hang_or_slow(lambda: self._web is not None):
                return
            status, body = self.route(method, target.split("?", 1)[0], headers, raw)
            garbled = None
            if self._fault(FaultKind.MALFORMED) is not None:
                garbled = b'{"STATUS":[{"STATUS":"S","Msg":' + b"\xff\xfe"
            await write_http_reply(writer, status, body, garbled)

    def route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """The answer to one request, as (HTTP status, body)."""
        name = path.strip("/")
        self.web_calls.append((method, name))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, self._web_status("E", 14, "Invalid JSON")
        if name == "token" and method == "POST":
            return 200, self._token(body)
        until = self._tokens.get(headers.get("token", ""))
        if until is None or self.clock() >= until:
            return 401, self._web_status("E", 401, STALE)
        if self._fault(FaultKind.GARBLE) is not None:
            return 200, {name: {"0": "?"}}  # JSON in no shape either client reads
        if method == "GET":
            got = self._web_get(name)
        elif method == "POST" and name == "mode":
            return self._post_mode(body if isinstance(body, dict) else {})
        else:
            got = None
        if got is None:
            return 404, self._web_status("E", 14, f"Invalid command: {name}")
        return 200, got

    def _token(self, body: Any) -> dict[str, Any]:
        user = body.get("user") if isinstance(body, dict) else None
        pw = body.get("password") if isinstance(body, dict) else None
        if user != self.username or pw != self.password:
            return self._web_status("E", 45, "Invalid user or password")
        token = secrets.token_hex(16)
        self._tokens[token] = self.clock() + self.token_ttl_s
        return self._web_ok(600, "Token", "Token", [{"Token": token}])

    def _web_get(self, name: str) -> dict[str, Any] | None:
        handler = {
            "ipreport": self._ipreport,
            "psu": self._psu,
            "mode": self._mode,
            "fan": self._fan,
            "led": self._led,
        }.get(name)
        return None if handler is None else handler()

    def _ipreport(self) -> dict[str, Any]:
        row = {
            "command": "ipreport",
            "SerialNo": "SIM" + self._mac.replace(":", "")[-8:],
            "ip": self.host,
            "mac": self._mac.lower(),
            "model": self.reported_model,
            "version": FW_VERSION,
            "hostname": "teraflux-sim",
            "HBSerialNo": [f"SIMHB{i}" for i in range(3)],
            "InternalType": "T0",
        }
        return self._web_ok(620, "IP Report", "IPReport", [row])

    def _psu(self) -> dict[str, Any]:
        w, _ths = self._advance()
        row = {
            "VoutSet": "11.50V",
            "Vin": "245.00V",
            "Iin": f"{w / 245.0:.2f}A",
            "PowerOut": f"{w * 0.96:.2f}W",
            "PowerIn": f"{w:.2f}W",
            "PoutMax": f"{self.max_w():.2f}W",
        }
        return self._web_ok(570, "PSU status", "PSU", [row])

    def _mode_row(self) -> dict[str, Any]:
        p = self.preset(self.state.profile)
        asleep = self.state.phase == "sleeping"
        row: dict[str, Any] = {
            "Mode": "custom" if self.tuned else "normal",
            "Sleep": "on" if asleep else "off",
            "Ths": round(p.ths),
        }
        row["Power"] = round(self.target_w)
        return row

    def _mode(self) -> dict[str, Any]:
        row = self._mode_row()
        sleep = "true" if row["Sleep"] == "on" else "false"
        msg = f"Operating mode: '{row['Mode']}', sleep: '{sleep}'"
        return self._web_ok(540, msg, "Mode", [row])

    def _fan(self) -> dict[str, Any]:
        _w, ths = self._advance()
        speed = 7000 if ths > 0 else 2000
        rows = [{"ID": i, "Speed": speed, "Target": speed, "Max": 7700} for i in (1, 2, 3, 4)]
        return self._web_ok(510, "Total fans: 4", "Fan", rows)

    def _led(self) -> dict[str, Any]:
        return self._web_ok(530, "LED", "LED", [{"Code": 2, "Msg": "Normal"}])

    def min_w(self) -> float:
        return min(p.watts for p in self.presets)

    def max_w(self) -> float:
        return max(p.watts for p in self.presets)

    def _post_mode(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.mode_posts.append(body)
        if self.command_answer is not None:
            status, answer = self.command_answer
            ok = isinstance(answer, dict) and _says_success(answer)
            if status == 200 and ok:
                self._mode_effect(body)
            return status, answer
        err = self._mode_error(body)
        if err is not None:
            return 200, self._web_status("E", 541, err)
        self._mode_effect(body)
        return 200, self._mode()

    def _mode_error(self, body: dict[str, Any]) -> str | None:
        """Why the firmware refuses this ``mode`` write; None: it takes it."""
        sleep = body.get("sleep")
        if sleep is not None and sleep not in ("on", "off"):
            return f"Invalid sleep value: {sleep!r}"
        if "power" in body:
            power = body["power"]
            if not isinstance(power, int | float) or isinstance(power, bool):
                return f"Invalid power value: {power!r}"
            if not self.min_w() <= power <= self.max_w():
                return f"Power {power} out of range [{self.min_w():g}, {self.max_w():g}]"
            if body.get("mode") != "custom" or body.get("tune") != "power":
                return "Power target needs mode 'custom' and tune 'power'"
        if sleep is None and "power" not in body:
            return "Invalid parameters"
        return None

    def _mode_effect(self, body: dict[str, Any]) -> None:
        if self._fault(FaultKind.IGNORE) is not None:
            return  # answered as taken, nothing done
        if "power" in body:
            watts = float(body["power"])
            self.tuned = True
            self.target_w = watts  # the setting reads back at once, the miner retunes
            self._later(lambda: self.set_target(watts))
        if body.get("sleep") == "on":
            self._later(self.sleep)
        elif body.get("sleep") == "off":
            self._later(self.wake)


def _says_success(answer: dict[str, Any]) -> bool:
    status = answer.get("STATUS")
    first = status[0] if isinstance(status, list) and status else None
    return isinstance(first, dict) and first.get("STATUS") in ("S", "I")
