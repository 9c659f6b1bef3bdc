"""The fleet: many adapters driven concurrently, with retries, health and outcomes.

Every control call ends in exactly one :class:`Outcome` (accepted, rejected or failed, with
the error in words), handed to ``on_outcome`` as it happens, so a caller that persists
outcomes loses none. An accepted command is not yet done: it waits in ``pending`` until a
reading shows it, a second Outcome (``confirmed`` or ``unconfirmed``), kept by the fleet's
read-back (:mod:`adapters.readback`). Nothing an adapter raises escapes: a dead, hanging or
babbling device is marked and retried, and the rest of the fleet goes on; what each
device's health says is in :mod:`adapters.fleet_health`.

Readings and commands are bounded separately, and readings wait while commands are in
flight (:mod:`adapters.fleet_slots`). Each accepted command is read back on its own soon
after it (:mod:`adapters.readback`), in the readings' slots: the read-back's readers queue
for them beside the sweep's, ``READBACK_SHARE`` times as many (during a sweep about three
slots in four as they free up, the slots handed out in turn; without one, all of them).
Upkeep a reading found due runs after it, off the sweep's path (:mod:`adapters.fleet_upkeep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.base import (
    AdapterError,
    Applied,
    DeviceAdapter,
    DeviceTimeout,
    Health,
    ModeRequest,
    Telemetry,
)
from adapters.fleet_bound import CallBound
from adapters.fleet_health import HealthBook
from adapters.fleet_slots import Slots
from adapters.fleet_upkeep import Upkeep
from adapters.gc_hold import freeze_heap
from adapters.outcomes import DeviceStatus, Outcome, OutcomeKind, Pending, RetryPolicy
from adapters.readback import ReadBack, ReadBackRunner

__all__ = [
    "DeviceStatus",
    "Fleet",
    "Outcome",
    "OutcomeKind",
    "Pending",
    "RetryPolicy",
    "freeze_heap",
]

log = logging.getLogger("gridsched.fleet")

#: The read-back's readers per readings' slot (see the module's docstring).
READBACK_SHARE = 3


@dataclass
class Fleet:
    adapters: Sequence[DeviceAdapter]
    groups: Mapping[str, str] = field(default_factory=dict)  # device id -> device class
    concurrency: int = 256  # commands in flight
    #: readings in flight (default: ``concurrency``). Each reading still out when a
    #: curtail arrives is parsed on the same event loop before the curtail's commands
    #: finish; the daemon keeps this lower than the commands' bound.
    read_concurrency: int | None = None
    connect_concurrency: int = 128  # discovery opens several connections per device
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    unreachable_after: int = 3
    probe_max_s: float = 60.0
    op_timeout_s: float = 10.0  # last-resort bound on one adapter call
    read_yield_max_s: float = 2.0  # longest a reading waits for control calls to finish
    #: The garbage collector waits while control calls are in flight, at most this long
    #: (0: never); see :class:`adapters.gc_hold.CollectorHold`.
    gc_hold_max_s: float = 1.0
    on_outcome: Callable[[Outcome], None] | None = None
    #: Hears each reading as it arrives, a sweep's or a read-back's (the daemon's site
    #: power takes each device's newest, not the last poll's); it must not raise.
    on_reading: Callable[[Telemetry], None] | None = None
    #: Hears each change of a device's health, its error in ``last_error``; must not raise.
    on_health: Callable[[DeviceStatus], None] | None = None
    seed: int | None = None
    #: Wall time for outcomes and read-back deadlines (the daemon passes its own clock).
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        # Counted in one pass: list.count per id took 18 s of CPU at 30,000 devices.
        dup = sorted(i for i, n in Counter(a.device_id for a in self.adapters).items() if n > 1)
        if dup:
            raise ValueError(f"duplicate device ids {dup[:5]}")
        self.by_id = {a.device_id: a for a in self.adapters}
        self.status = {
            a.device_id: DeviceStatus(a.device_id, self.groups.get(a.device_id, ""))
            for a in self.adapters
        }
        self._by_group: dict[str, list[str]] | None = None  # see ids()
        # Commands and readings have their own slots: a curtailment must not queue behind
        # a telemetry sweep of the whole fleet.
        self._read_slots = self.read_concurrency or self.concurrency
        self._slots = Slots(
            self.concurrency, self._read_slots, self.read_yield_max_s, self.gc_hold_max_s
        )
        self._gc = self._slots.gc
        self._rng = random.Random(self.seed)
        self._locks = {a.device_id: asyncio.Lock() for a in self.adapters}
        self._bound = CallBound()  # op_timeout_s on each adapter call
        #: When each command in flight went out to its device (perf_counter), for its read-back.
        self._went_out: dict[str, float] = {}
        self._health = HealthBook(self.retry, self.unreachable_after, self.probe_max_s, self._news)
        self._readback = ReadBack(self.by_id, self.status, self._health, self._emit)
        self._read_backs = ReadBackRunner(
            self._readback, self._read_one, self.clock, READBACK_SHARE * self._read_slots
        )
        self.upkeep = Upkeep(self._slots, self.op_timeout_s)  # what readings found due

    @property
    def pending(self) -> dict[str, Pending]:
        """Accepted commands not yet seen in effect, by device."""
        return self._readback.pending

    def _emit(self, out: Outcome) -> None:
        if self.on_outcome is not None:
            try:
                self.on_outcome(out)
            except Exception:
                log.exception("on_outcome hook failed for %s", out.device_id)

    def _news(self, st: DeviceStatus) -> None:  # a change of health, for on_health
        if self.on_health is not None:
            self.on_health(st)

    def _ok(self, st: DeviceStatus, op: str = "apply") -> None:
        self._health.ok(st, op, awaiting=self._readback.waiting(st.device_id))

    def check_pending(self) -> None:
        """Give up on pending commands past their deadline (readings settle the others)."""
        self._readback.check_pending(self.clock())

    def unconfirmed_requests(self) -> dict[str, ModeRequest]:  # accepted, never seen in effect
        return dict(self._readback.unconfirmed)

    async def resend_unconfirmed(self) -> list[Outcome]:
        """Send each unconfirmed command again (in full: the adapter forgot it)."""
        todo = {i: r for i, r in self._readback.unconfirmed.items() if i not in self.pending}
        return await self.apply(todo) if todo else []

    def health_counts(self) -> dict[Health, int]:
        return dict.fromkeys(Health, 0) | Counter(st.health for st in self.status.values())

    def ids(self, group: str | None = None) -> list[str]:
        """The devices (of one class), in the fleet's order."""
        if group is None:
            return list(self.status)
        # Dispatch asks for each class at every poll: indexed once, not a walk of the whole
        # fleet per class (the devices and their classes are fixed when the fleet is made).
        if self._by_group is None:
            self._by_group = {}
            for i, st in self.status.items():
                self._by_group.setdefault(st.group, []).append(i)
        return list(self._by_group.get(group, ()))

    # -- operations -------------------------------------------------------------------------

    async def _run(
        self, dev: DeviceAdapter, op: str, req: ModeRequest | None, attempts: int
    ) -> tuple[object | None, str | None, int]:
        st = self.status[dev.device_id]
        err: str | None = None
        tries = 0
        for n in range(attempts):
            tries = n + 1
            try:
                async with self._slots.by_op[op]:
                    if op != "apply" and self._slots.controls:
                        await self._slots.yield_to_controls()
                    # the call itself in this frame: every read and command passes here
                    bound = self._bound.enter(self.op_timeout_s)
                    try:
                        try:
                            if not st.connected:
                                await dev.connect()
                                st.connected = True
                            result: object
                            if op == "read":
                                result = await dev.read()
                            elif op == "stage":
                                assert req is not None
                                result = await dev.stage(req)
                            else:
                                assert req is not None
                                # the command goes out now, after its wait for a slot
                                self._went_out[dev.device_id] = time.perf_counter()
                                result = await dev.apply(req)
                        finally:
                            late = self._bound.leave(bound)
                    except (TimeoutError, asyncio.CancelledError) as exc:
                        # The last-resort bound, or the adapter's own timer firing late (a loop
                        # far behind): a timeout, not an adapter bug; a cancel from outside stays
                        if isinstance(exc, asyncio.CancelledError) and not late:
                            raise
                        raise DeviceTimeout(
                            dev.device_id, f"{op}: no answer within {self.op_timeout_s:g} s"
                        ) from None
            except asyncio.CancelledError:
                raise
            except AdapterError as exc:
                err = self._health.fail(st, exc)
                if not exc.retryable:
                    break
            except Exception as exc:  # an adapter bug must not stop the fleet
                err = self._health.fail_outside(st, exc)
            else:
                if op == "read":
                    assert isinstance(result, Telemetry)
                    held = st.telemetry
                    # a sweep's and a read-back's reading crossing: the newer one stays
                    if held is None or result.at >= held.at:
                        st.telemetry = result
                        if self.on_reading is not None:
                            self.on_reading(result)
                    if dev.upkeep_wanted:  # off the sweep's path: adapters.fleet_upkeep
                        await self.upkeep.wanted(dev)
                if result is not None:  # a stage with nothing to do heard nothing from it
                    self._ok(st, op)
                if isinstance(result, Telemetry):
                    self._readback.settle(dev.device_id, result, self.clock())
                return result, None, tries
            if n + 1 < attempts:
                await asyncio.sleep(self.retry.delay(n, self._rng))
        return None, err, tries

    async def connect_all(
        self, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, str | None]:
        """Connect every device; returns the error per device (None when connected).

        Bounded in time: ``connect_concurrency`` at once, each within ``op_timeout_s``.
        ``progress(done, total)`` is called as each device ends, connected or not."""

        sem = asyncio.Semaphore(min(self.concurrency, self.connect_concurrency))
        devs = self._own_devices()
        done = 0

        async def one(dev: DeviceAdapter) -> tuple[str, str | None]:
            nonlocal done
            st = self.status[dev.device_id]
            try:
                async with sem:
                    await asyncio.wait_for(dev.connect(), self.op_timeout_s)
                st.connected = True
                self._ok(st)
                return dev.device_id, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return dev.device_id, self._health.fail(st, exc)
            finally:
                done += 1
                if progress is not None:
                    progress(done, len(devs))

        return dict(await asyncio.gather(*(one(d) for d in devs)))

    def _own_devices(self) -> list[DeviceAdapter]:
        """The devices this process drives (a sharded fleet's workers drive the others)."""
        return list(self.adapters)

    async def read_all(self, ids: Iterable[str] | None = None) -> dict[str, Telemetry]:
        """One telemetry sweep; unreachable devices are probed only when their backoff ends.

        The devices are read in order by as many workers as there are readings' slots, not
        by a task per device queued on the slots: a task each, and its wait for a slot, cost
        about 20 us of CPU per reading (4-9 us through a worker), most of what the fleet
        adds to a reading. A worker whose device is between retries holds no slot but
        reads nothing else meanwhile (at most 0.15 s per device, :class:`RetryPolicy`)."""
        now, ended = time.monotonic(), self.upkeep.sweep(whole=ids is None)
        devs = [self.by_id[i] for i in ids] if ids is not None else list(self.adapters)
        results: list[Telemetry | None] = [None] * len(devs)
        todo = iter(enumerate(devs))

        async def worker() -> None:
            for k, dev in todo:
                st = self.status[dev.device_id]
                if st.probe_waits(now):
                    continue
                result, _err, _n = await self._run(dev, "read", None, self._health.attempts(st))
                if isinstance(result, Telemetry):
                    results[k] = result

        await asyncio.gather(*(worker() for _ in range(min(self._read_slots, len(devs)))))
        ended()
        self.check_pending()
        return {dev.device_id: t for dev, t in zip(devs, results, strict=True) if t is not None}

    async def apply(self, requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        """Send each device its mode, concurrently; one Outcome per request, always."""

        async def one(device_id: str, req: ModeRequest) -> Outcome:
            t0 = time.perf_counter()
            dev = self.by_id.get(device_id)
            if dev is None:
                out = Outcome(device_id, req, False, 0, 0.0, error=f"{device_id}: unknown device")
            else:
                async with self._locks[device_id]:
                    result, err, n = await self._run(
                        dev, "apply", req, self._health.attempts(self.status[device_id])
                    )
                went_out = self._went_out.pop(device_id, t0)
                if isinstance(result, Applied):
                    done = time.perf_counter()
                    out = Outcome(device_id, req, True, n, done - t0, result, at=self.clock())
                    self._readback.accepted(out, done - went_out)  # from when it went out
                    self._read_backs.soon()
                else:
                    rejected = self.status[device_id].health is Health.REJECTED
                    kind = OutcomeKind.REJECTED if rejected else OutcomeKind.FAILED
                    latency_s = time.perf_counter() - t0
                    out = Outcome(
                        device_id, req, False, n, latency_s, error=err, at=self.clock(), kind=kind
                    )
                    # a command still waiting for its read-back keeps waiting: this one was
                    # not accepted, and the device may yet show the older (or never)
            self._emit(out)
            return out

        with self._controlling():
            return list(await asyncio.gather(*(one(i, r) for i, r in requests.items())))

    def _controlling(self) -> contextlib.AbstractContextManager[None]:
        return self._slots.controlling()  # control calls in flight

    async def stage(self, requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        """Let each device set up ahead what a later apply of its request needs, where it can
        do so without changing what it does now (:meth:`DeviceAdapter.stage`: a LuxOS
        profile on a sleeping miner). Unhurried: in the readings' slots, waiting while
        commands are in flight, one try, and unreachable devices skipped. An Outcome for
        each device that staged something or failed; none for those with nothing to stage.
        """

        async def one(device_id: str, req: ModeRequest) -> Outcome | None:
            dev = self.by_id.get(device_id)
            st = self.status.get(device_id)
            if dev is None or st is None or not st.connected:
                return None
            t0 = time.perf_counter()
            async with self._locks[device_id]:
                result, err, n = await self._run(dev, "stage", req, 1)
            if err is not None:
                return Outcome(device_id, req, False, n, time.perf_counter() - t0, error=err)
            if isinstance(result, Applied):
                return Outcome(device_id, req, True, n, time.perf_counter() - t0, result)
            return None

        done = await asyncio.gather(*(one(i, r) for i, r in requests.items()))
        return [o for o in done if o is not None]

    async def confirm(
        self, outcomes: Iterable[Outcome], timeout_s: float, poll_s: float = 0.1
    ) -> dict[str, float | None]:
        """Read back until each applied mode shows; seconds to confirm, or None past timeout."""
        t0 = time.perf_counter()
        pending = {o.device_id: o.applied for o in outcomes if o.ok and o.applied is not None}
        done: dict[str, float | None] = {}
        while pending:
            readings = await self.read_all(list(pending))
            now = time.perf_counter() - t0
            for device_id, t in readings.items():
                applied = pending[device_id]
                assert applied is not None
                if self.by_id[device_id].confirms(applied, t):
                    done[device_id] = now
                    del pending[device_id]
            if not pending or now >= timeout_s:
                break
            await asyncio.sleep(poll_s)
        for device_id in pending:
            done[device_id] = None
            self._health.not_seen(self.status[device_id], timeout_s)
        return done

    async def _read_one(self, device_id: str) -> None:
        """A read-back's reading: through the same path as a sweep's (which settles the
        device's command when it shows it); a device between probes is not read."""
        dev, st = self.by_id[device_id], self.status[device_id]
        if not st.probe_waits(time.monotonic()):
            await self._run(dev, "read", None, self._health.attempts(st))

    async def close(self) -> None:
        await self.upkeep.stop()
        await self._read_backs.stop()
        for dev in self.adapters:
            try:
                await dev.close()
            except Exception:
                log.exception("closing %s", dev.device_id)
