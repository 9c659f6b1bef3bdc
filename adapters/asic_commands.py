"""The command path of a miner driven through pyasic (:class:`adapters.asic.PyasicMiner`):
sleep, wake and power target per firmware family, a LuxOS profile staged ahead of a wake,
and what a failed or refused write makes the adapter forget (everything is sent again).

Stock Antminer writes go through pyasic's web API but not through its ``stop_mining`` /
``resume_mining``: those return True whatever the miner answers, and rebuild the
configuration they write from a read that may have failed (writing empty pools). Here the
configuration read must parse, the write's answer must say success, and the JSON type of
``miner-mode`` (firmware versions differ: pyasic's ``antminer_mining_mode_as_str``) is
switched when a write is accepted and the read-back never shows it
(:meth:`adapters.asic.PyasicMiner.unconfirmed`).

The identity, the reading and the LuxOS session upkeep stay in :mod:`adapters.asic`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters import (
    antminer,
    antminer_reboot,
    auradine,
    braiins,
    epic,
    luxos,
    luxos_atm,
    rpccheck,
    vnish,
    whatsminer,
    whatsminer3,
)
from adapters.asic_miner import AsicMiner
from adapters.base import (
    AdapterError,
    Applied,
    ControlRejected,
    ModeRequest,
    Telemetry,
    Unsupported,
    contain,
)
from adapters.payloads import PRESET_TOLERANCE_W, run_target
from models.firmware import Family, PowerTarget

T = TypeVar("T")

#: LuxOS sleep and wake through :func:`adapters.luxos.curtail`, not pyasic's True/False.
_LUXOS_CURTAIL = {"stop_mining": "sleep", "resume_mining": "wakeup"}


@dataclass
class MinerCommands(AsicMiner):
    """A miner's writes and what it believes them to have set; ``connect`` and ``read``
    (:class:`adapters.asic.PyasicMiner`) fill in the miner, its family and its presets."""

    _mode_as_str: bool | None = field(default=None, init=False)  # stock: miner-mode's type
    _web: antminer.WebSession | None = field(default=None, init=False, repr=False)  # stock
    _no_target: str = field(default="", init=False)  # why this miner has no power target
    _luxos: bool = field(default=False, init=False)
    _session_used: float = field(default=-math.inf, init=False)  # monotonic
    _read_mono: float = field(default=math.inf, init=False)  # the last reading (inf: none)
    _profiles: dict[float, str] = field(default_factory=dict, init=False)  # LuxOS: W -> name
    _atm: bool = field(default=False, init=False)  # LuxOS: ATM on at the last connect/change
    _atm_state: luxos_atm.AtmState = field(default_factory=luxos_atm.AtmState, init=False)
    #: LuxOS: the last change made with ATM on: (its watts, ATM's floor in watts, the
    #: profile's watts a reading showed before it), for :meth:`confirms`; None: ATM off.
    _atm_change: tuple[float, float, float | None] | None = field(default=None, init=False)
    _read_target_w: float | None = field(default=None, init=False)  # LuxOS: last reading's
    #: When the last command, a sleep, was sent (0.0: no command yet); None after a run.
    _sleep_sent_at: float | None = field(default=0.0, init=False)
    _asleep_seen: bool = field(default=False, init=False)  # read asleep since that sleep
    #: Stock Antminer: reboot a miner once when its configuration reads asleep and it still
    #: hashes past the read-back deadline (``[devices.adapter] reboot_if_sleep_ignored``;
    #: :mod:`adapters.antminer_reboot`).
    reboot_if_sleep_ignored: bool = False
    _sleep_reboot: antminer_reboot.SleepReboot = field(
        default_factory=antminer_reboot.SleepReboot, init=False, repr=False
    )

    def _forget(self, session: bool) -> None:
        """After a failed command the device's state is unknown: resend everything next time;
        with ``session``, also log on again (a reboot ends LuxOS sessions)."""
        self._target_w = self._sleeping = None
        self._asleep_seen = False
        rpc = getattr(self._miner, "rpc", None)
        if session and rpc is not None and getattr(rpc, "session_token", None) is not None:
            rpc.session_token = None

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
        if self._luxos and fn in _LUXOS_CURTAIL:  # pyasic's True/False: no answer reads as either
            action = _LUXOS_CURTAIL[fn]
            self._luxos_session_check()
            await self._luxos_write(
                luxos.curtail(self.device_id, miner.rpc, action, self.timeout_s)
            )
            self._session_used = time.monotonic()
            return None
        kept = braiins.kept(miner)  # Braiins OS+: its gRPC status says more than True/False
        if kept is not None:
            return await self._guarded(kept.write(self.device_id, fn, args, self.timeout_s))
        web = vnish.kept(miner) if fn in vnish.COMMANDS else None  # VNish: the HTTP answer
        if web is not None and self._caps.family is Family.VNISH:
            return await self._guarded(vnish.command(self.device_id, web, fn, self.timeout_s))
        if self._caps.family is Family.OTHER and epic.handles(miner, fn):  # its `result`
            return await self._guarded(epic.command(self.device_id, miner, fn, self.timeout_s))
        if self._caps.family is Family.AURADINE and auradine.handles(miner, fn):  # its STATUS
            aur = auradine.command(self.device_id, miner, fn, args, self.timeout_s)
            return await self._guarded(aur)
        checked = self._caps.family in (Family.OTHER, Family.BRAIINS)  # pyasic's verdict
        if checked:  # inside strict(): no answer is unreachable, not {} nor False
            if why := rpccheck.unsupported(miner, fn):
                raise Unsupported(self.device_id, f"{what}: {why}")
            rpccheck.install(miner)
        call = self._web_call(what, lambda: getattr(miner, fn)(*args))
        try:
            with rpccheck.strict() if checked else contextlib.nullcontext():
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
        rpc = self._need().rpc
        self._luxos_session_check()
        self._atm_change, before = None, self._read_target_w
        atm = self._atm_state
        watts = {n: w for w, n in self._profiles.items()}
        await self._luxos_write(
            luxos_atm.set_profile(self.device_id, rpc, name, atm, self.timeout_s, watts)
        )
        self._session_used = time.monotonic()
        self._atm = atm.on
        if atm.on and name in watts:
            floor = watts.get(atm.floor, min(watts.values()))
            self._atm_change = (watts[name], min(floor, watts[name]), before)

    def confirms(self, applied: Applied, t: Telemetry) -> bool:
        """The read-back check (:meth:`DeviceAdapter.confirms`), and on LuxOS with ATM on
        at the change, also a profile ATM has moved it to since.

        ATM steps the profile on temperature once ``PostRampMinutes`` have passed after a
        ramp (15 by default; the operator may set 0), and the change leaves ATM's ceiling
        at the profile set (:func:`adapters.luxos_atm.set_profile`): what ATM may show after
        the change is a profile at or below ours and at or above ATM's floor. Read as not
        done, the command would be resent and ATM move it again, unconfirmed for ever.

        So with ATM on, a reading confirms the change when it shows the profile set, or a
        lower one within ATM's floor that is not the profile a reading showed before the
        change (that one is the change not made yet, or not at all: a profile ATM stepped
        down to from ours cannot be told from it, and waits for the next read-back or the
        resend, which ATM's post-ramp wait, far longer than the read-back's deadline, lets
        show). With no reading before the change, a firmware that ignored it cannot be told
        from ATM's step: only the profile set confirms. A profile above ours never
        confirms: ATM cannot go there.
        """
        if super().confirms(applied, t):
            return True
        change = self._atm_change
        if not self._luxos or change is None or applied.target_w is None:
            return False
        if applied.request.action != "run" or t.state != "running" or t.target_w is None:
            return False
        ours, floor, before = change
        same = PRESET_TOLERANCE_W  # a profile's watts, read as set
        if abs(applied.target_w - ours) > same:
            return False  # another command's
        if before is None or abs(t.target_w - before) <= same:
            return False  # no reading before the change: a profile ignored cannot be told
        return floor - same <= t.target_w < ours

    def _luxos_session_check(self) -> None:
        """A session idle past SESSION_SAFE_S may have ended (readings far apart do not
        renew it): the write logs on first rather than fail once on it."""
        if time.monotonic() - self._session_used > luxos.SESSION_SAFE_S:
            self._need().rpc.session_token = None

    async def _luxos_write(self, aw: Awaitable[None]) -> None:
        """A refusal may be a session LuxOS ended (a reboot ends them): log on again next
        time. A miner not reached keeps its session; either way everything is resent."""
        try:
            await aw
        except ControlRejected:
            self._forget(session=True)
            raise
        except AdapterError:
            self._forget(session=False)
            raise

    def _target(self, request: ModeRequest) -> tuple[float | None, str]:
        """The power target a run request sets (a preset where the firmware has them) and the
        rounding in words; (None, "") for a request that keeps the current target."""
        why = self._no_target or f"{self._caps.family.value} firmware has no power target"
        has_target = self._caps.power_target is not PowerTarget.NONE
        presets = self.info.power_targets_w if self.info else ()
        return run_target(request.power_w, has_target, presets, why)

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
                web = self._web
                if web is not None and self._sleep_reboot.take():
                    aw = antminer_reboot.reboot(self.device_id, web, self.timeout_s)
                    note = await self._guarded(aw)
                else:
                    note = await self._stock(antminer.SLEEP)
            else:
                await self._call("sleep", "stop_mining")
            self._sleeping, self._slept_at = True, time.time()
            return Applied(request, None, note)
        self._sleep_reboot.woken()  # a wake cancels a reboot that was due
        target, note = self._target(request)
        if target is not None and not self._target_in_place(target):
            name = self._profiles.get(target) if self._luxos else None
            if self._luxos and name is None:  # not through pyasic: its {} reads as refused
                got = luxos.profile_for(self.device_id, self._need().rpc, target, self.timeout_s)
                self._profiles, chosen_w = await self._guarded(got)
                name = self._profiles[chosen_w]
                if abs(chosen_w - target) > 0.5:  # the read-back shows the profile's watts
                    note = f"asked {target:g} W; LuxOS has profiles only, set {chosen_w:g} W"
                    target = chosen_w
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

    async def _guarded(self, aw: Awaitable[T]) -> T:
        """A write's failure leaves the device's state unknown: resend everything next time."""
        try:
            return await aw
        except AdapterError:
            self._forget(session=False)
            raise
