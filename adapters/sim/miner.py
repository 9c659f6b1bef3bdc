"""A simulated ASIC miner that speaks the LuxOS (cgminer-style) JSON API over TCP.

The wire protocol is the one a LuxOS miner serves on port 4028: the client writes one JSON
object ``{"command": "summary", "parameter": "..."}``, the miner answers one JSON object and
closes the connection. Commands joined by ``+`` are a multicommand, answered as
``{"summary": [{...}], "power": [{...}], "id": 1}``. Privileged commands (``curtail``,
``profileset``, ``atmset``, ``logoff``) take the session id from ``logon`` as their first
parameter, as on the real firmware.

The answers carry what ``pyasic`` reads from a LuxOS miner (``VERSION[0].Type`` and the
``LUXminer`` key for discovery; ``POWER``, ``SUMMARY``, ``STATS``, ``PROFILES``,
``CONFIG``, ``FANS``, ``TEMPS``, ``POOLS``, ``GROUPS``, ``TEMPCTRL``, ``ATM``), so that
``pyasic.get_miner(ip)`` identifies it and its control calls work.

Dynamics are evaluated lazily from the monotonic clock: sleeping takes ``sleep_s`` (about
5 s on LuxOS), waking ``wake_s`` (10 s or more: boot, then a hashrate ramp), a profile
change ``retune_s``; the temperature follows power with a first-order lag.

Faults are injected per miner (:class:`Fault`): connection refused, hanging, slow replies,
malformed JSON, a reboot in the middle of a command, dropping out for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models import catalog

LUXOS_VERSION = "2024.11.14.190207-2c9c8ec"
API_VERSION = "3.7"
SLEEP_W = catalog.ASIC_SLEEP_KW * 1000.0
BOOT_W = 120.0  # control board and fans at full speed while booting
#: A waking miner boots (at BOOT_W, no hashrate) for this share of its wake time, then ramps.
WAKE_HOLD_SHARE = 0.4


class FaultKind(StrEnum):
    REFUSE = "refuse"  # nothing listens: connection refused
    HANG = "hang"  # accepts and reads, never answers
    SLOW = "slow"  # answers after `delay_s`
    MALFORMED = "malformed"  # answers with broken JSON
    REBOOT = "reboot"  # the next command drops the connection and the miner reboots
    DROPOUT = "dropout"  # gone from the network for `duration_s`, then back as it was
    IGNORE = "ignore"  # control commands are answered success and change nothing
    GARBLE = "garble"  # answers valid JSON in a shape the client cannot parse
    SLOW_WRITE = "slow-write"  # a setting takes effect `delay_s` after the write's answer


@dataclass
class Fault:
    kind: FaultKind
    until: float = math.inf  # monotonic time the fault ends
    delay_s: float = 2.0  # for SLOW


@dataclass(frozen=True)
class Preset:
    """A LuxOS frequency profile: name, watts and TH/s at the wall."""

    name: str
    watts: float
    ths: float
    frequency_mhz: int
    voltage: float


def presets_for(model: str) -> tuple[Preset, ...]:
    """LuxOS-style profile ladder around a catalog model's nameplate (-2 ... +2)."""
    spec = catalog.find_asic(model)
    steps = (
        ("-2", 0.70, 0.80, -100),
        ("-1", 0.85, 0.90, -50),
        ("default", 1.0, 1.0, 0),
        ("+1", 1.12, 1.06, 25),
        ("+2", 1.25, 1.12, 50),
    )
    return tuple(
        Preset(
            name=name,
            watts=round(spec.power_w * pf),
            ths=round(spec.hashrate_ths * hf, 2),
            frequency_mhz=525 + df,
            voltage=round(13.8 * math.sqrt(pf), 2),
        )
        for name, pf, hf, df in steps
    )


def wake_reaches_s(wake_s: float, share: float) -> float:
    """Seconds from a wakeup until the hashrate reaches ``share`` of the preset's."""
    return wake_s * (WAKE_HOLD_SHARE + (1.0 - WAKE_HOLD_SHARE) * share)


