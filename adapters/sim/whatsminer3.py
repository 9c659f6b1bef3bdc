"""A simulated Whatsminer on firmware after 2024-11: MicroBT's API v3 on 4433.

What pyasic (0.79) sends and parses for such a miner, and MicroBT's API v3 documentation
(https://apidoc.whatsminer.com/, mirrored with examples in the ``matroskin`` crate's
``docs/api-doc``, docs.rs/crate/matroskin), each behaviour with its source:

- **Framing** (MicroBT "TCP Data Framing"; pyasic ``rpc/btminer.py``
  ``BTMinerV3RPCAPI.send_command`` / ``_read_bytes``): each message is a 4-byte
  little-endian length and that many bytes of JSON, both ways; a zero length is a
  heartbeat. The connection stays open (pyasic closes it after one answer) and is closed
  after 300 s without data.
- **Answers** (MicroBT "Overview"; matroskin ``response_code.rs``): ``{"code": 0, "when":
  <unix s>, "msg": ..., "desc": <cmd>}``; ``code`` -1 generic failure (a wrong password),
  -2 invalid command or parameter, -3 invalid JSON item, -4 no permission (write access
  off, or another account). The message texts of failures are not documented; only the
  codes are, so a client must judge by the code.
- **Reads** (``get.*``, no authentication): ``get.device.info`` (``param`` picks a section:
  ``miner``, ``system``, ``power``, ``network``, ``salt``, ``error-code``; pyasic reads
  ``msg.miner.type`` for the model, ``msg.system.fwversion``, ``msg.system.api``,
  ``msg.network.mac`` / ``hostname``, ``msg.error-code``, ``msg.salt``; discovery wants a
  ``miner`` section), ``get.miner.status`` with ``summary`` (``power-realtime``,
  ``power-limit``, ``hash-realtime`` TH/s, ``factory-hash``, ``elapsed``, chip
  temperatures, fans), ``edevs`` (per board ``hash-average``, ``chip-temp-min`` /
  ``-max``, ``effective-chips``) or ``pools``; ``get.miner.setting``. Field names as pyasic
  ``BTMINERV3_DATA_LOC`` and MicroBT's examples.
- **Writes** (``set.*``; MicroBT "Token Generation"; pyasic ``send_command``): the request
  carries ``ts``, ``account`` ("super", as pyasic sends) and ``token``, the first 8
  characters of base64(sha256(cmd + password + salt + ts)), the salt from
  ``get.device.info`` ``salt``. ``set.miner.service`` with ``start`` / ``stop`` /
  ``restart`` (pyasic's ``resume_mining`` / ``stop_mining`` / ``restart_backend``, which
  want ``msg`` "ok"), ``enable`` / ``disable`` (start at boot; state unchanged);
  ``set.miner.power_limit`` with watts 0-99999, after which "the device will restart to
  apply the new setting" (a btminer restart: boot, then the ramp, ``wake_s``); the
  limit in force is the least of the user's and the miner's standard power
  (``get.miner.setting``: "the final power limit is the minimum" of the PSU's, the
  protection's, the user's and the mode's). A stopped miner keeps the new limit for its
  next start (not documented; a restart that also started mining would be a surprise).
  ``ts`` freshness is not checked (not documented). Write access is on: MicroBT ships it
  off and blocks writes with the default password until changed in WhatsMinerTool;
  ``write_access=False`` answers -4 as such a miner does.
- **Port 4028**: pyasic 0.79's factory picks v2 or v3 from ``get_version``'s
  ``Msg.fw_ver`` on 4028 (``get_miner_version_whatsminer``; a version after 2024-11 is
  v3, ``BTMiner.__new__``). Field reports of such firmware (pyasic issues #314, #396:
  ``fw_ver`` read over 4028, model and power not) show btminer still answering there;
  here 4028 answers ``get_version`` (code 131) and every other command with btminer's v2
  error status (code 14 "invalid cmd", ``Description`` "btminer"), which is how pyasic's
  socket probe (``version``, ``devdetails``) tells a Whatsminer; the model then comes
  from ``get.device.info`` on 4433 (``devdetails`` has none). pyasic asks 4433 for the
  type (``_socket_ping_btminer_v3``) only when 4028 gives no data, and for the version
  only when 4028 answers without one: with 4028 closed it finds the miner but no version
  and picks API v2, which cannot drive it (``legacy_port=False`` shows that).

What pyasic 0.79 does not read on v3: the mining state (no ``is_mining`` data location;
``MinerData`` says True) and the board temperatures as chip temperatures (only
``temp``/``inlet_temp``). ``set_power_limit`` returns True whatever the miner answers.

Faults as the other simulators (:class:`~adapters.sim.server.FaultKind`) on both ports:
``ignore`` (writes answered "ok", nothing changes), ``garble`` (code 0 with a ``msg``
pyasic cannot read), ``slow-write`` (done ``delay_s`` after the answer), ``malformed``,
``hang``, ``slow``, ``refuse``, ``dropout``, ``reboot``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters.sim.calllog import CallLog
from adapters.sim.server import FaultKind, MinerServer

FW_VERSION = "20250214.16.Rel"  # after 2024-11: pyasic 0.79 speaks API v3 on 4433
API_VERSION = "3.0.3"
API_PORT = 4433
ACCOUNT = "super"  # the account pyasic 0.79 writes as (BTMinerV3RPCAPI.send_command)
IDLE_CLOSE_S = 300.0  # MicroBT: closed after 300 s of inactivity
MAX_REQUEST = 1 << 16
#: API v3 answer codes (MicroBT "Overview").
OK, FAIL, INVALID_COMMAND, INVALID_ITEM, NO_PERMISSION = 0, -1, -2, -3, -4
SERVICE_OPS = ("start", "stop", "restart", "enable", "disable")
_SALT_CHARS = string.ascii_letters + string.digits


def v3_token(cmd: str, password: str, salt: str, ts: int) -> str:
    """The write token (MicroBT "Token Generation"): base64(sha256(cmd+password+salt+ts))[:8]."""
    digest = hashlib.sha256(f"{cmd}{password}{salt}{ts}".encode()).digest()
    return base64.b64encode(digest).decode()[:8]


def frame(payload: bytes) -> bytes:
    """One message as API v3 sends it: its length (4 bytes, little-endian), then itself."""
    return len(payload).to_bytes(4, "little") + payload


@dataclass
class WhatsminerV3Sim(MinerServer):
    """One simulated Whatsminer on ``host``: API v3 on ``api_port``, ``get_version`` on 4028;
    ``model`` is a catalog name for the dynamics, ``reported_model`` what ``type`` says."""

    model: str = "Whatsminer M60"
    reported_model: str = "M60_VK30"
    password: str = "super"  # pyasic 0.79's default for the v3 API
    write_access: bool = True
    api_port: int = API_PORT
    writes: CallLog[tuple[str, Any]] = field(default_factory=CallLog)

    #: 4028 answers ``get_version`` (False: nothing listens on 4028 at all).
    legacy_port: bool = True

    description: ClassVar[str] = "btminer"  # in 4028's error statuses, as API v2's

    def __post_init__(self) -> None:
        super().__post_init__()
        self.salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(8))
        self.service_enabled = True
        self._api: asyncio.AbstractServer | None = None

    # -- serving: API v3 beside the 4028 stub, following the same faults -------------------

    async def start(self) -> None:
        await super().start()
        if not self.legacy_port and self._server is not None:
            self._server.close()  # refused on 4028; the object stays, as "listening"

    async def _open_more(self) -> None:
        self._api = await asyncio.start_server(
            self._serve_v3, self.host, self.api_port, reuse_address=True, backlog=64
        )

    def _close_more(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @property
    def api_listening(self) -> bool:
        return self._api is not None

    async def _serve_v3(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connection(writer):
            while True:
                async with asyncio.timeout(IDLE_CLOSE_S):
                    n = int.from_bytes(await reader.readexactly(4), "little")
                    if n == 0:
                        continue  # a heartbeat
                    if n > MAX_REQUEST:
                        return
                    raw = await reader.readexactly(n)
                self.commands_seen += 1
                if self._fault(FaultKind.REBOOT) is not None:
                    self.faults = [f for f in self.faults if f.kind is not FaultKind.REBOOT]
                    self._reboot()
                    return  # dropped without an answer
                if not await self._hang_or_slow(lambda: self._api is not None):
                    return
                if self._fault(FaultKind.MALFORMED) is not None:
                    body = b'{"code":0,"msg":{"summary":' + b"\xff\xfe"
                else:
                    body = json.dumps(self.answer_v3(raw), separators=(",", ":")).encode()
                writer.write(frame(body))
                await writer.drain()

    # -- port 4028: only what pyasic's factory asks of a v3 miner --------------------------

    def _unknown(self, command: str) -> dict[str, Any]:
        return self._status("E", 14, "invalid cmd")

    def _cmd_get_version(self, _: list[str]) -> dict[str, Any]:
        msg = {"api_ver": API_VERSION, "fw_ver": FW_VERSION, "platform": "H616"}
        return {"STATUS": "S", "When": int(time.time()), "Code": 131, "Msg": msg}

    # -- API v3 ------------------------------------------------------------------------------

    @staticmethod
    def _reply(code: int, msg: Any, cmd: str) -> dict[str, Any]:
        return {"code": code, "when": int(time.time()), "msg": msg, "desc": cmd}

    def answer_v3(self, raw: bytes) -> dict[str, Any]:
        """The answer to one API v3 request, as the miner gives it."""
        try:
            req = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return self._reply(FAIL, "invalid json", "")
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return self._reply(INVALID_ITEM, "invalid json item: cmd", "")
        cmd = req["cmd"]
        if self._fault(FaultKind.GARBLE) is not None:
            return self._reply(OK, [cmd, None], cmd)  # JSON, not the shape pyasic reads
        if cmd.startswith("set."):
            return self._write(cmd, req)
        reads: dict[str, Callable[[Any], Any]] = {
            "get.device.info": self._device_info,
            "get.miner.status": self._miner_status,
            "get.miner.setting": self._miner_setting,
        }
        handler = reads.get(cmd)
        if handler is None:
            return self._reply(INVALID_COMMAND, "invalid command", cmd)
        got = handler(req.get("param"))
        if got is None:
            return self._reply(INVALID_COMMAND, f"invalid param {req.get('param')!r}", cmd)
        return self._reply(OK, got, cmd)

    def _mining(self) -> bool:
        return not (self.state.phase == "sleeping" and self.state.ramp is None)

    def limit_w(self) -> float:
        """The power limit in force: the user's, never above the standard power."""
        return min(self.target_w, self.preset("default").watts)

    def _device_info(self, param: Any) -> dict[str, Any] | None:
        h = self.host.split(".")
        sections: dict[str, Any] = {
            "network": {"ip": self.host, "proto": "dhcp", "netmask": "255.255.255.0",
                        "mac": self._mac, "hostname": "WhatsMiner"},
            "miner": {"working": "true" if self._mining() else "false",
                      "type": self.reported_model, "hash-board": self.reported_model[-3:],
                      "miner-sn": f"SIMWM3{h[-2]}{h[-1]}", "cointype": "BTC",
                      **{f"pcbsn{i}": f"SIMPCB{h[-1]}{i}" for i in range(3)}},
            "system": {"api": API_VERSION, "fwversion": FW_VERSION, "platform": "H616",
                       "ledstatus": "auto"},
            "power": {"type": "P221B", "mode": "1", "fanspeed": 6000},
            "error-code": [],
            "salt": self.salt,
        }  # fmt: skip
        if param in (None, ""):
            return sections
        if param in sections:
            return {param: sections[param]}
        return None

    def _miner_status(self, param: Any) -> dict[str, Any] | None:
        w, ths = self._advance()
        t = self.state.temp_c
        if param == "summary":
            summary = {
                "elapsed": int(self.clock() - self.state.boot_at),
                "hash-realtime": round(ths, 2),
                "hash-average": round(ths, 2),
                "factory-hash": self.preset("default").ths,
                "power-realtime": round(w),
                "power-5min": round(w),
                "power-limit": round(self.limit_w()),
                "environment-temperature": self.ambient_c,
                "chip-temp-min": round(t - 4, 1),
                "chip-temp-avg": round(t + 2, 1),
                "chip-temp-max": round(t + 8, 1),
                "fan-speed-in": 4200 if w > 100 else 0,
                "fan-speed-out": 4300 if w > 100 else 0,
                "up-freq-finish": 1,
            }
            return {"summary": summary}
        if param == "edevs":
            boards = [
                {"id": i, "hash-average": round(ths / 3, 2), "chip-temp-min": round(t - 4, 1),
                 "chip-temp-max": round(t + 8, 1), "effective-chips": 156,
                 "factory-hash": round(self.preset("default").ths / 3, 2)}
                for i in range(3)
            ]  # fmt: skip
            return {"edevs": boards}
        if param == "pools":
            pool = {"id": 1, "url": "stratum+tcp://127.0.0.1:3333", "status": "alive",
                    "account": "gridsched.sim", "stratum-active": True}  # fmt: skip
            return {"pools": [pool]}
        return None

    def _miner_setting(self, _: Any) -> dict[str, Any]:
        return {"power-limit": round(self.limit_w()), "power-mode": "normal",
                "power": round(self.preset("default").watts), "fast-boot": "disable"}  # fmt: skip

    # -- writes: token-signed ----------------------------------------------------------------

    def _write(self, cmd: str, req: dict[str, Any]) -> dict[str, Any]:
        ts, token = req.get("ts"), req.get("token")
        if not isinstance(ts, int) or not isinstance(token, str):
            return self._reply(INVALID_ITEM, "invalid json item: ts/token", cmd)
        if req.get("account") != ACCOUNT or not self.write_access:
            return self._reply(NO_PERMISSION, "no permission", cmd)
        if token != v3_token(cmd, self.password, self.salt, ts):
            return self._reply(FAIL, "invalid token", cmd)
        param = req.get("param")
        effect: Callable[[], None] | None
        if cmd == "set.miner.service":
            effect = self._service_effect(param)
        elif cmd == "set.miner.power_limit":
            effect = self._limit_effect(param)
        elif cmd == "set.system.reboot":
            effect = self._reboot_soon
        elif cmd == "set.system.led":
            effect = _nothing
        else:
            return self._reply(INVALID_COMMAND, "invalid command", cmd)
        if effect is None:
            return self._reply(INVALID_COMMAND, f"invalid param {param!r}", cmd)
        self.writes.append((cmd, param))  # accepted (an ``ignore`` fault still drops it)
        if self._fault(FaultKind.IGNORE) is None:
            self._later(effect)
        return self._reply(OK, "ok", cmd)

    def _service_effect(self, op: Any) -> Callable[[], None] | None:
        if op not in SERVICE_OPS:
            return None
        if op == "stop":
            return self.sleep
        if op == "start":
            return self.wake
        if op == "restart":
            return self._restart_mining
        enable = op == "enable"

        def switch() -> None:
            self.service_enabled = enable

        return switch

    def _limit_effect(self, param: Any) -> Callable[[], None] | None:
        if isinstance(param, bool) or not isinstance(param, int | float):
            return None
        if param != int(param) or not 0 <= param <= 99999:
            return None
        watts = float(param)

        def apply() -> None:
            self.set_target(min(watts, self.preset("default").watts))
            self.target_w = watts  # the user's limit, as written; limit_w() caps it
            if self.state.phase in ("mining", "waking"):
                self._restart_mining()  # "the device will restart to apply"

        return apply


def _nothing() -> None:
    """A write with no effect on the simulated physics (the LED)."""
