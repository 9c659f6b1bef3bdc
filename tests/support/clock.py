"""A clock a test moves by hand (the daemon's ``Clock``): decisions that depend on time
(a silent feed, the ramp limit, a plan that no longer covers now) are tested without
waiting."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start_s: float = 1_786_363_200.0) -> None:  # 2026-08-10T12:00Z
        self.now_s = start_s
        self.mono_s = 1000.0

    def time(self) -> float:
        return self.now_s

    def monotonic(self) -> float:
        return self.mono_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        self.mono_s += seconds


class WallClock(FakeClock):
    """The real clock, where a FakeClock is expected: for a daemon in this process that is
    sent signals timed and signed by the wall clock (tests/support/serve.py)."""

    def time(self) -> float:
        import time

        return time.time()

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def advance(self, seconds: float) -> None:
        raise TypeError("the wall clock is not moved by hand")
