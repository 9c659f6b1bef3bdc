"""GPUs through NVML (nvidia-ml-py, ``import pynvml``), or through the GPU simulator.

The adapter sets each GPU's power limit within NVML's own min/max constraints and reads
power draw, the total-energy counter, utilisation, SM clock and temperature. A serving
unit that the plan puts to sleep is held at the minimum limit and the serving layer is told
it has no capacity: NVML cannot switch a GPU off (what the serving layer is told, and the
drain before a sleep: ``adapters.gpu_serving``).

Backends share one small async interface (:class:`GpuBackend`): :class:`PynvmlBackend`
for real GPUs (``adapters.nvml``, with NVML's errors; both importable from here), the
simulator's in ``adapters.sim.gpu_backend``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adapters import gpu_serving as serving
from adapters.base import (
    CLOCKS_UNKNOWN,
    AdapterError,
    Applied,
    BadReply,
    ClockLock,
    DeviceAdapter,
    DeviceInfo,
    DeviceTimeout,
    DeviceUnreachable,
    ModeRequest,
    Telemetry,
    Unsupported,
    contain,
)
from adapters.nvml import GpuBackend, PynvmlBackend, nvml_error
from adapters.replywords import value_words
from adapters.serving_hook import ServingHook

log = logging.getLogger("gridsched.adapters.gpu")

__all__ = [
    "GpuBackend", "NvmlGpu", "PynvmlBackend", "ServingHook", "limit_matches", "nvml_error",
]  # fmt: skip

#: An SM clock read back this far above a locked range's max shows the lock is not in
#: force. The margin allows for the driver taking the range to clocks it supports
#: (nvmlDeviceGetSupportedGraphicsClocks lists them), which need not be the ones asked.
CLOCK_SLACK_MHZ = 30.0
#: Why a fresh adapter does not know the clocks: a lock outlives the process that set it.
#: A power limit read back within this of the one set is that limit (NVML takes and
#: returns milliwatts; the same slack as the read-back's check, ``DeviceAdapter.confirms``).
LIMIT_SLACK_W = 1.0
LIMIT_SLACK_SHARE = 0.01
#: How long a GPU whose clock locks NVML refused is kept out of clock modes before one is
#: tried again (a permission may be granted, a container restarted with the capability).
LOCK_RETRY_S = 900.0
NO_CLOCK_CALL_YET = (
    "no SM clock call answered since this adapter started: a lock left by an earlier "
    "run would not show, and NVML cannot read one back"
)


@dataclass
class NvmlGpu(DeviceAdapter):
    """One GPU; ``address`` is its index on the host, ``backend`` reaches it."""

    backend: GpuBackend | None = None
    index: int = 0
    timeout_s: float = 2.0
    throughput: Callable[[float], float] | None = None  # tokens/s at a power limit (W)
    hook: ServingHook | None = None
    #: requests running or waiting on this GPU's engine; with the hook, a GPU put to sleep
    #: is drained (told first, its requests finish or ``drain_s`` passes, then powered down)
    in_flight: Callable[[], Awaitable[float]] | None = None
    drain_s: float = 0.0
    on_drain: Callable[[float], None] | None = None  # seconds each drain took
    #: tokens/s the serving layer is told a command's mode serves (the rate counted under
    #: the latency objective); None, or a command it does not know: ``throughput``'s
    capacity: Callable[[ModeRequest], float | None] | None = None
    #: tokens/s per unit of the class mode with this power limit and SM clock lock (the
    #: mode's stated figure); None: no mode of the class has that pair
    mode_tokens_s: Callable[[ModeRequest], float | None] | None = None
    _asleep: bool = field(default=False, init=False)
    #: The SM clock range this adapter locked (None: the driver's own clocks, as far as we
    #: know); reset when a mode without clocks runs, when the GPU sleeps, and on close.
    _locked: tuple[int, int] | None = field(default=None, init=False)
    #: why the clocks in force cannot be told (none set or reset yet, a lock seen lost, a
    #: lock call timed out); None when they can. Cleared by the next clock call that NVML
    #: answers (the daemon's connect resets them: ``controller``).
    _clocks_unknown: str | None = field(default=NO_CLOCK_CALL_YET, init=False)
    #: capacity last told to the serving layer (0 before any: a first mode is "more")
    _capacity_tok_s: float = field(default=0.0, init=False)
    #: the power limit this adapter last set (None: none yet); a limit read back that
    #: differs was changed outside gridsched (``nvidia-smi -pl``), and the reading says so
    _limit_set_w: float | None = field(default=None, init=False)
    #: why NVML refused this GPU's last SM clock lock (NOT_SUPPORTED: a GPU or driver that
    #: cannot lock; NO_PERMISSION: not root, or a container without the capability); None
    #: while locks are accepted. Cleared by the next lock NVML accepts.
    lock_refused: str | None = field(default=None, init=False)
    lock_retry_s: float = LOCK_RETRY_S
    _lock_refused_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.kind = "gpu"
        if self.backend is None:
            self.backend = PynvmlBackend()

    async def _call(self, call: str, *args: float) -> Any:
        assert self.backend is not None
        try:
            return await contain(
                self.device_id, call, self.backend.call(self.index, call, *args), self.timeout_s
            )
        except AdapterError as exc:
            if exc.device != self.device_id:  # errors raised inside a backend name the GPU
                raise type(exc)(self.device_id, exc.reason) from None
            raise

    async def connect(self) -> DeviceInfo:
        name, uuid = _pair("identity", self.device_id, await self._call("identity"))
        driver = str(await self._call("driver_version"))
        got = await self._call("limit_constraints_w")
        lo, hi = _figures("limit_constraints_w", self.device_id, got, 2)
        if not (0 < lo <= hi):
            raise BadReply(self.device_id, f"NVML power limit constraints [{lo}, {hi}] W")
        self.info = DeviceInfo(
            device_id=self.device_id,
            kind="gpu",
            address=f"{self.backend.label if self.backend else ''}:{self.index}",
            make="NVIDIA",
            model=str(name),
            firmware="driver",
            firmware_version=driver,
            serial=str(uuid),
            min_power_w=float(lo),
            max_power_w=float(hi),
        )
        if self.controller and self._clocks_unknown is not None:
            await self._reset_unknown_clocks()
        return self.info

    async def _reset_unknown_clocks(self) -> None:
        """The daemon's connect: give the SM clocks back to the driver where which are in
        force is not known (a lock a crashed run left, one seen lost), so that readings
        know them from the first. A lock this adapter holds is kept across reconnects.
        A refusal does not fail the connect: the clocks stay unknown, and the reading says
        why. NOT_SUPPORTED: the GPU cannot lock clocks at all, so none is in force."""
        try:
            await self._call("reset_locked_clocks")
        except AdapterError as exc:
            if _cannot_lock(exc):
                self._locked, self._clocks_unknown = None, None
            else:
                self._clocks_unknown = f"the SM clock reset at connect failed: {exc.reason}"
            return
        self._locked, self._clocks_unknown = None, None

    def confirms(self, applied: Applied, t: Telemetry) -> bool:
        """The power limit read back (the base check) and, for a run, the SM clock lock
        asked: a GPU that took the limit and refused the lock, or whose lock cannot be
        told, is not in the mode asked (a clock mode and its cap twin share a limit)."""
        if not super().confirms(applied, t):
            return False
        return applied.request.action == "sleep" or (
            t.sm_clock_lock_mhz == applied.request.clocks_mhz
        )

    async def read(self) -> Telemetry:
        now = time.time()
        # one call for the six figures (adapters.nvml.READING): a hop to NVML's thread or a
        # round trip to the simulator each cost more than the figures themselves
        figures = await self._call("reading")
        power, limit, energy, util, clock, temp = _figures("reading", self.device_id, figures, 6)
        lo = self.info.min_power_w if self.info else None
        asleep = self._asleep and lo is not None and abs(limit - lo) <= 1.0
        clocks, unknown = self._clocks_in_force(clock)
        if asleep:
            tokens, why = 0.0, None
        elif unknown is not None:
            # A reader (fleet status) never sets clocks, so not knowing them from the start
            # is its nature, not a fault: the reading says "unknown" and claims no tokens/s.
            # A controller that does not know them (its reset refused, a lock seen lost, a
            # call timed out) says why, and its health is degraded.
            quiet = not self.controller and unknown is NO_CLOCK_CALL_YET
            tokens, why = None, None if quiet else f"SM clock lock unknown: {unknown}"
        else:
            tokens, why = self._tokens_s(limit, clocks, util)
        lock: ClockLock = CLOCKS_UNKNOWN if unknown is not None else clocks
        errors: tuple[str, ...] = () if why is None else (why,)
        if self._limit_set_w is not None and not limit_matches(limit, self._limit_set_w):
            errors += (
                f"power limit read back at {limit:g} W, not the {self._limit_set_w:g} W this "
                "adapter set: changed outside gridsched (nvidia-smi -pl, another tool)",
            )
        return Telemetry(
            device_id=self.device_id,
            at=now,
            state="sleeping" if asleep else "running",
            power_w=power,
            target_w=limit,
            tokens_s=tokens,
            energy_j=energy,
            temperatures_c=(temp,),
            utilisation_pct=util,
            sm_clock_mhz=clock,
            errors=errors,
            sm_clock_lock_mhz=lock,
        )

    def _clocks_in_force(self, clock_mhz: float) -> tuple[tuple[int, int] | None, str | None]:
        """The SM clock range in force as far as the read-back tells, or why it cannot.

        NVML sets and resets a locked range but has no call that returns one, so the range
        is the one this adapter set and NVML accepted, checked against the SM clock read
        back: a clock above the range's max shows the lock is gone (reset outside gridsched:
        ``nvidia-smi -rgc``, a driver reload), and then which clocks are in force is not
        known. A lock set outside gridsched while none of ours is held cannot be seen."""
        if self._clocks_unknown is None and self._locked is not None:
            lo, hi = self._locked
            if clock_mhz > hi + CLOCK_SLACK_MHZ:
                self._clocks_unknown = (
                    f"SM clock read back at {clock_mhz:g} MHz, above the {lo}-{hi} MHz lock "
                    "this adapter set: the lock is not in force, and NVML cannot read back "
                    "which clocks are"
                )
                self._locked = None  # the next command for a clock mode locks again
        if self._clocks_unknown is not None:
            return None, self._clocks_unknown
        return self._locked, None

    def _tokens_s(
        self, limit_w: float, clocks: tuple[int, int] | None, util_pct: float
    ) -> tuple[float | None, str | None]:
        """Tokens/s served now, from the mode read back (power limit and the SM clock lock
        known in force) scaled by utilisation; None and the reason where no figure covers
        it. The cap curve (``throughput``) holds only with the clocks left to the driver:
        a locked clock serves less than its cap's figure."""
        if self.throughput is None and self.mode_tokens_s is None:
            return None, None  # no figures configured: nothing to estimate from
        stated = None
        if self.mode_tokens_s is not None:
            stated = self.mode_tokens_s(ModeRequest("run", limit_w, clocks))
        if stated is None and clocks is None and self.throughput is not None:
            stated = self.throughput(limit_w)
        if stated is None:
            what = "no SM clock lock"
            if clocks is not None:
                what = f"SM clocks locked at {clocks[0]}-{clocks[1]} MHz"
            return None, (
                f"tokens/s not estimated: no mode of the class has figures for a "
                f"{limit_w:g} W power limit with {what}"
            )
        return stated * util_pct / 100.0, None

    async def apply(self, request: ModeRequest) -> Applied:
        if self.info is None:
            raise DeviceUnreachable(self.device_id, "not connected")
        lo = float(self.info.min_power_w or 0.0)
        hi = float(self.info.max_power_w or 0.0)
        note = ""
        if request.action == "sleep":
            target = lo
        elif request.power_w is None:
            target = _figures("limit_w", self.device_id, (await self._call("limit_w"),), 1)[0]
        else:
            target = min(max(request.power_w, lo), hi)
            if target != request.power_w:
                note = (
                    f"asked {request.power_w:g} W; NVML allows [{lo:g}, {hi:g}] W, set {target:g} W"
                )
        sleep = request.action == "sleep"
        counted = None if sleep or self.capacity is None else self.capacity(request)
        capacity = 0.0 if sleep or self.throughput is None else self.throughput(target)
        capacity = capacity if counted is None else counted
        # Less capacity: the serving layer hears it BEFORE the limit drops (it stops routing
        # here), and a GPU going to sleep finishes its requests first. More: after.
        first = self.hook is not None and (sleep or capacity < self._capacity_tok_s)
        if first:
            told = await self._tell(target, capacity, sleep)
            note = _join(note, "" if told is None else f"before the drain, {told}")
            if sleep:
                note = _join(note, await serving.drain(
                    self.device_id, self.in_flight, self.drain_s, self.timeout_s, self.on_drain
                ))  # fmt: skip
        await self._call("set_limit_w", target)
        self._limit_set_w = target
        self._asleep = sleep
        self._capacity_tok_s = capacity
        clock_note = await self._set_clocks(None if self._asleep else request.clocks_mhz)
        note = _join(note, clock_note)
        if self.hook is not None and not first:
            told = await self._tell(target, capacity, sleep)
            note = _join(note, "" if told is None else f"power limit set, but {told}")
        return Applied(request, target, note)

    async def _tell(self, target_w: float, capacity: float, sleep: bool) -> str | None:
        assert self.hook is not None
        return await serving.tell(
            self.hook, self.device_id, self.index, target_w, capacity, sleep, self.timeout_s
        )

    async def _set_clocks(self, clocks: tuple[int, int] | None) -> str:
        """Lock (or reset) the SM clocks after the power limit is in place. A refusal
        leaves the power limit, which bounds the draw, and says so in the outcome's note:
        the mode's energy saving is then not in effect (not claimed)."""
        if clocks == self._locked and self._clocks_unknown is None:
            return ""
        try:
            if clocks is None:
                await self._call("reset_locked_clocks")
            else:
                await self._call("set_locked_clocks", float(clocks[0]), float(clocks[1]))
        except AdapterError as exc:
            if isinstance(exc, DeviceTimeout):  # it may or may not have taken effect
                self._clocks_unknown = f"the SM clock call for {clocks} timed out"
            elif _cannot_lock(exc):  # no lock can be in force: the driver's clocks are
                self._locked, self._clocks_unknown = None, None
            if clocks is not None and isinstance(exc, Unsupported):
                self._refused(exc.reason)
            return f"power limit set, but SM clock lock {clocks} not applied: {exc.reason}"
        self._locked = clocks
        self._clocks_unknown = None
        if clocks is not None and self.lock_refused is not None:
            log.warning("%s: SM clock lock accepted now (refused before: %s); its clock "
                        "modes are reachable again", self.device_id, self.lock_refused)  # fmt: skip
            self.lock_refused = None
        return ""

    def _refused(self, reason: str) -> None:
        """NVML refused a lock for good (not a timeout): said once per reason."""
        if reason != self.lock_refused:
            log.warning("%s refuses SM clock locks (%s): its clock modes are unreachable; a "
                        "lock is tried again after %g s", self.device_id, reason,
                        self.lock_retry_s)  # fmt: skip
        self.lock_refused = reason
        self._lock_refused_at = time.monotonic()

    def clock_modes_barred(self) -> str | None:
        """Why this GPU is not to be sent clock modes now (None: it may be): NVML refused
        its last lock, and the retry (``lock_retry_s`` later) is not due yet."""
        if self.lock_refused is None:
            return None
        if time.monotonic() - self._lock_refused_at >= self.lock_retry_s:
            return None
        return self.lock_refused

    async def close(self) -> None:
        """Give the clocks back to the driver if this adapter locked them."""
        if self._locked is not None:
            try:
                await self._call("reset_locked_clocks")
                self._locked = None
            except AdapterError:
                pass  # the GPU is gone or refuses: nothing more to release here