@dataclass
class _Ramp:
    """Power and hashrate moving linearly from one point to another."""

    t0: float
    duration: float
    w0: float
    w1: float
    ths0: float
    ths1: float
    hold_s: float = 0.0  # a boot phase at BOOT_W before the ramp starts

    def at(self, now: float) -> tuple[float, float]:
        dt = now - self.t0
        if dt < self.hold_s:
            return BOOT_W, 0.0
        span = max(self.duration - self.hold_s, 1e-9)
        f = min(1.0, (dt - self.hold_s) / span)
        w0 = BOOT_W if self.hold_s > 0 else self.w0
        return w0 + (self.w1 - w0) * f, self.ths0 + (self.ths1 - self.ths0) * f

    def done(self, now: float) -> bool:
        return now - self.t0 >= self.duration


@dataclass
class MinerState:
    """What the miner is doing; ``phase`` is mining, sleeping, waking or rebooting."""

    profile: str
    phase: str = "mining"
    ramp: _Ramp | None = None
    temp_c: float = 60.0
    last_eval: float = 0.0
    energy_j: float = 0.0
    boot_at: float = 0.0
    session: str = ""
    session_used: float = 0.0  # monotonic time the session was created or last used
    atm: bool = False
    accepted: int = 0


@dataclass
class SimMiner:
    """One simulated LuxOS miner bound to ``host:port``."""

    host: str
    model: str = "Antminer S19j Pro"
    port: int = 4028
    sleep_s: float = 5.0
    wake_s: float = 12.0
    retune_s: float = 3.0
    reboot_s: float = 30.0
    ambient_c: float = 30.0
    clock: Callable[[], float] = time.monotonic
    presets: tuple[Preset, ...] = ()
    faults: list[Fault] = field(default_factory=list)
    commands_seen: int = 0
    #: LuxOS ends a session unused this long (about a minute, per its docs); inf: never.
    session_ttl_s: float = math.inf
    last_curtail: tuple[str, float] | None = None  # (sleep|wakeup, unix time received)

    def __post_init__(self) -> None:
        if not self.presets:
            self.presets = presets_for(self.model)
        now = self.clock()
        p = self.preset("default")
        self.state = MinerState(profile=p.name, last_eval=now, boot_at=now)
        self.state.temp_c = self._steady_temp(p.watts)
        self._server: asyncio.AbstractServer | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._active: set[asyncio.Task[None]] = set()
        self._mac = "02:47:53:{:02X}:{:02X}:{:02X}".format(
            *tuple(int(x) & 0xFF for x in ([*self.host.split("."), "0", "0", "0"])[1:4])
        )

    # -- dynamics ---------------------------------------------------------------------------

    def preset(self, name: str) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        raise KeyError(name)

    def _steady_temp(self, watts: float) -> float:
        return self.ambient_c + 38.0 * watts / 3500.0

    def power_and_hashrate(self) -> tuple[float, float]:
        now = self.clock()
        st = self.state
        if st.ramp is not None:
            w, ths = st.ramp.at(now)
            if st.ramp.done(now):
                st.ramp = None
                if st.phase == "waking":
                    st.phase = "mining"
            return w, ths
        if st.phase in ("sleeping", "rebooting"):
            return (SLEEP_W if st.phase == "sleeping" else 0.0), 0.0
        p = self.preset(st.profile)
        wobble = 1.0 + 0.004 * math.sin(now / 7.0 + hash(self.host) % 10)
        return p.watts * wobble, p.ths * wobble

    def _advance(self) -> tuple[float, float]:
        """Integrate energy and temperature up to now; return (W, TH/s)."""
        now = self.clock()
        st = self.state
        w, ths = self.power_and_hashrate()
        dt = max(0.0, now - st.last_eval)
        st.energy_j += w * dt
        target = self._steady_temp(w)
        st.temp_c = target + (st.temp_c - target) * math.exp(-dt / 30.0)
        st.last_eval = now
        return w, ths

    def sleep(self) -> None:
        w, ths = self._advance()
        if self.state.phase == "sleeping" and self.state.ramp is None:
            return
        self.state.phase = "sleeping"
        self.state.ramp = _Ramp(self.clock(), self.sleep_s, w, SLEEP_W, ths, 0.0)

    def wake(self) -> None:
        w, _ths = self._advance()
        if self.state.phase in ("mining", "waking"):
            return
        p = self.preset(self.state.profile)
        self.state.phase = "waking"
        self.state.ramp = _Ramp(
            self.clock(), self.wake_s, w, p.watts, 0.0, p.ths, WAKE_HOLD_SHARE * self.wake_s
        )

    def set_profile(self, name: str) -> None:
        p = self.preset(name)
        w, ths = self._advance()
        self.state.profile = p.name
        if self.state.phase == "mining":
            self.state.ramp = _Ramp(self.clock(), self.retune_s, w, p.watts, ths, p.ths)
        elif self.state.phase == "waking" and self.state.ramp is not None:
            r = self.state.ramp
            self.state.ramp = _Ramp(r.t0, r.duration, r.w0, p.watts, r.ths0, p.ths, r.hold_s)

    # -- faults -----------------------------------------------------------------------------

    def inject(
        self, kind: FaultKind | str, duration_s: float = math.inf, delay_s: float = 2.0
    ) -> None:
        """Start a fault now; ``duration_s`` bounds it (a reboot ends by itself)."""
        kind = FaultKind(kind)
        until = self.clock() + duration_s
        if kind is FaultKind.DROPOUT or kind is FaultKind.REFUSE:
            self.faults = [
                f for f in self.faults if f.kind not in (FaultKind.DROPOUT, FaultKind.REFUSE)
            ]
            self.faults.append(Fault(kind, until))
            self._stop_listening(duration_s)
            return
        self.faults = [f for f in self.faults if f.kind is not kind]
        self.faults.append(Fault(kind, until, delay_s))

    def clear_faults(self) -> None:
        self.faults.clear()
        if self._server is None:
            self._restart_listening()

    def _fault(self, kind: FaultKind) -> Fault | None:
        now = self.clock()
        self.faults = [f for f in self.faults if f.until > now]
        return next((f for f in self.faults if f.kind is kind), None)

    def _reboot(self) -> None:
        self._advance()
        st = self.state
        st.phase = "rebooting"
        st.ramp = None
        st.session = ""
        st.atm = False
        self._stop_listening(self.reboot_s, after=self._boot)

    def _boot(self) -> None:
        st = self.state
        now = self.clock()
        st.last_eval = now
        st.boot_at = now
        st.phase = "waking"
        p = self.preset(st.profile)
        st.ramp = _Ramp(
            now, self.wake_s, BOOT_W, p.watts, 0.0, p.ths, WAKE_HOLD_SHARE * self.wake_s
        )

    # -- serving ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, backlog=64
        )

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._active):
            task.cancel()
        if self._active:
            await asyncio.gather(*self._active, return_exceptions=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _stop_listening(self, duration_s: float, after: Callable[[], None] | None = None) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if math.isfinite(duration_s):
            loop = asyncio.get_running_loop()

            def reopen() -> None:
                self._reopen = None
                if after is not None:
                    after()
                self._restart_listening()

            self._reopen = loop.call_later(duration_s, reopen)

    def _restart_listening(self) -> None:
        async def go() -> None:
            with contextlib.suppress(OSError):
                await self.start()

        asyncio.get_running_loop().create_task(go())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        try:
            raw = await _read_request(reader)
            self.commands_seen += 1
            if self._fault(FaultKind.REBOOT) is not None:
                self.faults = [f for f in self.faults if f.kind is not FaultKind.REBOOT]
                self._reboot()
                return  # connection dropped without an answer
            if self._fault(FaultKind.HANG) is not None:
                while self._fault(FaultKind.HANG) is not None and self._server is not None:
                    await asyncio.sleep(0.05)
                return  # the fault ended or the miner stopped: drop the connection unanswered
            slow = self._fault(FaultKind.SLOW)
            if slow is not None:
                await asyncio.sleep(slow.delay_s)
            if self._fault(FaultKind.MALFORMED) is not None:
                writer.write(b'{"STATUS":[{"STATUS":"S","When":' + b"\xff\xfe" + b'"Msg":')
            else:
                writer.write(json.dumps(self.answer(raw), separators=(",", ":")).encode() + b"\x00")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- the API ----------------------------------------------------------------------------

    def answer(self, raw: bytes) -> dict[str, Any]:
        """The reply to one request, as the miner would send it."""
        try:
            req = json.loads(raw.decode("utf-8").rstrip("\x00"))
            command = str(req["command"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return self._status("E", 14, "Invalid JSON")
        param = req.get("parameter")
        params = [] if param in (None, "") else str(param).split(",")
        if self._fault(FaultKind.GARBLE) is not None:
            return {"STATUS": "S", command.upper(): {"0": "?"}, "id": 1}
        if "+" in command:
            out: dict[str, Any] = {}
            for c in command.split("+"):
                out[c] = [self._one(c, [])]
            out["id"] = 1
            return out
        return self._one(command, params)

    def _status(self, code: str, num: int, msg: str) -> dict[str, Any]:
        return {
            "STATUS": [
                {
                    "STATUS": code,
                    "When": int(time.time()),
                    "Code": num,
                    "Msg": msg,
                    "Description": f"LUXminer {LUXOS_VERSION}",
                }
            ],
            "id": 1,
        }

    def _ok(self, num: int, msg: str, key: str, body: list[dict[str, Any]]) -> dict[str, Any]:
        out = self._status("S", num, msg)
        out[key] = body
        return out

    def _privileged(self, params: list[str]) -> dict[str, Any] | None:
        self._expire_session()
        if not params or not self.state.session or params[0] != self.state.session:
            return self._status("E", 400, "Invalid session id")
        self.state.session_used = self.clock()  # a use refreshes the session
        return None

    def _one(self, command: str, params: list[str]) -> dict[str, Any]:
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            return self._status("E", 14, f"Invalid command: {command}")
        result: dict[str, Any] = handler(params)
        return result

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = {
            "API": API_VERSION,
            "LUXminer": LUXOS_VERSION,
            "Miner": LUXOS_VERSION,
            "Type": self.model,
        }
        return self._ok(22, "LUXminer versions", "VERSION", [body])

    def _cmd_devdetails(self, _: list[str]) -> dict[str, Any]:
        body = [
            {"DEVDETAILS": i, "Name": "BC", "ID": i, "Driver": "LUXminer", "Model": self.model}
            for i in range(3)
        ]
        return self._ok(69, "Device Details", "DEVDETAILS", body)

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        self.state.accepted += 1 if ths > 0 else 0
        elapsed = int(self.clock() - self.state.boot_at)
        body = {
            "Elapsed": elapsed,
            "GHS 5s": round(ths * 1000.0, 2),
            "GHS av": round(ths * 1000.0, 2),
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_power(self, _: list[str]) -> dict[str, Any]:
        w, _ths = self._advance()
        return self._ok(338, "Power", "POWER", [{"PSU": True, "Watts": round(w)}])

    def _cmd_stats(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        p = self.preset(self.state.profile)
        board: dict[str, Any] = {
            "STATS": 1,
            "ID": "BC0",
            "Elapsed": int(self.clock() - self.state.boot_at),
            "total_rateideal": round(p.ths * 1000.0, 2),
            "rate_unit": "GH",
        }
        for i in (1, 2, 3):
            board[f"chain_rate{i}"] = f"{ths * 1000.0 / 3:.2f}"
            board[f"chain_acn{i}"] = 126
            chips = [round(t + d) for d in (4, 6, 8, 5)]
            board[f"temp_chip{i}"] = "-".join(str(c) for c in chips)
            board[f"temp_pcb{i}"] = "-".join(str(round(t - d)) for d in (8, 6, 5, 7))
        head = {"STATS": 0, "ID": "LUXminer", "Type": self.model}
        return self._ok(70, "LUXminer stats", "STATS", [head, board])

    def _cmd_profiles(self, _: list[str]) -> dict[str, Any]:
        body = [
            {
                "Profile Name": p.name,
                "Watts": int(p.watts),
                "Hashrate": p.ths,
                "Frequency": p.frequency_mhz,
                "Voltage": p.voltage,
                "IsTuned": False,
                "Step": str(i - 2),
            }
            for i, p in enumerate(self.presets)
        ]
        return self._ok(326, "Profiles", "PROFILES", body)

    def _cmd_config(self, _: list[str]) -> dict[str, Any]:
        body = {
            "Profile": self.state.profile,
            "MACAddr": self._mac,
            "RedLed": "off",
            "IsAtmEnabled": self.state.atm,
            "IsPowerTargetSupported": False,
            "Model": self.model,
        }
        return self._ok(33, "Configuration", "CONFIG", [body])

    def _cmd_fans(self, _: list[str]) -> dict[str, Any]:
        w, _ths = self._advance()
        rpm = int(1500 + 4000 * min(1.0, w / 4000.0))
        body = [{"FAN": i, "ID": i, "RPM": rpm, "Speed": int(rpm / 60)} for i in range(4)]
        out = self._ok(202, "Fans", "FANS", body)
        out["FANCTRL"] = [{"MinFans": 4}]
        return out

    def _cmd_temps(self, _: list[str]) -> dict[str, Any]:
        t = self.state.temp_c
        body = [
            {"TEMPS": i, "ID": i, "Board": round(t, 1), "Chip": round(t + 6, 1)} for i in range(3)
        ]
        return self._ok(201, "Temps", "TEMPS", body)

    def _cmd_tempctrl(self, _: list[str]) -> dict[str, Any]:
        body = {"Mode": "Auto", "Target": 75, "Hot": 90, "Dangerous": 100}
        return self._ok(200, "Temperature control", "TEMPCTRL", [body])

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        body = {
            "POOL": 0,
            "URL": "stratum+tcp://127.0.0.1:3333",
            "User": "gridsched.sim",
            "Status": "Alive",
            "Stratum Active": True,
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
            "GROUP": 0,
        }
        return self._ok(7, "Pools", "POOLS", [body])

    def _cmd_groups(self, _: list[str]) -> dict[str, Any]:
        return self._ok(8, "Groups", "GROUPS", [{"GROUP": 0, "Name": "Default", "Quota": 1}])

    def _cmd_atm(self, _: list[str]) -> dict[str, Any]:
        body = {"Enabled": self.state.atm, "MaxProfile": "+2", "MinProfile": "-2"}
        return self._ok(339, "ATM configuration values", "ATM", [body])

    def _expire_session(self) -> None:
        st = self.state
        if st.session and self.clock() - st.session_used > self.session_ttl_s:
            st.session = ""

    def _cmd_session(self, _: list[str]) -> dict[str, Any]:
        self._expire_session()
        return self._ok(36, "Session", "SESSION", [{"SessionID": self.state.session}])

    def _cmd_logon(self, _: list[str]) -> dict[str, Any]:
        self._expire_session()
        if not self.state.session:
            self.state.session = secrets.token_hex(4)
            self.state.session_used = self.clock()
        # Code and message as LuxOS's docs show them (logon; "Sessions").
        return self._ok(316, "Session created", "SESSION", [{"SessionID": self.state.session}])

    def _cmd_logoff(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        self.state.session = ""
        return self._status("S", 38, "Session closed")

    def _cmd_curtail(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        action = params[1] if len(params) > 1 else ""
        self.last_curtail = (action, time.time())
        if self._fault(FaultKind.IGNORE) is not None and action in ("sleep", "wakeup"):
            pass  # answered as done below, nothing changes
        elif action == "sleep":
            self.sleep()
        elif action == "wakeup":
            self.wake()
        else:
            return self._status("E", 45, f"Invalid curtail mode {action!r}: sleep or wakeup")
        # Code, message and field as LuxOS's docs show them (curtail).
        said = "sleep mode" if action == "sleep" else "wake up"
        return self._ok(335, "Curtailment command sent", "CURTAIL", [{"Action": said}])

    def _cmd_profileset(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        name = params[1] if len(params) > 1 else ""
        try:
            if self._fault(FaultKind.IGNORE) is None:
                self.set_profile(name)
            else:
                self.preset(name)  # validated and answered as set, nothing changes
        except KeyError:
            valid = ", ".join(p.name for p in self.presets)
            return self._status("E", 327, f"Invalid profile {name!r}; valid: {valid}")
        return self._ok(328, "Profile set", "PROFILE", [{"Profile": name}])

    def _cmd_atmset(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        for p in params[1:]:
            key, _, value = p.partition("=")
            if key == "enabled":
                self.state.atm = value == "true"
        return self._status("S", 340, "Advanced Thermal Management configuration updated")


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one JSON request: clients write it and keep the socket open for the answer."""
    buf = b""
    while True:
        async with asyncio.timeout(10.0):
            chunk = await reader.read(4096)
        if not chunk:
            return buf
        buf += chunk
        text = buf.rstrip(b"\x00\n ")
        if text.endswith(b"}"):
            try:
                json.loads(text)
            except ValueError:
                continue
            return text
