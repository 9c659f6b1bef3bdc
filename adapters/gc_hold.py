"""The garbage collector around a fleet: frozen after set-up, held during control calls."""

from __future__ import annotations

import asyncio
import gc

#: Allocations between young collections once set-up is done (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def freeze_heap() -> None:
    """Move everything alive now out of the garbage collector's reach, once set-up is done,
    and collect the young generation less often.

    A process that drives a fleet holds thousands of long-lived objects (adapters, pyasic's
    miner objects, sockets); every full collection walked them all: with 1,000 miners a
    gen-2 pass took up to 98 ms, inside a curtail's time, and 4.5 ms after the freeze.
    Objects made later are collected as usual, but a sweep of the example site's 9,548
    devices still set off about 385 collections (every 700 allocations, the default); at
    YOUNG_THRESHOLD it set off 6, and three sweeps took 5.1-5.8 s of CPU against 5.8-7.1 s
    in the same run before (2026-12-01). What waits longer to be collected is at most that
    many young objects, a few MB.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # a threshold of 0 turns collection off: left so
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)


class CollectorHold:
    """Holds the cyclic garbage collector off while control calls are in flight, at most
    ``max_s`` at a time (0: never)."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self._release: asyncio.TimerHandle | None = None

    def hold(self) -> None:
        """Keep the cyclic garbage collector out of a batch of control calls.

        1,000 commands allocate enough to trigger about 70 collections (64 young, 6 middle,
        one full of what was made since :func:`freeze_heap`): 12-40 ms of a 120-300 ms
        curtail on the reference machine. Reference counting still frees what the batch
        drops; the few cycles it leaves (tasks, exceptions) wait for the collector, which
        comes back when the last batch ends (:meth:`release`), or after
        ``max_s`` whatever happens, so that a batch stuck on dead devices cannot let
        memory grow for long. A collector the application had turned off stays off.
        """
        if self.max_s > 0 and self._release is None and gc.isenabled():
            gc.disable()
            self._release = asyncio.get_running_loop().call_later(self.max_s, self.release)

    def release(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
            gc.enable()
