"""A fleet's read-back: accepted commands waiting for a reading that shows them.

An accepted command is not yet done: it waits in ``pending`` until a reading sent after it
shows the mode (an :class:`Outcome` ``confirmed``), or until the device's confirmation
deadline passes (``unconfirmed``: the adapter forgets what it believed sent, and the fleet
sends it again, :meth:`adapters.fleet.Fleet.resend_unconfirmed`), or until a newer command
to the device is accepted (``superseded``, naming the newer one, which is read back in its
place: no reading showed the older, and the device did not fail to follow it either).

Each accepted command is also read back on its own (``due``): the device is read
``readback_after_s`` after the command (its firmware family's typical time to show a
change, ``models.firmware``), and again at doubling intervals while it does not show it,
the last read at its deadline. The telemetry sweep confirms too, but it reaches a device
only in its turn: 16-22 s after a curtail at 7,500 miners, and at 30,000 no sweep ended
within the 60 s deadline, so that commands went unconfirmed never read since. The fleet
makes these reads (:meth:`adapters.fleet.Fleet._read_back`) in the readings' slots.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from adapters.base import (
    Applied,
    DeviceAdapter,
    Health,
    ModeRequest,
    NotConfirmed,
    Telemetry,
)
from adapters.fleet_health import HealthBook
from adapters.outcomes import DeviceStatus, Outcome, OutcomeKind, Pending

log = logging.getLogger("gridsched.fleet")

#: The shortest wait between two read-backs of one device (a clock that does not move, as
#: a test's, must not make them a busy loop).
MIN_GAP_S = 0.05
#: How far past its deadline a device's last read-back is made, so that it finds the
#: deadline passed and gives the verdict.
PAST_DEADLINE_S = 0.05

#: A read-back to make: (loop time due, sequence, device, the command it is for, seconds
#: since the command when it was scheduled).
Due = tuple[float, int, str, Pending, float]


class ReadBack:
    """The commands of a fleet's devices waiting for a read-back, and those it never
    showed; each verdict is handed to ``emit`` and set in the device's health."""

    def __init__(
        self,
        by_id: Mapping[str, DeviceAdapter],
        status: Mapping[str, DeviceStatus],
        health: HealthBook,
        emit: Callable[[Outcome], None],
    ) -> None:
        self.by_id = by_id
        self.status = status
        self.health = health
        self.emit = emit
        #: Accepted commands not yet seen in effect, by device.
        self.pending: dict[str, Pending] = {}
        #: Commands whose read-back never showed them, by device, until sent again.
        self.unconfirmed: dict[str, ModeRequest] = {}
        #: Read-backs to make, soonest first (loop time).
        self.due: list[Due] = []
        self._seq = 0

    def waiting(self, device_id: str) -> bool:
        """Whether a command of the device's waits for its read-back or was never seen."""
        return device_id in self.unconfirmed or device_id in self.pending

    def accepted(self, out: Outcome, call_s: float | None = None) -> None:
        """Wait for a reading that shows an accepted command; it supersedes any earlier
        one, unconfirmed or pending (health stays unconfirmed until a read-back shows it).
        ``call_s``: how long the device took to answer it, when ``out.latency_s`` also
        counts a wait for a slot before it went out; it is timed from its going out."""
        dev = self.by_id[out.device_id]
        sent = out.at - (out.latency_s if call_s is None else call_s)
        older = self.pending.get(out.device_id)
        p = self.pending[out.device_id] = Pending(out, sent, sent + dev.confirm_deadline_s())
        self.unconfirmed.pop(out.device_id, None)
        if older is not None:
            self._superseded(older, out)
        # the one bound on the adapter's figure: never past the command's deadline
        after_s = max(MIN_GAP_S, min(dev.readback_after_s(), p.deadline - p.sent_at))
        # timed from the device's answer (on the loop's clock): a command that queued behind
        # a large batch reached the device only then, and read at once it would not show yet
        self._schedule(out.device_id, p, time.monotonic() + after_s, after_s)

    def _superseded(self, older: Pending, newer: Outcome) -> None:
        """The verdict on a command still waiting when ``newer`` came: superseded, its note
        naming the newer command (its own note kept before it)."""
        applied = older.outcome.applied
        assert applied is not None
        why = f"superseded by {newer.request.describe()} before a read-back showed it"
        note = f"{applied.note}; {why}" if applied.note else why
        self.emit(
            Outcome(
                newer.device_id,
                older.outcome.request,
                True,
                0,
                max(0.0, newer.at - older.sent_at),
                Applied(applied.request, applied.target_w, note),
                at=newer.at,
                kind=OutcomeKind.SUPERSEDED,
            )
        )

    def _schedule(self, device_id: str, p: Pending, at: float, since_s: float) -> None:
        self._seq += 1
        heapq.heappush(self.due, (at, self._seq, device_id, p, since_s))

    def next_due(self) -> float | None:
        """When the next read-back is due (monotonic time), or None when none is."""
        while self.due and self.pending.get(self.due[0][2]) is not self.due[0][3]:
            heapq.heappop(self.due)  # settled by a sweep, or superseded by a later command
        return self.due[0][0] if self.due else None

    def take_due(self, mono_now: float) -> list[Due]:
        """The read-backs due by ``mono_now`` whose command still waits."""
        out: list[Due] = []
        while self.due and self.due[0][0] <= mono_now:
            d = heapq.heappop(self.due)
            if self.pending.get(d[2]) is d[3]:
                out.append(d)
        return out

    def still_waiting(self, d: Due) -> bool:
        return self.pending.get(d[2]) is d[3]

    def read_back(self, d: Due, now: float) -> None:
        """After a read-back of ``d``'s device (its reading settled the command if it showed
        it): past the deadline, the verdict from what was read last; else read it again
        after as long again as it has waited (the last read just past the deadline)."""
        device_id, p, since_s = d[2], d[3], d[4]
        if self.pending.get(device_id) is not p:
            return
        if now >= p.deadline:
            self.settle(device_id, self.status[device_id].telemetry, now)
            return
        wait_s = max(MIN_GAP_S, min(since_s, p.deadline - now + PAST_DEADLINE_S))
        self._schedule(device_id, p, time.monotonic() + wait_s, since_s + wait_s)

    def settle(self, device_id: str, t: Telemetry | None, now: float) -> None:
        """Confirm a pending command from a reading sent after it, or give up on it once its
        deadline has passed."""
        p = self.pending.get(device_id)
        if p is None:
            return
        applied = p.outcome.applied
        assert applied is not None
        dev = self.by_id[device_id]
        st = self.status[device_id]
        if t is not None and t.at >= p.sent_at and dev.confirms(applied, t):
            del self.pending[device_id]
            self.unconfirmed.pop(device_id, None)
            self.emit(
                Outcome(
                    device_id,
                    p.outcome.request,
                    True,
                    0,
                    max(0.0, t.at - p.sent_at),
                    applied,
                    at=now,
                    kind=OutcomeKind.CONFIRMED,
                )
            )
            if st.health is Health.UNCONFIRMED:
                self.health.ok(st, awaiting=self.waiting(device_id))
            return
        if now < p.deadline:
            return
        del self.pending[device_id]
        self.unconfirmed[device_id] = p.outcome.request
        if t is None:
            seen = "no reading"
        elif t.at < p.sent_at:  # a sweep longer than the deadline: say how old the news is
            seen = f"not read since the command; it last read {t.state}"
        else:
            seen = f"it reads {t.state}"
            try:
                why = dev.not_shown(applied, t)
            except Exception:
                log.exception("adapter %s: not_shown hook raised", device_id)
                why = ""
            seen = f"{seen}: {why}" if why else seen
        exc = NotConfirmed(
            device_id,
            f"accepted {p.outcome.request.describe()}, but the read-back did not show "
            f"{applied.request.describe()} within {p.deadline - p.sent_at:g} s ({seen})",
        )
        try:
            dev.unconfirmed(applied)
        except Exception:
            log.exception("adapter %s: unconfirmed hook raised", device_id)
        if st.health is Health.UNREACHABLE:
            msg = str(exc)  # the worse news stands: it does not answer at all
        else:
            msg = self.health.fail(st, exc)
            st.failures = 0  # it answers; a missed read-back is not a connection failure
        self.emit(
            Outcome(
                device_id,
                p.outcome.request,
                False,
                0,
                now - p.sent_at,
                applied,
                error=msg,
                at=now,
                kind=OutcomeKind.UNCONFIRMED,
            )
        )

    def check_pending(self, now: float | None = None) -> None:
        """Give up on pending commands past their deadline (readings settle the others)."""
        now = time.time() if now is None else now
        for device_id, p in list(self.pending.items()):
            if now >= p.deadline:
                self.settle(device_id, self.status[device_id].telemetry, now)


