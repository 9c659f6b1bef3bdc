"""When the VEN polls the VTN, so that polling alone hands an event on within the period.

An event created at the VTN at time t is in the first listing that starts after t (a
listing that starts before may catch it too, if its page is read after t). With polls
starting every ``interval`` and a poll taking ``took`` (the listing, and handing each new or
changed event to the daemon), the event is handed on by t + interval + took at worst. So the
next poll starts, counted from the start of the last one, the period less the slowest of the
recent polls (with a quarter more for its jitter, and ``SHED_ALLOWANCE_S`` for the daemon's
fast path to command the shed): what the operator sets as ``GRIDSCHED_VTN_POLL_S`` is the
bound from an event's creation to its shed, not the spacing of the listings. OpenADR 3.1.0
``GET /events`` has no "changed since" filter, so every poll lists every event; a VTN slower
than the period is not polled flat out (a tenth of the period between), and ``within_period``
says the bound does not hold then.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

__all__ = ["JITTER", "SHED_ALLOWANCE_S", "PollCadence"]

log = logging.getLogger("scheduler.service.ven")

#: from the daemon taking an event to the fast path's first command (webhook rounds of
#: benchmarks/ven_latency.py: the fast path's own time is tens of ms on a loaded 2-core host)
SHED_ALLOWANCE_S = 0.2
#: a poll may be slower than the slowest of the last few by this factor
JITTER = 1.25
#: polls remembered: a slow one (a VTN's hiccup) shortens the interval for this many polls
KEEP = 8


class PollCadence:
    """The start-to-start interval of polls, from the period and the recent polls' time."""

    def __init__(self, period_s: float, keep: int = KEEP) -> None:
        if period_s <= 0:
            raise ValueError(f"poll period {period_s!r} s: must be > 0")
        self.period_s = period_s
        self._took: deque[float] = deque(maxlen=keep)

    def record(self, took_s: float) -> None:
        """A complete poll took ``took_s`` seconds (failed polls back off instead)."""
        self._took.append(max(0.0, took_s))

    @property
    def last_s(self) -> float | None:
        return self._took[-1] if self._took else None

    @property
    def lead_s(self) -> float:
        """How long before the period is out the next poll starts (0: nothing measured)."""
        if not self._took:
            return 0.0
        return max(self._took) * JITTER + SHED_ALLOWANCE_S

    @property
    def floor_s(self) -> float:
        return self.period_s / 10

    def interval_s(self) -> float:
        """From the start of the last poll to the start of the next."""
        return max(self.period_s - self.lead_s, self.floor_s)

    @property
    def within_period(self) -> bool:
        """Whether polling keeps its bound: the slowest recent poll leaves room for a
        listing to start in time (False: the VTN is too slow for this period)."""
        return self.period_s - self.lead_s >= self.floor_s

    def polled(self, took_s: float, handed: int, known: int) -> dict[str, Any]:
        """Record a complete poll that handed ``handed`` objects on; the VEN's status fields.
        Logged when it brought something (not every quiet poll), and when the period stops
        leaving room for the listing."""
        was = self.within_period if self._took else True
        self.record(took_s)
        if handed:
            log.info("VEN poll: %d object(s) handed on, %d events known; took %.3f s, next "
                     "poll %.3f s after this one began", handed, known, took_s,
                     self.interval_s())  # fmt: skip
        if was and not self.within_period:
            log.warning("VEN: a poll took %.2f s; the period %g s leaves no room for the "
                        "listing: events may wait longer than the period", took_s,
                        self.period_s)  # fmt: skip
        return {
            "poll_took_s": round(took_s, 4),
            "poll_interval_s": round(self.interval_s(), 4),
            "poll_within_period": self.within_period,
        }