def limit_matches(read_w: float, set_w: float) -> bool:
    """Whether a power limit read back is the one set (within NVML's rounding)."""
    return abs(read_w - set_w) <= max(LIMIT_SLACK_W, LIMIT_SLACK_SHARE * set_w)


def _cannot_lock(exc: AdapterError) -> bool:
    """NVML NOT_SUPPORTED on a clock call: the GPU (older than Volta) or its driver cannot
    lock SM clocks at all, so none is in force (unlike NO_PERMISSION: one may be)."""
    return isinstance(exc, Unsupported) and "NOT_SUPPORTED" in exc.reason


def _join(note: str, more: str) -> str:
    return note if not more else (f"{note}; {more}" if note else more)


def _figures(call: str, device_id: str, got: Any, n: int) -> tuple[float, ...]:
    """``n`` numbers of an NVML answer (a backend's, an agent's), or BadReply in words."""
    if isinstance(got, list | tuple) and len(got) == n:
        with contextlib.suppress(TypeError, ValueError):
            if not any(isinstance(x, bool | str) for x in got):
                return tuple(float(x) for x in got)
    what = f"{n} numbers were" if n > 1 else "a number was"
    shown = value_words(got if n > 1 or not isinstance(got, tuple) else got[0])
    raise BadReply(device_id, f"{call}: the answer has {shown} where {what} expected")


def _pair(call: str, device_id: str, got: Any) -> tuple[Any, Any]:
    if isinstance(got, list | tuple) and len(got) == 2:
        return got[0], got[1]
    why = f"the answer has {value_words(got)} where a (name, UUID) pair was expected"
    raise BadReply(device_id, f"{call}: {why}")
