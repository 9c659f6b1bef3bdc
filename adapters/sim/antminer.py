"""A simulated Antminer on stock Bitmain firmware: bmminer's API on 4028, the web CGI on 80.

What a stock S19/S21 serves, as far as pyasic (0.79) reads and writes it; every shape
below is the one pyasic's ``miners/backends/antminer.py`` (``AntminerModern``),
``web/antminer.py`` (``AntminerModernWebAPI``) and ``miners/factory.py`` parse:

- **cgminer API on 4028** (bmminer): ``version`` (``VERSION[0].Type`` names the model,
  ``CompileTime`` the firmware build; discovery looks for "ANTMINER" in the reply),
  ``summary`` (``SUMMARY[0]["GHS 5s"]``), ``stats`` (``STATS[1].total_rateideal``,
  ``chain_acn*``, ``temp*``), ``pools``, ``devs``. A ``+`` multicommand is refused, as
  pyasic's base RPC notes for the S19 (it then sends the commands one by one).
- **Web CGI on 80** behind HTTP digest auth (realm ``antMiner Configuration``, root/root
  by default): an unauthenticated request gets 401 with that realm, which is how
  pyasic's discovery tells a stock Antminer. The digest is checked as lighttpd's mod_auth
  checks it (lighttpd1.4 ``src/mod_auth.c``: ``mod_auth_digest_validate_params``,
  ``mod_auth_digest_validate_nonce``, ``mod_auth_digest_www_authenticate``): the nonce is
  the hex time of its issue, ``:``, and random hex; any well-formed nonce is accepted for
  ``nonce_ttl_s`` (600 s) from that time, as often as a client likes and whatever its
  ``nc`` (lighttpd keeps no record of nonces or counts); an older one, or one from the
  future, is answered 401 with a fresh challenge carrying ``stale=true``; a realm or
  password that does not match gets a fresh challenge without it; a ``uri`` other than
  the request's is 400. ``get_system_info.cgi`` (``minertype``),
  ``get_miner_conf.cgi`` (``bitmain-work-mode``: "0" normal, "1" sleep, "3" low power),
  ``set_miner_conf.cgi`` (a JSON body with ``miner-mode``: 0 normal, 1 sleep; answered
  ``{"stats": "success", "code": "M000"}``), ``summary.cgi`` (``SUMMARY[0].status``),
  ``stats.cgi`` (``STATS[0].chain[]``), ``miner_type.cgi``, ``get_blink_status.cgi``.
  Anything else is 404.
- **No power target** and no power reading: stock firmware exposes neither through
  pyasic (``set_power_limit`` is the base class's ``return False``; ``AntminerModern``
  has no wattage data location).

Besides the LuxOS simulator's transport faults (:class:`~adapters.sim.server.FaultKind`),
three faults of the firmware itself: ``ignore`` (``set_miner_conf`` answers success and
changes nothing), ``garble`` (valid JSON in a shape pyasic cannot parse), and
``slow-write`` (the write is answered at once and takes effect ``delay_s`` later, as
bmminer restarts with the new configuration: 20-35 s on real miners). ``conf_answer_s``
delays the answer to ``set_miner_conf`` instead (a CGI that restarts bmminer before it
answers), the change taking effect when it answers.

The web port is served by one ``asyncio.Protocol`` per connection (:class:`_WebConnection`),
not a stream reader and a task: with no fault set, the request is answered in the callback
that completes it, which halved the simulator's CPU per command (its process shares the
host with the controller it is measured against). HA1 (``user:realm:password``) is made
once, as lighttpd's htdigest file stores it; each request's digest is still checked in full.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from adapters.sim.server import HTTP_REASONS, FaultKind, MinerServer, parse_http_head

REALM = "antMiner Configuration"
BMMINER_VERSION = "1.0.0"
COMPILE_TIME = "Thu Dec 14 17:31:57 CST 2023"
#: bitmain-work-mode / miner-mode values (pyasic config/mining: normal 0, sleep 1, low 3).
WORK_NORMAL, WORK_SLEEP, WORK_LOW = 0, 1, 3


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class AntminerSim(MinerServer):
    """One simulated stock Antminer bound to ``host``:4028 (API) and ``host``:``web_port``."""

    web_port: int = 80
    username: str = "root"
    password: str = "root"
    #: Which JSON type of ``miner-mode`` this firmware version applies: "int", "str" or
    #: "any". A write of the other type is answered success and ignored (pyasic carries
    #: the setting ``antminer_mining_mode_as_str`` for firmware that wants strings).
    mode_type: str = "any"
    work_mode: int = WORK_NORMAL
    conf_writes: list[Any] = field(default_factory=list)  # each miner-mode as received
    #: lighttpd accepts a nonce this long from its issue (src/mod_auth.c: 600 s).
    nonce_ttl_s: float = 600.0
    #: The web server's clock, for nonce ages (a test moves it on).
    web_clock: Callable[[], float] = time.time
    #: set_miner_conf.cgi answers this long after the request; the change takes effect then.
    conf_answer_s: float = 0.0

    description: ClassVar[str] = f"bmminer {BMMINER_VERSION}"
    multicommand: ClassVar[bool] = False  # pyasic's base RPC notes the S19 refuses them
    bad_json_code: ClassVar[int] = 23

    def __post_init__(self) -> None:
        super().__post_init__()
        self._web: asyncio.AbstractServer | None = None
        self.web_requests = 0  # every HTTP request, answered 401 or not
        self.stale_answers = 0  # 401s with stale=true
        self._ha1_for: tuple[str, str] | None = None
        self._web_open: set[_WebConnection] = set()  # connections whose request is not in
        self._ha1_hex = ""

    # -- serving: the web CGI beside the API, following the same faults ------------------

    async def _open_more(self) -> None:
        loop = asyncio.get_running_loop()
        self._web = await loop.create_server(
            lambda: _WebConnection(self), self.host, self.web_port, reuse_address=True, backlog=64
        )

    def _close_more(self) -> None:
        if self._web is not None:
            self._web.close()
            self._web = None

    async def stop(self) -> None:
        await super().stop()
        for conn in list(self._web_open):  # still waiting for their request
            conn.close()

    # -- the cgminer API on 4028 --------------------------------------------------------

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = {
            "BMMiner": BMMINER_VERSION,
            "API": "3.1",
            "Miner": "uart_trans.1.3",
            "CompileTime": COMPILE_TIME,
            "Type": self.model,
        }
        return self._ok(22, "BMMiner versions", "VERSION", [body])

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        self.state.accepted += 1 if ths > 0 else 0
        body = {
            "Elapsed": int(self.clock() - self.state.boot_at),
            "GHS 5s": f"{ths * 1000.0:.2f}",  # bmminer sends these as strings
            "GHS av": round(ths * 1000.0, 2),
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_stats(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        p = self.preset(self.state.profile)
        board: dict[str, Any] = {
            "STATS": 0,
            "ID": "BC50",
            "Elapsed": int(self.clock() - self.state.boot_at),
            "total_rateideal": round(p.ths * 1000.0, 2),
            "rate_unit": "GH",
            "fan_num": 4,
            "miner_count": 3,
        }
        for i in (1, 2, 3):
            board[f"fan{i}"] = 4800 if ths > 0 else 0
            board[f"chain_rate{i}"] = f"{ths * 1000.0 / 3:.2f}"
            board[f"chain_acn{i}"] = 126
            board[f"temp{i}"] = round(t - 6)
            board[f"temp2_{i}"] = round(t + 6)
        head = {"BMMiner": BMMINER_VERSION, "Miner": "uart_trans.1.3", "Type": self.model}
        out = self._ok(70, "BMMiner stats", "STATS", [head, board])
        return out

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "1 Pool(s)", "POOLS", [self._pool()])

    def _cmd_devs(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        body = [
            {"ASC": i, "Name": "BTM_SOC0", "ID": i, "Enabled": "Y", "MHS 5s": ths * 1e6 / 3}
            for i in range(3)
        ]
        return self._ok(9, "3 ASC(s)", "DEVS", body)

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
            value = conf["miner-mode"]
        except (ValueError, KeyError, TypeError):
            return {"stats": "error", "code": "M001", "msg": "Invalid configuration"}
        self.conf_writes.append(value)
        ok = {"stats": "success", "code": "M000", "msg": "OK!"}
        if self._fault(FaultKind.IGNORE) is not None:
            return ok  # answered success, nothing changes
        wanted = "str" if isinstance(value, str) else "int"
        if self.mode_type not in ("any", wanted):
            return ok  # this firmware version applies the other JSON type only
        try:
            mode = int(value)
        except ValueError:
            return ok
        self._later(lambda: self._set_work_mode(mode))
        return ok

    def _set_work_mode(self, mode: int) -> None:
        if mode == WORK_SLEEP:
            self.work_mode = WORK_SLEEP
            self.sleep()
        elif mode in (WORK_NORMAL, WORK_LOW):
            self.work_mode = mode
            self.wake()

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
            "STATS": [{"rate_5s": round(ths * 1000.0, 2), "chain": chains}],
        }


#: One ``name=value`` of a digest header: the value quoted (commas and spaces inside it are
#: its own) or a token up to the next comma, as lighttpd's ``mod_auth_digest_get`` reads it.
_AUTH_FIELD = re.compile(r'\s*([^\s=,]+)\s*=\s*(?:"([^"]*)"|([^,]*?))\s*(?:,|$)')


def parse_auth(value: str) -> dict[str, str]:
    """A digest header's fields after ``Digest ``, names lower case, quotes removed."""
    return {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _AUTH_FIELD.finditer(value)}


