"""A simulated Whatsminer (MicroBT, btminer API v2 on 4028), with token-encrypted writes.

What pyasic (0.79) reads and writes for a Whatsminer whose firmware predates API v3
(``BTMinerV2`` in ``miners/backends/btminer.py``, ``rpc/btminer.py``):

- **Reads** are plain JSON on 4028 (``{"command": ...}``, or ``{"cmd": ...}`` as field
  clients send it; ``a+b`` multicommands): ``devdetails`` (``DEVDETAILS[0].Model``; pyasic
  drops underscores and the last digit to pick a class), ``summary`` (``MHS 1m``,
  ``Power``, ``Power Limit``, ``Error Code Count``, ``Fan Speed In`` / ``Out``, ``Env
  Temp``, ``Factory GHS``, ``Power Mode``), ``devs`` (per board ``Chip Temp Avg``,
  ``Temperature``, ``MHS 1m``), ``pools`` (cgminer's ``POOLS``), and the commands btminer
  answers only alone (pyasic splits them off): ``status`` (``Msg.mineroff``
  "true"/"false"), ``get_version`` (``Msg.fw_ver``, code 131; a version after 2024-11
  would make pyasic speak API v3 on 4433 instead), ``get_error_code``, ``get_token``
  (``Msg.salt``, ``time``, ``newsalt``, code 134), ``get_psu`` (``Msg.fan_speed``, ``pin``,
  ``name``, ``model``, ``hw_version``, ``sw_version``, ``serial_no``, ``vendor``,
  ``temp0``; no ``iin``/``vin``) and ``get_miner_info`` (``Msg.mac``, ``hostname``,
  ``minersn``, ``ledstat``, ``ip``, ``proto``, ``netmask``, ``gateway``, ``dns``,
  ``powersn``; its ``info`` filter is not honoured: the whole set is answered). The fields
  are what pyasic's plain ``get_data()`` reads (``BTMINER_DATA_LOC`` and its ``_get_*``),
  named as field clients parse them (a Go client's ``get_miner_info`` struct; the MiningOS
  worker's ``mock/initial_states``; a reverse-engineering note of btminer's ``api`` daemon:
  ``get_psu`` reads ``/sys/bitmicro/power/{name,hw_version,model,sw_version}``). A
  multicommand answers each part under its own name, an unknown one with its own error
  status, as cgminer's API does; no source shows btminer doing otherwise (pyasic drops the
  whole answer when any part failed).
- **Writes** are privileged: ``{"enc": 1, "data": base64(AES-256-ECB(json))}`` with the
  key sha256 of the admin password md5-crypted with ``salt``, and inside, ``token`` = the
  md5-crypt of that plus ``time`` with ``newsalt``; the answer is ``{"enc": base64(...)}``
  under the same key. A write that does not decrypt (a wrong password) answers, in plain,
  code 23 ``"invalid token"`` (these words are the simulator's own: API v2.0.5 names code
  23 "invalid JSON message"). Commands: ``power_off`` (``respbefore``), ``power_on``,
  ``adjust_power_limit`` (``power_limit`` in W), answered ``Msg`` "API command OK". The
  power limit "Cannot be higher than the ordinary power of the machine ... The miner will
  reboot after this is set" (pyasic ``BTMinerRPCAPI.adjust_power_limit``): the limit in
  force is the least of the one asked and the standard power, and btminer restarts to
  apply it (the boot and ramp, ``wake_s``), as the API v3 simulator does after MicroBT's
  v3 document; a stopped miner keeps it for its next start.
- **Write access** (MicroBT's API v2.0.5, "Summary": "The API read permission is granted
  by default, and the API write permission needs to be enabled through the WhatMinerTool
  ... 1. Change the default password(admin); 2. Enable the API"): ``write_access=False``
  answers every write, in plain and before anything else, ``write_refusal`` ``"switch"``:
  ``"can't access write cmd"`` (the firmware's words pyasic's ``send_privileged_command``
  special-cases, reported by field clients with the Miner API Switch off) or ``"code45"``:
  ``"permission denied"`` (API v2.0.5's code 45). The code of the first is not documented;
  45 is used for both (clients judge by ``Msg``). Reads and ``get_token`` still answer.
  The default is on, with the factory password: a simulated fleet is one its operator
  has unlocked, so that ``fleet simulate`` and ``make demo`` can drive it; a real miner
  comes locked.
- **Tokens** (MicroBT's API v2.0.5, "Protocol": "one IP can get 32 tokens, and a token
  keepalive time is 30 minutes"; message codes 135 "check token error", 136 "token over
  max times"): each ``get_token`` issues a token of its own (a fresh ``time`` and
  ``newsalt``) and an earlier one stays good until its 30 minutes are up, as the
  MiningOS worker's own simulator of this API keeps a set of valid tokens
  (github.com/tetherto/miningos-wrk-miner-whatsminer, ``mock/cmds/get_token.js``). A write
  under an expired or unknown token is answered, under the key, code 135 "check token
  error" and not carried out (that worker's client, ``protocols/wm-api-v2.js``, drops its
  token on 135 and sends again). A 33rd live token is refused with code 136. The cap is
  kept per miner, not per client IP: one controller is one IP. The AES key depends only on
  the password and ``salt``, so a miner derives it once; each token's sign once, when
  issued (the md5-crypts a real miner does in C cost this simulator's one process
  milliseconds each, which it spent three times per write before). One AES-ECB context
  each way is kept with the key (ECB carries nothing from one block to the next).

The same scheme is described by MicroBT's API documentation (apidoc.whatsminer.com) and
the community client github.com/satoshi-anonymoto/whatsminer-api. Faults as the other
simulators, ``ignore`` and ``garble`` included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from passlib.hash import md5_crypt  # type: ignore[import-untyped]  # pyasic depends on it

from adapters.sim.calllog import CallLog
from adapters.sim.server import FaultKind, MinerServer

FW_VERSION = "20240620.18.REL"  # before 2024-11: pyasic talks API v2
API_VERSION = "2.0.5"
TOKEN_TTL_S = 1800.0  # API v2.0.5: "a token keepalive time is 30 minutes"
MAX_TOKENS = 32  # API v2.0.5: "one IP can get 32 tokens"
#: The firmware's answer to a write while the API's write switch is off (pyasic 0.79
#: ``BTMinerRPCAPI.send_privileged_command`` special-cases these words).
WRITE_SWITCH_OFF = "can't access write cmd"
_SALT_CHARS = string.ascii_letters + string.digits


def _salt() -> str:
    return "".join(secrets.choice(_SALT_CHARS) for _ in range(8))


def _crypt(word: str, salt: str) -> str:
    """The part of an md5-crypt ``$1$salt$hash`` after the salt, as btminer uses it."""
    return str(md5_crypt.using(salt=salt).hash(word)).split("$")[3]


@dataclass
class WhatsminerSim(MinerServer):
    """One simulated Whatsminer on ``host``:4028; ``model`` is a catalog name for the
    dynamics, ``reported_model`` what ``devdetails`` says."""

    model: str = "Whatsminer M50"
    reported_model: str = "M50_VH31"
    admin_password: str = "admin"
    #: How long a token stays good after ``get_token`` (API v2.0.5: 30 minutes).
    token_ttl_s: float = TOKEN_TTL_S
    #: Whether writes are allowed (MicroBT ships them off: see the module docstring).
    write_access: bool = True
    #: How a miner with writes off refuses one: ``"switch"`` or ``"code45"``.
    write_refusal: str = "switch"

    description: ClassVar[str] = "btminer"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._salt = _salt()
        self._pwd_md5 = ""  # md5-crypt of the password with salt: derived once (_key)
        self._aes_key = b""
        self._dec: Any = None  # the key's AES-ECB contexts, made with it (_key)
        self._enc: Any = None
        self._tokens: dict[str, float] = {}  # live sign -> when issued (self.clock())
        #: A write's packet, decrypted and parsed: the key never changes (ECB: the same bytes
        #: are the same command), so each packet is opened once; its token is still checked
        #: on every write.
        self._opened: dict[str, dict[str, Any]] = {}
        self.tokens_issued = 0
        self.writes: CallLog[str] = CallLog()

    def _key(self) -> bytes:
        if not self._aes_key:
            self._pwd_md5 = _crypt(self.admin_password, self._salt)
            self._aes_key = hashlib.sha256(self._pwd_md5.encode()).digest()
            # ECB keeps nothing between whole blocks: one context each way serves every write
            cipher = Cipher(algorithms.AES(self._aes_key), modes.ECB())
            self._dec, self._enc = cipher.decryptor(), cipher.encryptor()
        return self._aes_key

    def _live_tokens(self) -> dict[str, float]:
        now = self.clock()
        tokens = self._tokens
        # issued in order: only when the oldest has ended is there anything to drop
        if tokens and now - next(iter(tokens.values())) >= self.token_ttl_s:
            self._tokens = {s: t for s, t in tokens.items() if now - t < self.token_ttl_s}
        return self._tokens

    def expire_tokens(self) -> None:
        """Every token issued so far ends, as 30 minutes would end it (for tests)."""
        self._tokens.clear()

    # -- the API ----------------------------------------------------------------------------

    def _st(self, code: int, msg: Any, ok: bool = True) -> dict[str, Any]:
        """btminer's own (flat) status shape for its extra commands."""
        return {
            "STATUS": "S" if ok else "E",
            "When": int(time.time()),
            "Code": code,
            "Msg": msg,
            "Description": "",
        }

    def _invalid_json(self) -> dict[str, Any]:
        return self._st(14, "invalid json", ok=False)

    def _unknown(self, command: str) -> dict[str, Any]:
        return self._status("E", 14, "invalid cmd")

    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("enc"):
            return self._write(str(req.get("data", "")))
        if "command" not in req and "cmd" in req:  # btminer takes either key for a read
            req = {**req, "command": req["cmd"]}
        return super()._request(req)

    # -- reads: plain JSON -----------------------------------------------------------------

    def _cmd_devdetails(self, _: list[str]) -> dict[str, Any]:
        body = [
            {"DEVDETAILS": i, "Name": "SM", "ID": i, "Driver": "bitmicro",
             "Model": self.reported_model}
            for i in range(3)
        ]  # fmt: skip
        return self._ok(69, "Device Details", "DEVDETAILS", body)

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        w, ths = self._advance()
        summary = {
            "Elapsed": int(self.clock() - self.state.boot_at),
            "MHS av": ths * 1e6,
            "MHS 5s": ths * 1e6,
            "MHS 1m": ths * 1e6,
            "Temperature": round(self.state.temp_c, 1),
            "Power": round(w),
            "Power Limit": int(self.target_w),
            "Power Mode": "Normal",
            "Factory GHS": round(self.preset("default").ths * 1000),
            "Env Temp": self.ambient_c,
            "Fan Speed In": self._fan_rpm(w, 4200),
            "Fan Speed Out": self._fan_rpm(w, 4300),
            "Firmware Version": f"'{FW_VERSION}'",
            "Error Code Count": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [summary])

    @staticmethod
    def _fan_rpm(watts: float, rpm: int) -> int:
        return rpm if watts > 100 else 0  # hashboards powered off: the fans rest

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "1 Pool(s)", "POOLS", [self._pool()])

    def _cmd_get_psu(self, _: list[str]) -> dict[str, Any]:
        w, _ths = self._advance()
        h = self.host.split(".")
        psu = {
            "name": "P221B", "model": "P221B", "hw_version": "R00007",
            "sw_version": "20230523_P00025.20230515_S00024", "vendor": "1",
            "serial_no": f"SIMPSU{h[-2]}{h[-1]}", "pin": str(round(w)),
            "fan_speed": str(self._fan_rpm(w, 6000)),
            "temp0": str(round(self.state.temp_c - 20, 1)),
        }  # fmt: skip
        return self._st(131, psu)

    def _cmd_get_miner_info(self, _: list[str]) -> dict[str, Any]:
        h = self.host.split(".")
        info = {
            "ip": self.host, "proto": "dhcp", "netmask": "255.255.255.0",
            "gateway": ".".join([*h[:3], "254"]), "dns": ".".join([*h[:3], "254"]),
            "hostname": "WhatsMiner", "mac": self._mac, "ledstat": "auto",
            "minersn": f"SIMWM2{h[-2]}{h[-1]}", "powersn": f"SIMPSU{h[-2]}{h[-1]}",
        }  # fmt: skip
        return self._st(131, info)

    def _cmd_devs(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        boards = [
            {"ASC": i, "Slot": i, "Enabled": "Y", "Status": "Alive",
             "Temperature": round(t - 6, 1), "Chip Temp Avg": round(t + 6, 1),
             "MHS 1m": ths * 1e6 / 3, "Effective Chips": 156, "PCB SN": f"SIMPCB{i}"}
            for i in range(3)
        ]  # fmt: skip
        return self._ok(9, "3 ASC(s)", "DEVS", boards)

    def _cmd_status(self, _: list[str]) -> dict[str, Any]:
        self._advance()
        off = self.state.phase == "sleeping" and self.state.ramp is None
        msg = {"mineroff": "true" if off else "false", "FirmwareVersion": FW_VERSION}
        return self._st(131, msg)

    def _cmd_get_version(self, _: list[str]) -> dict[str, Any]:
        return self._st(131, {"api_ver": API_VERSION, "fw_ver": FW_VERSION, "platform": "H6OS"})

    def _cmd_get_error_code(self, _: list[str]) -> dict[str, Any]:
        return self._st(131, {"error_code": []})

    def _cmd_get_token(self, _: list[str]) -> dict[str, Any]:
        live = self._live_tokens()
        if len(live) >= MAX_TOKENS:
            return self._st(136, "token over max times", ok=False)
        stamp, newsalt = str(int(time.time()) % 10000), _salt()
        self._key()
        live[_crypt(self._pwd_md5 + stamp, newsalt)] = self.clock()
        self.tokens_issued += 1
        return self._st(134, {"time": stamp, "salt": self._salt, "newsalt": newsalt})

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = [{"API": API_VERSION, "Miner": FW_VERSION, "Type": "btminer"}]
        return self._ok(22, "btminer versions", "VERSION", body)

    # -- writes: privileged, encrypted ------------------------------------------------------

    def _write(self, data: str) -> dict[str, Any]:
        if not self.write_access:  # refused before anything is opened or checked
            if self.write_refusal == "code45":
                return self._st(45, "permission denied", ok=False)
            return self._st(45, WRITE_SWITCH_OFF, ok=False)
        self._key()  # the key and its two contexts, made once
        cmd = self._opened.get(data)
        if cmd is None:
            try:
                blob = base64.b64decode(data)
                if len(blob) % 16:  # not whole AES blocks (the context would keep the rest)
                    raise ValueError("not whole blocks")
                cmd = json.loads(self._dec.update(blob).rstrip(b"\0").decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                return self._st(23, "invalid token", ok=False)  # not our key: wrong password
            if not isinstance(cmd, dict):
                return self._st(23, "invalid token", ok=False)
            if len(self._opened) < 64:  # a client sends the same few packets per token
                self._opened[data] = cmd
        cmd = dict(cmd)  # the token is checked below, each time, as a miner checks it
        if str(cmd.get("token")) not in self._live_tokens():  # expired, or never issued
            return self._sealed(self._st(135, "check token error", ok=False))
        name = str(cmd.get("cmd", ""))
        self.writes.append(name)
        if self._fault(FaultKind.GARBLE) is not None:  # as a plain command's: nothing done
            return self._sealed({"STATUS": "S", name.upper(): {"0": "?"}, "id": 1})
        reply = self._st(131, "API command OK")
        ignore = self._fault(FaultKind.IGNORE) is not None
        if name == "power_off":
            if not ignore:
                self.sleep()
        elif name == "power_on":
            if not ignore:
                self.wake()
        elif name == "adjust_power_limit":
            try:
                watts = float(cmd["power_limit"])
            except (KeyError, TypeError, ValueError):
                return self._sealed(self._st(14, "invalid power_limit", ok=False))
            if not ignore:
                self._power_limit(watts)
        else:
            reply = self._st(14, f"invalid cmd {name}", ok=False)
        return self._sealed(reply)

    def _power_limit(self, watts: float) -> None:
        """The limit in force is never above the standard power; btminer restarts to apply
        it (a stopped miner keeps it for its next start)."""
        self.set_target(min(watts, self.preset("default").watts))
        if self.state.phase in ("mining", "waking"):
            self._restart_mining()

    def _sealed(self, reply: dict[str, Any]) -> dict[str, Any]:
        """``reply`` encrypted under the miner's key, by the kept context."""
        text = json.dumps(reply).encode()
        text += b"\0" * (-len(text) % 16)
        return {"enc": base64.b64encode(self._enc.update(text)).decode()}

    @staticmethod
    def _encrypt(key: bytes, reply: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(reply).encode()
        text += b"\0" * (-len(text) % 16)
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return {"enc": base64.b64encode(enc.update(text) + enc.finalize()).decode()}
