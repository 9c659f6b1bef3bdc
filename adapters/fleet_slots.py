"""Who goes first in a fleet: the slots its calls queue for, and what waits for what.

Readings and commands are bounded separately (``read_concurrency`` and ``concurrency``),
so that a command never waits for a telemetry sweep to free a slot; staging ahead is as
unhurried as a reading and shares the readings' slots. Readings not yet sent wait while
control calls are in flight (up to ``read_yield_max_s``: a long batch of dead devices and
retries must not starve telemetry), so that a curtail has the CPU and the network to
itself, and the garbage collector waits meanwhile too (:mod:`adapters.gc_hold`). The
read-back's readers queue for the readings' slots beside the sweep's
(:class:`adapters.fleet.Fleet`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from types import TracebackType

from adapters.gc_hold import CollectorHold


class FifoSlots:
    """At most ``n`` holders at once, the others served in the order they came; used as
    ``async with slots:``.

    Not :class:`asyncio.Semaphore`: its release (Python 3.11) walks the queue from the head
    past every waiter already woken but not yet run, so when a burst of commands ends in
    one turn of the loop (256 of them at a time in a 7,500-miner curtail) the k-th release
    walks k futures: 950,000 ``Future.done`` calls and about a quarter of the fleet's CPU in
    such a curtail. Here a release hands its slot straight to the first live waiter and
    drops it from the queue, so each costs the same however many are queued."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"slots: {n} is not a valid bound (at least 1)")
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots nobody holds (none while any waiter is queued)."""
        return self._free

    @property
    def waiting(self) -> int:
        """Waiters queued (counting any cancelled one not yet skipped)."""
        return len(self._waiters)

    async def __aenter__(self) -> None:
        # Only free when nobody queues: a release hands its slot to a waiter rather than
        # freeing it, so a newcomer never takes a slot ahead of one already queued.
        if self._free:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot, and cancelled before it ran: pass it on
            # else its future, cancelled, stays queued and a release skips it
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():  # a cancelled waiter's future is done: skipped
                fut.set_result(None)
                return
        self._free += 1


class Slots:
    def __init__(
        self, concurrency: int, read_slots: int, read_yield_max_s: float, gc_hold_max_s: float
    ) -> None:
        self.read_slots = read_slots
        self.read_yield_max_s = read_yield_max_s
        reads = FifoSlots(read_slots)
        #: by operation: "read" and "stage" share the readings' slots
        self.by_op = {"read": reads, "stage": reads, "apply": FifoSlots(concurrency)}
        self.controls = 0  # control calls (batches) in flight
        self._idle = asyncio.Event()
        self._idle.set()
        self.gc = CollectorHold(gc_hold_max_s)

    async def yield_to_controls(self) -> None:
        """A reading about to be sent waits for the control calls in flight to end, at
        most ``read_yield_max_s``.

        Tried and measured, not kept (docs/performance.md, "30,000 miners"): readings
        waiting for as long as the batch was answered made a 30,000-miner curtail take more
        of the daemon's CPU, not less (18.3 s against 14.3 s, paired on the same code)."""
        try:
            async with asyncio.timeout(self.read_yield_max_s):
                await self._idle.wait()
        except TimeoutError:
            pass  # a long batch (dead devices, retries) must not starve telemetry

    async def idle(self) -> None:
        """Until no control call is in flight (upkeep waits for that, however long)."""
        await self._idle.wait()

    @contextlib.contextmanager
    def controlling(self) -> Iterator[None]:
        """Control calls in flight: readings not yet sent wait for them, and the collector
        is held off, until the last of them ends."""
        self.controls += 1
        self._idle.clear()
        if self.controls == 1:
            self.gc.hold()
        try:
            yield
        finally:
            self.controls -= 1
            if not self.controls:
                self._idle.set()
                self.gc.release()
