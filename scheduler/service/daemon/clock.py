"""The daemon's clock, injected: wall time for what it decides and records, a monotonic
clock for intervals. Tests pass a clock they move by hand (``tests/support/clock.py``), so
that the fail-safe, the ramp limit and plan coverage are decided without waiting."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds now."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals only)."""
        ...


class SystemClock:
    """The host's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
