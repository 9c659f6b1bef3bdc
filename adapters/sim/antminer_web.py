"""The web side of a simulated stock Antminer: bmminer's CGI on 80 behind lighttpd's
digest auth, as :mod:`adapters.sim.antminer` describes it (pyasic 0.79's
``web/antminer.py`` and lighttpd1.4's ``src/mod_auth.c``). HA1 (``user:realm:password``) is made
once, as lighttpd's htdigest file stores it; each request's digest is still checked in full.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.sim.calllog import CallLog
from adapters.sim.lighttpd import WebConnection, parse_auth
from adapters.sim.server import FaultKind, MinerServer
from adapters.sim.web_port import http_reply

REALM = "antMiner Configuration"
COMPILE_TIME = "Thu Dec 14 17:31:57 CST 2023"
#: bitmain-work-mode / miner-mode values (pyasic config/mining: normal 0, sleep 1, low 3).
WORK_NORMAL, WORK_SLEEP, WORK_LOW = 0, 1, 3


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class AntminerWeb(MinerServer):
    """A stock Antminer's web port (``host``:``web_port``) and the firmware settings it
    writes, beside the API that :class:`~adapters.sim.antminer.AntminerSim` adds."""

    web_port: int = 80
    username: str = "root"
    password: str = "root"
    #: Which JSON type of ``miner-mode`` this firmware version applies: "int", "str" or
    #: "any". A write of the other type is answered success and ignored (pyasic carries
    #: the setting ``antminer_mining_mode_as_str`` for firmware that wants strings).
    mode_type: str = "any"
    #: Which key of ``set_miner_conf`` this firmware build applies: ``miner-mode`` (what
    #: pyasic 0.79 writes), ``bitmain-work-mode`` or "any". A write of the other key is
    #: answered M000 and ignored (asic-rs issue 245, PRs 249 and 251: on an S19j Pro build
    #: of Dec 2022 ``{"bitmain-work-mode": 1}`` answers M000 and changes nothing while
    #: ``miner-mode`` applies; on some builds ``miner-mode`` no-ops instead).
    mode_key: str = "miner-mode"
    #: A build that takes a sleep into its configuration and keeps hashing (and drawing
    #: power) until a reboot (asic-rs issue 245: an S19j Pro of Dec 26 2022 answered
    #: ``{"miner-mode": 1}`` M000, ``get_miner_conf.cgi`` and ``stats.cgi`` then read
    #: sleep, the hashrate did not drop within 60 s, and only a reboot put it to sleep).
    #: Saved asleep, it boots asleep (:meth:`boots_asleep`). Only the sleep is modelled so:
    #: no source says this build ignores a wake, so a wake applies at once as elsewhere.
    sleep_applies_on_reboot: bool = False
    work_mode: int = WORK_NORMAL
    conf_writes: CallLog[Any] = field(default_factory=CallLog)  # each miner-mode as received
    #: lighttpd accepts a nonce this long from its issue (src/mod_auth.c: 600 s).
    nonce_ttl_s: float = 600.0
    #: The web server's clock, for nonce ages (a test moves it on).
    web_clock: Callable[[], float] = time.time
    #: set_miner_conf.cgi answers this long after the request; the change takes effect then.
    conf_answer_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._web: asyncio.AbstractServer | None = None
        self.web_requests = 0  # every HTTP request, answered 401 or not
        self.stale_answers = 0  # 401s with stale=true
        self._ha1_for: tuple[str, str] | None = None
        self._web_open: set[WebConnection] = set()  # connections whose request is not in
        self._ha1_hex = ""
        self.reboots = 0  # reboot.cgi requests answered

    # -- serving: the web CGI beside the API, following the same faults ------------------

    async def _open_more(self) -> None:
        loop = asyncio.get_running_loop()
        self._web = await loop.create_server(
            lambda: WebConnection(self), self.host, self.web_port, reuse_address=True, backlog=64
        )

    def _close_more(self) -> None:
        if self._web is not None:
            self._web.close()
            self._web = None

    async def stop(self) -> None:
        await super().stop()
        for conn in list(self._web_open):  # still waiting for their request
            conn.close()

    # -- the web CGI on 80 ----------------------------------------------------------------

    def _challenge(self, stale: bool = False) -> str:
        """A fresh challenge, as lighttpd words it; the nonce is the hex time of its issue,
        ``:``, and random hex (lighttpd: an MD5 of the time and random data)."""
        nonce = f"{int(self.web_clock()):08x}:{secrets.token_hex(16)}"
        return (
            f'Digest realm="{REALM}", charset="UTF-8", algorithm=MD5, nonce="{nonce}", '
            f'qop="auth"' + (", stale=true" if stale else "")
        )

    def _ha1(self) -> str:
        """MD5(user:realm:password), what lighttpd's htdigest file stores per user: made
        once per user and password, not per request."""
        key = (self.username, self.password)
        if self._ha1_for != key:
            self._ha1_for, self._ha1_hex = key, _md5(f"{self.username}:{REALM}:{self.password}")
        return self._ha1_hex

    def _authorised(self, method: str, target: str, header: str | None) -> tuple[int, bool]:
        """Check an RFC 7616 digest (MD5, qop=auth) in lighttpd's order: the fields, the
        realm, the request's ``uri``, the nonce's age, then the password. The status to
        answer (200: go on) and whether a 401 says the nonce is stale."""
        if not header or not header.lower().startswith("digest "):
            return 401, False
        fields = parse_auth(header[7:])
        need = ("username", "realm", "nonce", "uri", "response")
        qop = fields.get("qop")
        if any(k not in fields for k in need) or (
            qop and not ("nc" in fields and "cnonce" in fields)
        ):
            return 400, False  # "digest: missing field"
        if fields["realm"] != REALM:
            return 401, False
        if fields["uri"] != target:
            return 400, False  # "digest: auth failed: uri mismatch"
        issued, colon, _ = fields["nonce"].partition(":")
        try:
            ts = int(issued[:16], 16) if colon and issued else -1
        except ValueError:
            ts = -1
        now = int(self.web_clock())
        if ts < 0 or ts > now or now - ts > self.nonce_ttl_s:
            return 401, True  # "nonce is stale; have client regenerate digest"
        if fields["username"] != self.username:
            return 401, False
        ha1 = self._ha1()
        ha2 = _md5(f"{method}:{fields['uri']}")
        nonce = fields["nonce"]
        if qop == "auth":
            want = _md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
        else:
            want = _md5(f"{ha1}:{nonce}:{ha2}")
        return (200 if secrets.compare_digest(want, fields["response"]) else 401), False

    def _answer_now(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """The reply to one request when no fault is set (nothing waits): the same as
        :meth:`_route` answers then, made without a task or a stream."""
        self.commands_seen += 1
        self.web_requests += 1
        gate = self._gate(method, path, headers)
        if isinstance(gate, str):
            return http_reply(200, getattr(self, f"_cgi_{gate}")(body))
        status, payload, extra = gate
        return http_reply(status, payload, None, extra)

    async def _answer_later(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> bytes | None:
        """The reply under the faults (hang, slow, garble, malformed) and ``conf_answer_s``;
        None: hung up without an answer."""
        try:
            status, payload, extra = await self._route(method, path, headers, body)
        except ConnectionError:
            return None
        garbled = None
        if self._fault(FaultKind.MALFORMED) is not None:
            garbled = b'{"STATUS":{"STATUS":"S",' + b"\xff\xfe"
        return http_reply(status, payload, garbled, extra)

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, list[str]]:
        self.commands_seen += 1
        self.web_requests += 1
        if not await self._hang_or_slow(lambda: self._web is not None):
            raise ConnectionError("hung up")
        gate = self._gate(method, path, headers)
        if not isinstance(gate, str):
            return gate
        if gate == "set_miner_conf" and self.conf_answer_s > 0:
            await asyncio.sleep(self.conf_answer_s)
        return 200, getattr(self, f"_cgi_{gate}")(body), []

    def _gate(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, Any, list[str]] | str:
        """The digest check and the CGI's routing: the answer when it ends there (400, 401,
        404, a ``garble`` fault), else the CGI's name."""
        status, stale = self._authorised(method, path, headers.get("authorization"))
        if status == 400:
            return 400, b"<h1>400 Bad Request</h1>", []
        if status == 401:
            self.stale_answers += stale
            head = f"WWW-Authenticate: {self._challenge(stale)}"
            return 401, b"<h1>401 Unauthorized</h1>", [head]
        name = path.split("?", 1)[0]
        if not (name.startswith("/cgi-bin/") and name.endswith(".cgi")):
            return 404, b"<h1>404 Not Found</h1>", []
        cgi = name[len("/cgi-bin/") : -len(".cgi")]
        if getattr(self, f"_cgi_{cgi}", None) is None:
            return 404, b"<h1>404 Not Found</h1>", []
        if self.faults and self._fault(FaultKind.GARBLE) is not None:
            return 200, [{"code": "M000"}, cgi], []  # JSON, but not the object pyasic reads
        return cgi

    def _cgi_get_system_info(self, _: bytes) -> dict[str, Any]:
        return {
            "minertype": self.model,
            "nettype": "DHCP",
            "netdevice": "eth0",
            "macaddr": self._mac,
            "hostname": "Antminer",
            "ipaddress": self.host,
            "netmask": "255.0.0.0",
            "gateway": "",
            "dnsservers": "",
            "system_mode": "GNU/Linux",
            "system_kernel_version": "Linux 4.6.0-xilinx-gff8137b-dirty #12 SMP PREEMPT",
            "system_filesystem_version": COMPILE_TIME,
            "firmware_type": "Release",
            "serinum": "SIM" + self._mac.replace(":", "")[-8:],
        }

    def _cgi_miner_type(self, _: bytes) -> dict[str, Any]:
        return {"miner_type": self.model, "subtype": "BHB42601", "fw_version": COMPILE_TIME}

    def _cgi_get_blink_status(self, _: bytes) -> dict[str, Any]:
        return {"blink": False}

    def _cgi_get_miner_conf(self, _: bytes) -> dict[str, Any]:
        return {
            "pools": [
                {"url": "stratum+tcp://127.0.0.1:3333", "user": "gridsched.sim", "pass": "x"},
                {"url": "", "user": "", "pass": ""},
                {"url": "", "user": "", "pass": ""},
            ],
            "api-listen": True,
            "api-network": True,
            "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*",
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-use-vil": True,
            "bitmain-freq": "675",
            "bitmain-voltage": "1400",
            "bitmain-ccdelay": "0",
            "bitmain-pwth": "0",
            "bitmain-work-mode": str(self.work_mode),
            "bitmain-freq-level": "100",
        }

    def _cgi_set_miner_conf(self, body: bytes) -> dict[str, Any]:
        try:
            conf = json.loads(body or b"{}")
            keys = [k for k in ("miner-mode", "bitmain-work-mode") if k in conf]
            value = conf[keys[0]]
        except (ValueError, IndexError, TypeError):
            return {"stats": "error", "code": "M001", "msg": "Invalid configuration"}
        self.conf_writes.append(value)
        ok = {"stats": "success", "code": "M000", "msg": "OK!"}
        if self._fault(FaultKind.IGNORE) is not None:
            return ok  # answered success, nothing changes
        if self.mode_key != "any":
            if self.mode_key not in conf:
                return ok  # this build applies the other key only
            value = conf[self.mode_key]
        wanted = "str" if isinstance(value, str) else "int"
        if self.mode_type not in ("any", wanted):
            return ok  # this firmware version applies the other JSON type only
        try:
            mode = int(value)
        except ValueError:
            return ok
        self._later(lambda: self._set_work_mode(mode))
        return ok

    def boots_asleep(self) -> bool:
        """bmminer starts from its saved configuration: a reboot in sleep mode stays
        asleep (``bitmain-work-mode`` is what ``set_miner_conf.cgi`` saves)."""
        return self.work_mode == WORK_SLEEP

    def _set_work_mode(self, mode: int) -> None:
        if mode == WORK_SLEEP:
            self.work_mode = WORK_SLEEP
            if not self.sleep_applies_on_reboot:
                self.sleep()  # else saved only: the boards hash on until a reboot
        elif mode in (WORK_NORMAL, WORK_LOW):
            self.work_mode = mode
            self.wake()

    def _cgi_reboot(self, _: bytes) -> dict[str, Any]:
        """The web UI's reboot, which pyasic's ``AntminerModernWebAPI.reboot`` sends as a
        GET of ``reboot.cgi`` (the stock UI's own page script does the same). The miner
        reboots just after answering, with the work mode it saved. No source gives the
        body of the answer; pyasic reads only that there is one."""
        self.reboots += 1
        self._reboot_soon()
        return {"stats": "success", "code": "M000", "msg": "OK!"}

    def _cgi_summary(self, _: bytes) -> dict[str, Any]:
        _w, ths = self._advance()
        p = self.preset(self.state.profile)
        checks = ("rate", "network", "fans", "temp")
        return {
            "STATUS": {"STATUS": "S", "when": int(time.time()), "Msg": "summary"},
            "INFO": {"miner_version": "uart_trans.1.3", "CompileTime": COMPILE_TIME},
            "SUMMARY": [
                {
                    "elapsed": int(self.clock() - self.state.boot_at),
                    "rate_5s": round(ths * 1000.0, 2),
                    "rate_ideal": round(p.ths * 1000.0, 2),
                    "rate_unit": "GH/s",
                    "status": [{"type": c, "status": "s", "code": 0, "msg": ""} for c in checks],
                }
            ],
        }

    def _cgi_stats(self, _: bytes) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        chains = [
            {
                "index": i,
                "rate_real": round(ths * 1000.0 / 3, 2),
                "asic_num": 126,
                "temp_pic": [round(t - 8)] * 4,
                "temp_pcb": [round(t - 6)] * 4,
                "temp_chip": [round(t + 6)] * 4,
                "sn": f"SIMCHAIN{i}",
            }
            for i in range(3)
        ]
        return {
            "STATUS": {"STATUS": "S", "when": int(time.time()), "Msg": "stats"},
            # miner-mode: the work mode in force as saved (asic-rs issue 245 reads it here)
            "STATS": [
                {"rate_5s": round(ths * 1000.0, 2), "miner-mode": self.work_mode, "chain": chains}
            ],
        }