#: How long a connection may take to send its request (as the stream reader it replaces).
WEB_READ_S = 10.0
#: A request head longer than this is no HTTP request (asyncio's stream reader limit).
WEB_HEAD_MAX = 1 << 16


def http_reply(
    status: int, payload: Any, garbled: bytes | None = None, extra: list[str] | None = None
) -> bytes:
    """One answer's bytes, as :func:`adapters.sim.server.write_http_reply` writes them:
    ``payload`` bytes as HTML, anything else as JSON; ``garbled`` replaces a 200's body."""
    if isinstance(payload, bytes):
        data, ctype = payload, "text/html"
    else:
        data, ctype = json.dumps(payload).encode(), "application/json"
    if garbled is not None and status == 200:
        data = garbled
    head = (
        f"HTTP/1.1 {status} {HTTP_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n"
    )
    for line in extra or ():
        head += line + "\r\n"
    return (head + "\r\n").encode("latin-1") + data


class _WebConnection(asyncio.Protocol):
    """One connection to the web port: the request read as it comes (head, then
    ``Content-Length`` bytes of body), one answer, then closed, as lighttpd without
    keep-alive. With no fault set the answer is made in the same callback; under a fault
    (or ``conf_answer_s``) a task makes it. Not an HTTP request, or none within
    ``WEB_READ_S``: closed without an answer, as before."""

    def __init__(self, sim: AntminerSim) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport: no isinstance
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(WEB_READ_S, self.close)
        self.sim._web_open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.timer is None:  # the request is in; anything more is not read
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > WEB_HEAD_MAX:
                self.close()
            return
        try:
            method, target, headers, length = parse_http_head(bytes(self.buf[:end]))
        except ValueError:  # no HTTP request: closed quietly
            self.close()
            return
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        self._request_in()
        sim = self.sim
        if not sim.faults and sim.conf_answer_s <= 0:
            self._send(sim._answer_now(method, target, headers, body))
            return
        task = asyncio.get_running_loop().create_task(
            self._answer_later(method, target, headers, body)
        )
        sim._active.add(task)  # stop() ends it
        task.add_done_callback(sim._active.discard)

    def _request_in(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sim._web_open.discard(self)

    async def _answer_later(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> None:
        reply = None
        try:
            reply = await self.sim._answer_later(method, target, headers, body)
        finally:
            self._send(reply)

    def _send(self, reply: bytes | None) -> None:
        if self.transport is not None and reply is not None:
            self.transport.write(reply)
        self.close()

    def close(self) -> None:
        self._request_in()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_in()
