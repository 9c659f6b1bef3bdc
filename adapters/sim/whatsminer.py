"""A simulated Whatsminer (MicroBT, btminer API v2 on 4028), with token-encrypted writes.

What pyasic (0.79) reads and writes for a Whatsminer whose firmware predates API v3
(``BTMinerV2`` in ``miners/backends/btminer.py``, ``rpc/btminer.py``):

- **Reads** are plain JSON on 4028 (``{"command": ...}``, ``a+b`` multicommands):
  ``devdetails`` (``DEVDETAILS[0].Model``; pyasic drops underscores and the last digit to
  pick a class), ``summary`` (``MHS 1m``, ``Power``, ``Power Limit``, ``Error Code
  Count``), ``devs`` (per board ``Chip Temp Avg``, ``Temperature``, ``MHS 1m``), and the
  commands btminer answers only alone (pyasic splits them off): ``status``
  (``Msg.mineroff`` "true"/"false"), ``get_version`` (``Msg.fw_ver``, code 131; a version
  after 2024-11 would make pyasic speak API v3 on 4433 instead), ``get_error_code``,
  ``get_token`` (``Msg.salt``, ``time``, ``newsalt``, code 134).
- **Writes** are privileged: ``{"enc": 1, "data": base64(AES-256-ECB(json))}`` with the
  key sha256 of the admin password md5-crypted with ``salt``, and inside, ``token`` = the
  md5-crypt of that plus ``time`` with ``newsalt``; the answer is ``{"enc": base64(...)}``
  under the same key. A wrong token or password answers ``{"STATUS": "E", "Msg": "invalid
  token"}``. Commands: ``power_off`` (``respbefore``), ``power_on``,
  ``adjust_power_limit`` (``power_limit`` in W), answered ``Msg`` "API command OK".

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

from adapters.sim.server import FaultKind, MinerServer

FW_VERSION = "20240620.18.REL"  # before 2024-11: pyasic talks API v2
API_VERSION = "2.0.5"
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

    description: ClassVar[str] = "btminer"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._salt, self._newsalt = _salt(), _salt()
        self._time = str(int(time.time()) % 10000)
        self.writes: list[str] = []

    def _key(self) -> bytes:
        pwd_md5 = _crypt(self.admin_password, self._salt)
        return hashlib.sha256(pwd_md5.encode()).digest()

    def _sign(self) -> str:
        return _crypt(_crypt(self.admin_password, self._salt) + self._time, self._newsalt)

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
            "Firmware Version": f"'{FW_VERSION}'",
            "Error Code Count": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [summary])

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
        self._time = str(int(time.time()) % 10000)
        return self._st(134, {"time": self._time, "salt": self._salt, "newsalt": self._newsalt})

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = [{"API": API_VERSION, "Miner": FW_VERSION, "Type": "btminer"}]
        return self._ok(22, "btminer versions", "VERSION", body)

    # -- writes: privileged, encrypted ------------------------------------------------------

    def _write(self, data: str) -> dict[str, Any]:
        key = self._key()
        try:
            dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
            plain = dec.update(base64.b64decode(data)) + dec.finalize()
            cmd = json.loads(plain.rstrip(b"\0").decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return self._st(23, "invalid token", ok=False)  # not our key: wrong password
        if not isinstance(cmd, dict) or cmd.get("token") != self._sign():
            return self._st(23, "invalid token", ok=False)
        name = str(cmd.get("cmd", ""))
        self.writes.append(name)
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
                return self._encrypt(key, self._st(14, "invalid power_limit", ok=False))
            if not ignore:
                self.set_target(watts)
        else:
            reply = self._st(14, f"invalid cmd {name}", ok=False)
        return self._encrypt(key, reply)

    @staticmethod
    def _encrypt(key: bytes, reply: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(reply).encode()
        text += b"\0" * (-len(text) % 16)
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return {"enc": base64.b64encode(enc.update(text) + enc.finalize()).decode()}
