"""ASIC miners through pyasic: LuxOS, Braiins OS+, stock Antminer, Whatsminer, VNish...

pyasic identifies the firmware (once, kept across reconnects and, by adapters.discovery,
across restarts) and does the control calls. This module adds what a scheduler needs around
it: timeouts and containment of whatever the library raises, the firmware family's
capabilities (``models.firmware``: a power target only where the firmware has one, the
nearest preset at or below where it has presets, with the rounding reported; none on stock
firmware, where a wake is the wake alone), sleep and wake, and read-back deadlines.

The command path (sleep, wake, power target, LuxOS profiles staged ahead of a wake, stock
Antminer's checked writes) is :mod:`adapters.asic_commands`; vendor payloads are parsed in
:mod:`adapters.payloads` (re-exported here); what it shares with the asic-rs back-end (the
read-back deadlines, the identity reported, what a reading makes it believe) is
:mod:`adapters.asic_miner`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from adapters import (
    antminer,
    antminer_reading,
    antminer_reboot,
    braiins,
    discovery,
    luxos,
    luxos_atm,
    vnish,
    whatsminer,
    whatsminer3,
)
from adapters.asic_commands import MinerCommands
from adapters.asic_miner import REDISCOVER_S
from adapters.base import (
    AdapterError,
    Applied,
    BadReply,
    DeviceInfo,
    DeviceUnreachable,
    Telemetry,
    contain,
)
from adapters.payloads import (
    LUXOS_PROFILES_MAX_AGE_S,
    LUXOS_TELEMETRY,
    LUXOS_TELEMETRY_FULL,
    RUNNING_SHARE,
    SLEEPING_MAX_W,
    choose_preset,
    luxos_profile,
    luxos_profiles,
    parse_luxos,
    parse_miner_data,
)
from models.firmware import CAPABILITIES, Family, family_of

__all__ = [
    "LUXOS_TELEMETRY",
    "RUNNING_SHARE",
    "SLEEPING_MAX_W",
    "PyasicMiner",
    "choose_preset",
    "parse_luxos",
    "parse_miner_data",
]

#: LuxOS ends a session unused for about a minute (docs.luxor.tech, "Sessions"); the next
#: reading of a session idle this long asks for its renewal, at the miner's own turn
#: (``luxos.renewal_due``), made off the path of a command by the fleet's upkeep
#: (:mod:`adapters.fleet_upkeep`), and never where its readings come
#: ``luxos.SESSION_SAFE_S`` (45 s) or more apart. A command finding the session idle past
#: that 45 s logs on first instead (one more round trip, never a failed attempt).
SESSION_RENEW_S = 30.0


def pyasic_fields() -> list[Any]:
    """The pyasic ``DataOptions`` a reading through ``get_data`` asks for: the fields
    ``parse_miner_data`` turns into Telemetry (the lean family readings ask the firmware
    for these same fields)."""
    from pyasic.miners.data import DataOptions  # pyasic's data classes only when read

    return [
        DataOptions.WATTAGE,
        DataOptions.WATTAGE_LIMIT,
        DataOptions.HASHRATE,
        DataOptions.HASHBOARDS,
        DataOptions.ERRORS,
        DataOptions.IS_MINING,
    ]


@dataclass
class PyasicMiner(MinerCommands):
    """One miner driven through pyasic; ``address`` is its IP (``timeout_s`` after it)."""

    #: Stock Antminer: send ``miner-mode`` as a JSON string (True) or number (False), as
    #: pyasic's setting ``antminer_mining_mode_as_str``; None: start from pyasic's
    #: setting and switch when a write is accepted and never shows.
    miner_mode_as_str: bool | None = None
    #: LuxOS: renew a session idle this long on the next reading (see SESSION_RENEW_S).
    session_renew_s: float = SESSION_RENEW_S
    #: LuxOS: hold the session from connect on and renew it (``[devices.adapter]
    #: luxos_sessions = "kept"``); False: log on only when a command needs it, and let LuxOS
    #: end it a minute after the last ("on-demand", as Luxor advises).
    keep_session: bool = True
    #: False: read only (``fleet status``): no LuxOS logon or renewal, so that the session
    #: of a daemon driving the same miners is left alone.
    sessions: bool = True
    #: Identities found before (:mod:`adapters.discovery`); None: always discover.
    identities: discovery.IdentityBook | None = None
    _found: discovery.Found | None = field(default=None, init=False, repr=False)
    _grpc: braiins.KeptChannel | None = field(default=None, init=False, repr=False)
    _vnish: vnish.WebSession | None = field(default=None, init=False, repr=False)
    #: LuxOS: the profile table as last read (name -> watts, TH/s) and when (monotonic).
    _lux_profiles: dict[str, tuple[float | None, float | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    _lux_profiles_at: float = field(default=-math.inf, init=False, repr=False)
    #: When the session was last used, as the reading that asked for its renewal saw it.
    _renew_seen: float = field(default=-math.inf, init=False, repr=False)

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
        if self.reboot_if_sleep_ignored and family is not Family.ANTMINER_STOCK:
            antminer_reboot.not_stock(self.device_id, family.value)
        if family is Family.WHATSMINER and self.sessions:  # so the first write is one trip
            await whatsminer.first_token(self.device_id, miner, self.timeout_s)
        if family is Family.WHATSMINER_V3 and self.sessions:  # the same, on API v3
            await whatsminer3.first_salt(self.device_id, miner, self.timeout_s)
        presets: tuple[float, ...] = ()
        if self._luxos:
            self._profiles, self._atm = await luxos.setup(self.device_id, miner.rpc, self.timeout_s)
            self._lux_profiles_at = -math.inf  # the first reading reads the table again
            presets = tuple(sorted(self._profiles))
            if self.sessions and self.keep_session:
                # Log on now, so that the first curtail is one round trip, not three; a
                # session another client left is ended first (LuxOS refuses a logon beside it).
                await luxos.renew_session(self.device_id, miner.rpc, self.timeout_s)
                self._session_used = time.monotonic()
        if family is Family.VNISH:  # pyasic's own preset choice never succeeds (adapters.vnish)
            self._vnish = vnish.session(miner, self._vnish)  # its web calls over a lean client
            got = await vnish.presets(self.device_id, miner, self._caps, self.timeout_s)
            self._caps, presets, self._no_target = got
        if family is Family.ANTMINER_STOCK and self._mode_as_str is None:
            from pyasic import settings

            pinned = self.miner_mode_as_str
            default = bool(settings.get("antminer_mining_mode_as_str", False))
            self._mode_as_str = default if pinned is None else pinned
        if family is Family.ANTMINER_STOCK:  # one web session per miner object found
            self._web = await antminer.session(miner, self._caps.write_timeout_s, self._web)
        range_w = None
        if family is Family.BRAIINS:  # one gRPC channel per miner object found
            self._grpc = braiins.keep(miner, self._grpc)
        if family is Family.BRAIINS and self._grpc is not None:  # the tuner's, asked once
            range_w = await braiins.tuner_range(self.device_id, self._grpc, self.timeout_s)
        version = self.info.firmware_version if self.info is not None else ""
        if not version and self._found is not None and self._found.cached is not None:
            version = self._found.cached.firmware_version  # its version table still matches
        if not version:  # pyasic's get_fw_ver() on API v3 has none
            version = await self._version(whatsminer3.fw_version(self.device_id, miner))
        model = str(getattr(miner, "raw_model", None) or getattr(miner, "model", "") or "")
        self.info = self._identity(make, model, firmware, version, family, presets, range_w)
        if self.identities is not None and self._found is not None:
            discovery.record(self.identities, self._found, self.address, self.info)
        return self.info

    def unconfirmed(self, applied: Applied) -> None:
        """Send everything again next time; on stock firmware, with the other JSON type of
        ``miner-mode`` (firmware versions differ; the one a read-back confirms is kept)."""
        self._forget(session=False)
        stock = self._caps.family is Family.ANTMINER_STOCK
        if stock and self._mode_as_str is not None and self.miner_mode_as_str is None:
            self._mode_as_str = not self._mode_as_str
        if self._caps.family is Family.VNISH and applied.request.action == "run":
            vnish.other_wake(self._miner)  # mining/resume or mining/start: the one that shows
        if stock:
            self._sleep_reboot.unconfirmed(applied.request.action, self.reboot_if_sleep_ignored)

    def not_shown(self, applied: Applied, t: Telemetry) -> str:
        """A stock miner configured asleep and hashing on (:mod:`adapters.antminer_reboot`)."""
        if applied.request.action != "sleep" or self._caps.family is not Family.ANTMINER_STOCK:
            return ""
        return self._sleep_reboot.words(self.reboot_if_sleep_ignored)

    async def _reachable(self) -> bool:
        """Whether the miner's API port takes a connection: pyasic answers a refused
        connection with an empty reply, which would otherwise read as unparseable."""
        port = int(getattr(getattr(self._miner, "rpc", None), "port", 4028) or 4028)
        return await discovery.port_open(self.address, port, self.timeout_s)

    async def read(self) -> Telemetry:
        miner = self._need()
        now = time.time()
        if self._luxos:
            t = await self._luxos_reading(miner.rpc, now)
            self._read_target_w = t.target_w
            if self._atm_state.owed and self.sessions:  # a lost re-enable: upkeep sends it
                self.upkeep_wanted = True
            due = luxos.renewal_due  # each miner at its own turn: spread over the sweeps
            mono, used = time.monotonic(), self._session_used
            gap_s, self._read_mono = mono - self._read_mono, mono  # readings this far apart
            keep = self.sessions and self.keep_session
            if keep and due(self.device_id, used, mono, self.session_renew_s, gap_s):
                # renewed by upkeep(), which the fleet runs off the sweep's path
                self.upkeep_wanted, self._renew_seen = True, used
        else:
            include = pyasic_fields()
            try:
                if self._web is not None:  # stock Antminer: only the calls its reading uses
                    got = antminer_reading.read(self.device_id, miner, self._web, now)
                    t = await contain(self.device_id, "telemetry", got, self.timeout_s)
                elif self._vnish is not None and self._caps.family is Family.VNISH:
                    vn = vnish.read(self.device_id, miner, self._vnish, now)
                    t = await contain(self.device_id, "telemetry", vn, self.timeout_s)
                elif self._grpc is not None:  # Braiins OS+: only the calls its reading uses
                    bos = braiins.read(self.device_id, miner, self._grpc, now)
                    t = await contain(self.device_id, "telemetry", bos, self.timeout_s)
                    if not self._grpc.range_settled:  # not read at connect: in a while
                        await self._range_again(self._grpc)
                else:
                    call = self._web_call("telemetry", lambda: miner.get_data(include=include))
                    data = await contain(self.device_id, "telemetry", call, self.timeout_s)
                    t = parse_miner_data(self.device_id, data, now)
            except BadReply as exc:
                if not await self._reachable():
                    raise DeviceUnreachable(
                        self.device_id, f"telemetry: no connection ({exc.reason})"
                    ) from None
                raise
        self._believe(t, now)
        if self._web is not None:  # stock: configured asleep after our sleep, still hashing?
            ours = self._sleep_sent_at is not None and 0.0 < self._sleep_sent_at <= now
            self._sleep_reboot.read(self._web.conf_asleep, t.hashrate_ths, ours)
        # Asleep as we left it: the last command was a sleep (or there was none), and the
        # reading went out after it. A miner reads asleep for a moment after a wake, too.
        sent = self._sleep_sent_at
        self._asleep_seen = t.state == "sleeping" and sent is not None and now >= sent
        if self.sessions and self._caps.family is Family.WHATSMINER:  # ahead of its token's end
            await whatsminer.renew_if_due(self.device_id, miner, self.timeout_s)
        return t

    async def _range_again(self, kept: braiins.KeptChannel) -> None:
        """Braiins OS+'s tuner range, which the connect could not read, asked again once
        its retry is due (:func:`adapters.braiins.tuner_range`) and put in the identity."""
        got = await braiins.tuner_range(self.device_id, kept, self.timeout_s)
        if got is not None and self.info is not None:
            self.info = replace(self.info, min_power_w=got[0], max_power_w=got[1])

    async def _luxos_reading(self, rpc: Any, now: float) -> Telemetry:
        """One round trip (two when the profile in force is not in the table held), over
        adapters.luxos_wire: pyasic's framing, repair and status checks with about a third
        less CPU than its send_command (whose multicommand() also re-derives its command
        list by introspection on every call, ~1.5 ms). The profile table travels with the
        reading only when it may have changed (LUXOS_TELEMETRY_FULL)."""
        mono = time.monotonic()
        table = self._lux_profiles
        full = not table or mono - self._lux_profiles_at > LUXOS_PROFILES_MAX_AGE_S
        reply = await self._luxos_ask(rpc, LUXOS_TELEMETRY_FULL if full else LUXOS_TELEMETRY)
        if not full and luxos_profile(self.device_id, reply) not in table:
            now, full = time.time(), True  # a profile set since: the table again, fresh
            reply = await self._luxos_ask(rpc, LUXOS_TELEMETRY_FULL)
        if full:
            self._lux_profiles = luxos_profiles(self.device_id, reply)
            self._lux_profiles_at = mono
        return parse_luxos(self.device_id, reply, now, self._lux_profiles)

    async def _luxos_ask(self, rpc: Any, command: str) -> Any:
        reply = await contain(self.device_id, "telemetry", luxos.ask(rpc, command), self.timeout_s)
        if not reply or set(reply) <= {"multicommand", "id"}:
            raise DeviceUnreachable(self.device_id, "telemetry: empty reply")
        return reply

    async def upkeep(self) -> None:
        """The session renewal a reading found due (:mod:`adapters.fleet_upkeep`), unless a
        command or a renewal has used the session since: it is fresh. Then an ATM re-enable
        a profile change owes (:func:`adapters.luxos_atm.restore_atm`)."""
        self.upkeep_wanted = False
        if self._luxos and self._miner is not None and self._session_used == self._renew_seen:
            await self._renew_session()
        if self._luxos and self._miner is not None and self._atm_state.owed:
            await luxos_atm.restore_atm(
                self.device_id, self._miner.rpc, self._atm_state, self.timeout_s
            )
            self._session_used = time.monotonic()

    async def _renew_session(self) -> None:
        """Raises AdapterError when the renewal failed: the session is dropped, and the next
        command logs on first (the fleet counts the failure; a later reading asks again)."""
        rpc = self._need().rpc
        try:
            await luxos.renew_session(self.device_id, rpc, self.timeout_s)
        except AdapterError:
            rpc.session_token = None
            raise
        self._session_used = time.monotonic()

    async def close(self) -> None:
        if self._web is not None:
            await self._web.close()
            self._web = None
        if self._grpc is not None:
            self._grpc.close()
            self._grpc = None