class ReadBackRunner:
    """Makes a fleet's read-backs when due: a timer task hands the due devices to up to
    ``readers`` reader tasks, each reading one device at a time (``read_one``, the fleet's
    reading path) and then giving its verdict past the deadline or scheduling its next
    read-back. The tasks end when nothing is due, and start again at the next command."""

    def __init__(
        self,
        readback: ReadBack,
        read_one: Callable[[str], Awaitable[None]],
        clock: Callable[[], float],
        readers: int,
    ) -> None:
        self.readback, self.read_one, self.clock, self.readers = readback, read_one, clock, readers
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a read-back was scheduled
        self._queue: collections.deque[Due] = collections.deque()  # due, not yet read
        self._reading: set[asyncio.Task[None]] = set()

    def soon(self) -> None:
        """A read-back was scheduled: the timer wakes (or starts) to make it when due."""
        if self._timer is None or self._timer.done():
            loop = asyncio.get_running_loop()
            self._timer = loop.create_task(self._time(), name="fleet read-back")
        else:
            self._wake.set()

    async def _time(self) -> None:
        rb = self.readback
        while (at := rb.next_due()) is not None:
            wait_s = at - time.monotonic()
            if wait_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                continue
            self._queue.extend(rb.take_due(time.monotonic()))
            loop = asyncio.get_running_loop()
            for _ in range(min(self.readers, len(self._queue)) - len(self._reading)):
                task = loop.create_task(self._read())
                self._reading.add(task)
                task.add_done_callback(self._reading.discard)

    async def _read(self) -> None:
        rb, queue = self.readback, self._queue
        try:
            while queue:
                d = queue.popleft()
                if not rb.still_waiting(d):
                    continue  # a sweep's reading settled it meanwhile
                try:
                    await self.read_one(d[2])
                except Exception:  # the fleet's reading contains the adapter's; a bug
                    log.exception("read-back of %s", d[2])
                rb.read_back(d, self.clock())
                self.soon()  # its next read-back, if any
        finally:
            # no longer a reader as soon as it finds the queue empty, not when its done
            # callback runs: the timer may queue a read-back in between, and would count
            # this task on to read it
            self._reading.discard(asyncio.current_task())

    async def stop(self) -> None:
        tasks = [t for t in (self._timer, *self._reading) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.clear()
