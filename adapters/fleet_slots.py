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
import contextlib
from collections.abc import Iterator

from adapters.gc_hold import CollectorHold


class Slots:
    def __init__(
        self, concurrency: int, read_slots: int, read_yield_max_s: float, gc_hold_max_s: float
    ) -> None:
        self.read_slots = read_slots
        self.read_yield_max_s = read_yield_max_s
        reads = asyncio.Semaphore(read_slots)
        #: by operation: "read" and "stage" share the readings' slots
        self.by_op = {"read": reads, "stage": reads, "apply": asyncio.Semaphore(concurrency)}
        self.controls = 0  # control calls (batches) in flight
        self._idle = asyncio.Event()
        self._idle.set()
        self.gc = CollectorHold(gc_hold_max_s)

    async def yield_to_controls(self) -> None:
        """A reading about to be sent waits for the control calls in flight to end, at
        most ``read_yield_max_s``."""
        try:
            async with asyncio.timeout(self.read_yield_max_s):
                await self._idle.wait()
        except TimeoutError:
            pass  # a long batch (dead devices, retries) must not starve telemetry

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
