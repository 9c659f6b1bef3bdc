"""ASIC miners through pyasic: LuxOS, Braiins OS+, stock Antminer, Whatsminer, VNish...

pyasic identifies the firmware (once, kept across reconnects and, by adapters.discovery,
across restarts) and does the control calls. This module adds what a scheduler needs around
it: timeouts and containment of whatever the library raises, the firmware family's
capabilities (``models.firmware``: a power target only where the firmware has one, the
nearest preset at or below where it has presets, with the rounding reported; none on stock
firmware, where a wake is the wake alone), sleep and wake, and read-back deadlines.

Stock Antminer writes go through pyasic's web API but not through its ``stop_mining`` /
``resume_mining``: those return True whatever the miner answers, and rebuild the
configuration they write from a read that may have failed (writing empty pools). Here the
configuration read must parse, the write's answer must say success, and the JSON type of
``miner-mode`` (firmware versions differ: pyasic's ``antminer_mining_mode_as_str``) is
switched when a write is accepted and the read-back never shows it.

Vendor payloads are parsed in :mod:`adapters.payloads` (re-exported here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters import antminer, braiins, discovery, luxos, vnish, whatsminer, whatsminer3
from adapters.base import (
    AdapterError,
    Applied,
    BadReply,
    ControlRejected,
    DeviceAdapter,
    DeviceInfo,
    DeviceUnreachable,
    ModeRequest,
    Telemetry,
    contain,
)
from adapters.payloads import (
    LUXOS_TELEMETRY,
    RUNNING_SHARE,
    SLEEPING_MAX_W,
    choose_preset,
    parse_luxos,
    parse_miner_data,
    run_target,
)
from adapters.secrets import Secret
from models.firmware import CAPABILITIES, Capabilities, Family, PowerTarget, family_of

__all__ = [
    "LUXOS_TELEMETRY",
    "RUNNING_SHARE",
    "SLEEPING_MAX_W",
    "PyasicMiner",
    "choose_preset",
    "parse_luxos",
    "parse_miner_data",
]

T = TypeVar("T")

#: After a sleep command, readings of "running" are not believed for this long (LuxOS
#: sleeps in about 5 s; a reading sent before the command can still come back).
SLEEP_SETTLE_S = 30.0
#: LuxOS ends a session unused for about a minute (docs.luxor.tech, "Sessions"); a
#: session idle this long is renewed on the next reading, off the path of a command.
SESSION_RENEW_S = 30.0
#: A reconnect reuses the miner pyasic identified unless discovery is older than this
#: (a miner re-flashed to other firmware is noticed within it).
REDISCOVER_S = 600.0


@dataclass
class PyasicMiner(DeviceAdapter):
    """One miner driven through pyasic; ``address`` is its IP."""

    timeout_s: float = 3.0
    username: str | None = None
    password: Secret | None = None
    #: Read-back deadline; None: the firmware family's (models.firmware).
    confirm_within_s: float | None = None
    #: Stock Antminer: send ``miner-mode`` as a JSON string (True) or number (False), as
    #: pyasic's setting ``antminer_mining_mode_as_str``; None: start from pyasic's
    #: setting and switch when a write is accepted and never shows.
    miner_mode_as_str: bool | None = None
    #: LuxOS: renew a session idle this long on the next reading (see SESSION_RENEW_S).
    session_renew_s: float = SESSION_RENEW_S
    #: False: read only (``fleet status``): no LuxOS logon or renewal, so that the session
    #: of a daemon driving the same miners is left alone.
    sessions: bool = True
    #: Identities found before (:mod:`adapters.discovery`); None: always discover.
    identities: discovery.IdentityBook | None = None
    _session_used: float = field(default=-math.inf, init=False)  # monotonic
    _miner: Any = field(default=None, init=False, repr=False)
    _discovered_at: float = field(default=-math.inf, init=False)
    _found: discovery.Found | None = field(default=None, init=False, repr=False)
    _caps: Capabilities = field(default=CAPABILITIES[Family.OTHER], init=False)
    _mode_as_str: bool | None = field(default=None, init=False)  # stock: miner-mode's type
    _web: antminer.WebSession | None = field(default=None, init=False, repr=False)  # stock
    _grpc: braiins.KeptChannel | None = field(default=None, init=False, repr=False)
    _no_target: str = field(default="", init=False)  # why this miner has no power target
    _luxos: bool = field(default=False, init=False)
    _sleeping: bool | None = field(default=None, init=False)
    _target_w: float | None = field(default=None, init=False)  # as last read or set
    _slept_at: float | None = field(default=None, init=False)  # sleep sent, not yet seen
    _profiles: dict[float, str] = field(default_factory=dict, init=False)  # LuxOS: W -> name
    _atm: bool = field(default=False, init=False)
    #: When the last command, a sleep, was sent (0.0: no command yet); None after a run.
    _sleep_sent_at: float | None = field(default=0.0, init=False)
    _asleep_seen: bool = field(default=False, init=False)  # read asleep since that sleep

    async def _discover(self) -> Any:
        """pyasic's miner object, found once (:mod:`adapters.discovery`, which may reuse an
        identity found before): a reconnect reuses it until REDISCOVER_S has passed."""
        now = time.monotonic()
        if self._miner is not None and now - self._discovered_at < REDISCOVER_S:
            return self._miner
        found = await discovery.discover(
            self.device_id, self.address, self.timeout_s, self.identities
        )
        miner = found.miner
        pwd = self.password.reveal() if self.password is not None else None
        discovery.log_in_as(miner, self.username, pwd)
        self._miner, self._discovered_at, self._found = miner, now, found
        self.info = None
        return miner

    async def connect(self) -> DeviceInfo:
        from pyasic.miners.backends import LUXMiner

        miner = await self._discover()
        self._luxos = isinstance(miner, LUXMiner)
        make = str(getattr(miner, "make", "") or "")
        firmware = str(getattr(miner, "firmware", "") or "")
        family = Family.LUXOS if self._luxos else family_of(firmware, make)
        if family is Family.WHATSMINER and whatsminer3.is_v3(miner):
            family = Family.WHATSMINER_V3
        self._caps = CAPABILITIES[family]
        presets: tuple[float, ...] = ()
        if self._luxos:
            self._profiles, self._atm = await luxos.setup(self.device_id, miner.rpc, self.timeout_s)
            presets = tuple(sorted(self._profiles))
            if self.sessions:
                # Log on now, so that the first curtail is one round trip, not three; a
                # session another client left is ended first (LuxOS refuses a logon beside it).
                await luxos.renew_session(self.device_id, miner.rpc, self.timeout_s)
                self._session_used = time.monotonic()
        if family is Family.VNISH:  # pyasic's own preset choice never succeeds (adapters.vnish)
            got = await vnish.presets(self.device_id, miner, self._caps, self.timeout_s)
            self._caps, presets, self._no_target = got
        if family is Family.ANTMINER_STOCK and self._mode_as_str is None:
            from pyasic import settings

            pinned = self.miner_mode_as_str
            default = bool(settings.get("antminer_mining_mode_as_str", False))
            self._mode_as_str = default if pinned is None else pinned
        if family is Family.ANTMINER_STOCK:  # one web session per miner object found
            self._web = await antminer.session(miner, self._caps.write_timeout_s, self._web)
        if family is Family.BRAIINS:  # one gRPC channel per miner object found
            self._grpc = braiins.keep(miner, self._grpc)
        version = self.info.firmware_version if self.info is not None else ""
        if not version and self._found is not None and self._found.cached is not None:
            version = self._found.cached.firmware_version  # its version table still matches
        if not version:
            try:  # identity only: a miner that will not say is still driven
                ver = whatsminer3.fw_version(miner)  # pyasic's get_fw_ver() on v3 has none
                version = str(await contain(self.device_id, "version", ver, self.timeout_s) or "")
            except AdapterError:
                version = ""
        self.info = DeviceInfo(
            device_id=self.device_id,
            kind="asic",
            address=self.address,
            make=make,
            model=str(getattr(miner, "raw_model", None) or getattr(miner, "model", "") or ""),
            firmware=firmware,
            firmware_version=version,
            family=family.value,
            power_targets_w=presets,
            min_power_w=presets[0] if presets else None,
            max_power_w=presets[-1] if presets else None,
        )
        if self.identities is not None and self._found is not None:
            discovery.record(self.identities, self._found, self.address, self.info)
        return self.info

    def confirm_deadline_s(self) -> float:
        if self.confirm_within_s is not None:
            return self.confirm_within_s
        return self._caps.confirm_within_s

    def unconfirmed(self, applied: Applied) -> None:
        """Send everything again next time; on stock firmware, with the other JSON type of
        ``miner-mode`` (firmware versions differ; the one a read-back confirms is kept)."""
        self._forget(session=False)
        stock = self._caps.family is Family.ANTMINER_STOCK
        if stock and self._mode_as_str is not None and self.miner_mode_as_str is None:
            self._mode_as_str = not self._mode_as_str

    async def _reachable(self) -> bool:
        """Whether the miner's API port takes a connection: pyasic answers a refused
        connection with an empty reply, which would otherwise read as unparseable."""
        port = int(getattr(getattr(self._miner, "rpc", None), "port", 4028) or 4028)
        return await discovery.port_open(self.address, port, self.timeout_s)

    def _need(self) -> Any:
        if self._miner is None:
            raise DeviceUnreachable(self.device_id, "not connected")
        return self._miner

    async def read(self) -> Telemetry:
        miner = self._need()
        now = time.time()
        if self._luxos:
            # One round trip. pyasic's rpc.multicommand() re-derives its command list by
            # introspection on every call (~1.5 ms of CPU); send_command takes the joined
            # command as is and still does pyasic's framing, repair and status checks.
            reply = await contain(
                self.device_id,
                "telemetry",
                miner.rpc.send_command(LUXOS_TELEMETRY),
                self.timeout_s,
            )
            if not reply or set(reply) <= {"multicommand", "id"}:
                raise DeviceUnreachable(self.device_id, "telemetry: empty reply")
            t = parse_luxos(self.device_id, reply, now)
            due = luxos.renewal_due  # each miner at its own turn: spread over the sweeps
            mono, used = time.monotonic(), self._session_used
            if self.sessions and due(self.device_id, used, mono, self.session_renew_s):
                await self._renew_session()
        else:
            from pyasic.miners.data import DataOptions

            include = [
                DataOptions.WATTAGE,
                DataOptions.WATTAGE_LIMIT,
                DataOptions.HASHRATE,
                DataOptions.HASHBOARDS,
                DataOptions.ERRORS,
                DataOptions.IS_MINING,
            ]
            got = self._web_call("telemetry", lambda: miner.get_data(include=include))
            try:
                data = await contain(self.device_id, "telemetry", got, self.timeout_s)
                t = parse_miner_data(self.device_id, data, now)
            except BadReply as exc:
                if not await self._reachable():
                    raise DeviceUnreachable(
                        self.device_id, f"telemetry: no connection ({exc.reason})"
                    ) from None
                raise
        if t.state == "sleeping":
            self._sleeping, self._slept_at = True, None
            # Asleep as we left it: the last command was a sleep (or there was none), and the
            # reading went out after it. A miner reads asleep for a moment after a wake, too.
            self._asleep_seen = self._sleep_sent_at is not None and now >= self._sleep_sent_at
        else:
            self._asleep_seen = False
        if t.state == "running" and (
            self._slept_at is None or now - self._slept_at > SLEEP_SETTLE_S
        ):
            # A miner still ramping down (or a reading sent before the sleep) reads as
            # running: believing it awake would make the next wake skip its resume and
            # leave it asleep, reported as applied.
            self._sleeping = False
        self._target_w = t.target_w
        return t

    def _forget(self, session: bool) -> None:
        """After a failed command the device's state is unknown: resend everything next time;
        with ``session``, also log on again (a reboot ends LuxOS sessions)."""
        self._target_w = self._sleeping = None
        self._asleep_seen = False
        rpc = getattr(self._miner, "rpc", None)
        if session and rpc is not None and getattr(rpc, "session_token", None) is not None:
            rpc.session_token = None

    async def _renew_session(self) -> None:
        """Best-effort: a failure leaves pyasic to log on at the next command."""
        rpc = self._need().rpc
        try:
            await luxos.renew_session(self.device_id, rpc, self.timeout_s)
        except AdapterError:
            rpc.session_token = None
            return
        self._session_used = time.monotonic()

    def _web_call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        """VNish: a refused password is a rejection; sent again after a token renewal."""
        if self._caps.family is Family.VNISH:
            return vnish.auth_checked(self.device_id, what, self._need().web, call)
        return call()

    async def _call(self, what: str, fn: str, *args: Any) -> None:
        miner = self._need()
        if self._caps.family is Family.WHATSMINER_V3:  # pyasic's True/False say too little
            v3 = whatsminer3.call(self.device_id, miner, fn, args, self.timeout_s)
            return await self._guarded(v3)
        if whatsminer.is_v2(miner):  # nor on API v2: a refusal and no answer alike
            v2 = whatsminer.call(self.device_id, miner, fn, args, self.timeout_s)
            return await self._guarded(v2)
        call = self._web_call(what, lambda: getattr(miner, fn)(*args))
        try:
            ok = await contain(self.device_id, what, call, self.timeout_s)
        except AdapterError:
            self._forget(session=False)
            raise
        if ok is False:
            self._forget(session=True)
            raise ControlRejected(self.device_id, f"{what}: the firmware refused ({fn})")
        if self._luxos:
            self._session_used = time.monotonic()

    async def _luxos_profile(self, name: str) -> None:
        try:
            await luxos.set_profile(
                self.device_id, self._need().rpc, name, self._atm, self.timeout_s
            )
        except ControlRejected:
            raise
        except AdapterError:
            self._forget(session=True)
            raise
        self._session_used = time.monotonic()

    def _target(self, request: ModeRequest) -> tuple[float | None, str]:
        """The power target a run request sets (a preset where the firmware has them) and the
        rounding in words; (None, "") for a request that keeps the current target."""
        why = self._no_target or f"{self._caps.family.value} firmware has no power target"
        has_target = self._caps.power_target is not PowerTarget.NONE
        presets = self.info.power_targets_w if self.info else ()
        return run_target(request.power_w, has_target, presets, why)

    def _target_in_place(self, target: float) -> bool:
        return self._target_w is not None and abs(self._target_w - target) <= 0.5

    async def stage(self, request: ModeRequest) -> Applied | None:
        """Set the LuxOS profile of a coming wake while the miner sleeps.

        LuxOS documents (``curtail`` in its API reference) that a sleeping miner starts
        again only on ``curtail wakeup``, which brings the boards up at the profile then in
        force; a profile change does not wake it, nor does a restart. With the profile set
        ahead, the wake is one round trip instead of two.

        Only when a reading sent after the last command, a sleep, has shown the miner
        asleep: one still ramping down, or woken since, is left alone. Other firmware has
        nothing to stage here (whether a paused Braiins or stock miner stays paused through
        a power-target change is not documented), and neither does a target already set.
        """
        self._need()
        if not (self._luxos and request.action == "run" and self._asleep_seen):
            return None
        target, note = self._target(request)
        if target is None or self._target_in_place(target):
            return None
        name = self._profiles.get(target)
        if name is None:
            return None
        await self._luxos_profile(name)
        self._target_w = target
        return Applied(request, target, note)

    async def apply(self, request: ModeRequest) -> Applied:
        self._need()
        self._sleep_sent_at = time.time() if request.action == "sleep" else None
        self._asleep_seen = False
        if request.action == "sleep":
            note = ""
            if self._caps.family is Family.ANTMINER_STOCK:
                note = await self._stock(antminer.SLEEP)
            else:
                await self._call("sleep", "stop_mining")
            self._sleeping, self._slept_at = True, time.time()
            return Applied(request, None, note)
        target, note = self._target(request)
        if target is not None and not self._target_in_place(target):
            name = self._profiles.get(target) if self._luxos else None
            if name is not None:
                await self._luxos_profile(name)
            elif self._caps.family is Family.VNISH:
                await self._guarded(
                    vnish.set_preset(self.device_id, self._need(), target, self.timeout_s)
                )
            else:
                await self._call("set power target", "set_power_limit", int(target))
            self._target_w = target
        if self._sleeping is not False:
            if self._caps.family is Family.ANTMINER_STOCK:
                sent = await self._stock(antminer.NORMAL)
                note = "; ".join(n for n in (note, sent) if n)
            else:
                await self._call("wake", "resume_mining")
            self._sleeping, self._slept_at = False, None
        return Applied(request, target, note)

    async def _stock(self, mode: int) -> str:
        """The write's note: "" when answered, or that it went out unanswered."""
        miner, as_str = self._need(), bool(self._mode_as_str)
        aw = antminer.set_work_mode(self.device_id, miner, mode, as_str, self.timeout_s, self._web)
        return await self._guarded(aw)

    async def close(self) -> None:
        if self._web is not None:
            await self._web.close()
            self._web = None
        if self._grpc is not None:
            self._grpc.close()
            self._grpc = None

    async def _guarded(self, aw: Awaitable[T]) -> T:
        """A write's failure leaves the device's state unknown: resend everything next time."""
        try:
            return await aw
        except AdapterError:
            self._forget(session=False)
            raise
