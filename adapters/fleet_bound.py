"""The fleet's last-resort bound on each adapter call (``Fleet.op_timeout_s``).

An adapter has its own timeouts; this bound is for the call that hangs anyway (an event loop
far behind, a device that took the request and went quiet). It cancels the call's task as
:func:`asyncio.timeout` would, and the fleet reports a :class:`adapters.base.DeviceTimeout`.

Not :func:`asyncio.timeout`: that builds a ``Timeout`` and a timer (a heap push, then a
cancel) for every call, about 7 us of CPU each, a fifth of the fleet's own work per command
in memory. Here the calls whose bounds end within the same grain (a thousandth of the
bound: 10 ms of 10 s) share one timer, so a burst of 256 commands started in one turn of
the loop arms one or a few; a call's bound never ends early, and at most a grain late.
"""

from __future__ import annotations

import asyncio
import math

#: A call's bound ends at most this share of the bound late (never early).
GRAIN = 1e-3


class CallBound:
    """The calls in flight by when their bound ends, and the tasks it cancelled."""

    __slots__ = ("_buckets", "_expired", "_loop")

    def __init__(self) -> None:
        #: deadline (loop time, rounded up to the grain) -> {task: its cancel requests then}
        self._buckets: dict[float, dict[asyncio.Task[object], int]] = {}
        self._expired: dict[asyncio.Task[object], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self, bound_s: float) -> tuple[dict[asyncio.Task[object], int], asyncio.Task[object]]:
        """The calling task's call starts now, bound to ``bound_s``; hand the result to
        :meth:`leave` when it ends, however it ends."""
        task: asyncio.Task[object] | None = asyncio.current_task()
        assert task is not None, "an adapter call outside a task"
        loop = task.get_loop()
        if loop is not self._loop:  # a fleet used again under a new event loop
            self._buckets, self._expired, self._loop = {}, {}, loop
        at = loop.time() + bound_s
        if 0.0 < bound_s < math.inf:  # a bound of 0 ends at once, an infinite one never
            grain_s = bound_s * GRAIN
            at = math.ceil(at / grain_s) * grain_s
        bucket = self._buckets.get(at)
        if bucket is None:
            bucket = self._buckets[at] = {}
            loop.call_at(at, self._expire, at)
        bucket[task] = task.cancelling()
        return bucket, task

    def _expire(self, at: float) -> None:
        for task, cancelling in self._buckets.pop(at, {}).items():
            if not task.done():
                self._expired[task] = cancelling
                task.cancel()

    def leave(self, token: tuple[dict[asyncio.Task[object], int], asyncio.Task[object]]) -> bool:
        """The call ended: True when its bound cancelled it and nothing else asked its task
        to cancel meanwhile (its CancelledError is then the bound's, a timeout)."""
        bucket, task = token
        bucket.pop(task, None)
        cancelling = self._expired.pop(task, None)
        # as asyncio.timeout: the bound's own cancel request withdrawn, a caller's kept
        return cancelling is not None and task.uncancel() <= cancelling
