"""Upkeep a reading found due, done off the sweep's path.

A LuxOS session is renewed ahead of the next command (a ``logoff`` and a ``logon``: two
round trips, where the reading was one), so that a curtail finds a fresh session and needs
no logon of its own. Made inside the reading, the renewals held each sweep until they were
done: at the example site, half of the 7,500 miners renewed in each 15 s sweep, and the
sweep took about 1.5 times as long as its readings. Now a reading only says that its
device wants upkeep (:attr:`adapters.base.DeviceAdapter.upkeep_wanted`) and the fleet runs
:meth:`~adapters.base.DeviceAdapter.upkeep` here, a few devices at a time beside the
readings, and none while commands are in flight: a curtail has the CPU and the network
before any renewal.

Upkeep is deferred only where there is room for it: when the last whole sweep took at most
``ROOM_SHARE`` of the time between the last two sweeps' starts, and the upkeep it asked for
is done. Otherwise the controller's core is all in use (30,000 LuxOS miners on one core:
sweeps back to back, about 30,000 renewals per 30 s beside the readings) and deferred
renewals would come late, after a curtail that arrives meanwhile: its commands would find
their sessions past ``luxos.SESSION_SAFE_S`` and log on first (two or three round trips
instead of one: a 30,000-miner curtail took 20 s of the daemon's CPU instead of 13.5 s, and
29.5 s instead of 13 s at p99, in the run that found it). So such a sweep's readings make
their own upkeep, as before: the sweep takes longer, the sessions stay fresh. The first
whole sweep, with nothing to judge by, does so too.

Upkeep is best effort: an ``upkeep`` that fails (an AdapterError: the miner did not answer,
or refused the logon) is counted in :attr:`Upkeep.failed` and logged once per device until
one succeeds again; what it could not do is done again at its next turn, and a command that
finds its session stale logs on first (never a failed attempt).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from adapters.base import AdapterError, DeviceAdapter
from adapters.faults import in_words, traceback_once
from adapters.fleet_slots import Slots

log = logging.getLogger("gridsched.fleet")

#: Devices kept up at once: a quarter of the daemon's 64 readings in flight, so that a
#: sweep keeps most of the CPU, and enough that the renewals keep up when the controller's
#: core is all in use (30,000 LuxOS miners renew about 15,000 sessions per 15 s sweep).
#: benchmarks/daemon_sweep.py's 2,000 renewals after a sweep took 1.1-1.8 s with 4 at
#: once, 1.0-2.0 s with 16 and 0.7-1.5 s with 32, for the same CPU (load average 3).
UPKEEP_CONCURRENCY = 16
#: Upkeep is deferred while the last whole sweep took at most this share of the time between
#: the last two sweeps' starts (the rest is the room it runs in).
ROOM_SHARE = 0.5


class Upkeep:
    """The devices whose reading found upkeep due, kept up in the order they were read."""

    def __init__(self, slots: Slots, bound_s: float, concurrency: int = UPKEEP_CONCURRENCY) -> None:
        self._slots = slots
        self._bound_s = bound_s
        self._concurrency = concurrency
        self._queue: collections.deque[DeviceAdapter] = collections.deque()
        self._held: set[str] = set()  # queued or running: one upkeep per device at a time
        self._workers: set[asyncio.Task[None]] = set()
        self.done = 0  # upkeeps made, for tests and counters
        self.failed = 0  # upkeeps that raised, for counters
        self._failing: set[str] = set()  # devices whose last upkeep failed: logged once
        #: upkeep queued in the fleet's worker processes, by worker (adapters.fleet_shards)
        self.elsewhere: dict[int, int] = {}
        #: No room for deferred upkeep in this sweep (see the module): readings make their own.
        self.behind = True
        self._began: float | None = None  # the last whole sweep's start (monotonic)
        self._took: float | None = None  # and how long it took
        self.inline = 0  # upkeeps made by the reading that asked, for tests and counters

    @property
    def queued(self) -> int:
        return len(self._queue) + sum(self.elsewhere.values())

    def sweep(self, whole: bool) -> Callable[[], None]:
        """A sweep begins (``whole``: of every device); call what it returns at its end."""
        now = time.monotonic()
        if whole:
            room = False
            if self._began is not None and self._took is not None:
                room = self._took <= ROOM_SHARE * (now - self._began)
            self.behind = bool(self._queue) or not room
            self._began = now
        elif self._queue:
            self.behind = True

        def ended() -> None:
            if whole:
                self._took = time.monotonic() - now

        return ended

    async def wanted(self, dev: DeviceAdapter) -> None:
        """A reading of ``dev`` asked for upkeep: queued, or made now when upkeep is behind."""
        if self.behind:
            self.inline += 1
            await self._one(dev)
        else:
            self.add(dev)

    def add(self, dev: DeviceAdapter) -> None:
        """Keep ``dev`` up soon (once, however many readings asked meanwhile)."""
        if dev.device_id in self._held:
            return
        self._held.add(dev.device_id)
        self._queue.append(dev)
        if len(self._workers) < self._concurrency:
            task = asyncio.get_running_loop().create_task(self._worker())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        slots = self._slots
        while self._queue:
            if slots.controls:  # a command batch first, however long it takes
                await slots.idle()
            if not self._queue:
                return
            dev = self._queue.popleft()
            try:
                await self._one(dev)
            finally:
                self._held.discard(dev.device_id)

    async def _one(self, dev: DeviceAdapter) -> None:
        if not dev.upkeep_wanted:  # made since: a later reading, behind, made its own
            return
        try:
            async with asyncio.timeout(self._bound_s):
                await dev.upkeep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the next reading asks again
            self.failed += 1
            fault = isinstance(exc, AdapterError | TimeoutError)  # else a bug: said each time
            if fault and dev.device_id in self._failing:
                return  # said at its first failure
            if fault:
                self._failing.add(dev.device_id)
            log.warning(
                "%s: upkeep failed: %s (a later reading asks again; a command logs on first)",
                dev.device_id,
                in_words(exc),
                exc_info=traceback_once(exc),
            )
            return
        self.done += 1
        if dev.device_id in self._failing:
            self._failing.discard(dev.device_id)
            log.info("%s: upkeep done again", dev.device_id)

    async def idle(self) -> None:
        """Until every queued upkeep has run (tests and benchmarks; a closing fleet stops it)."""
        while self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel what is queued and running: the fleet is closing."""
        self._queue.clear()
        self._held.clear()
        for task in list(self._workers):
            task.cancel()
        for task in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
