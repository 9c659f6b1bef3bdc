"""The daemon's grid events in memory: those in force or to come, indexed for its hot paths.

The store is the record; this is its mirror for decisions. Two things make it more than a
dict:

- ended events leave it (checked when the earliest end passes), so that a daemon that
  takes a price signal every five minutes for a year does not filter a year of them on
  every scrape and every curtail;
- caps (curtail and alert events) are kept apart, so that the fast path and ``/metrics``
  look at the few events that can cap the site, not at thousands of pending prices;
- notices (OpenADR payloads received but not acted on) are kept apart too, for status.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from models.signals import EventType, GridEvent

CAP_TYPES = (EventType.CURTAIL, EventType.ALERT)


class EventBook:
    def __init__(self, events: Iterable[GridEvent] = ()) -> None:
        self._all: dict[str, GridEvent] = {}
        self._caps: dict[str, GridEvent] = {}
        self._notices: dict[str, GridEvent] = {}
        self._ends: dict[str, float] = {}
        self._next_end = math.inf
        for ev in events:
            self.put(ev)

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._all

    def put(self, ev: GridEvent) -> None:
        """Add an event, or replace the one with its id (an update)."""
        self.drop(ev.id)
        end = ev.end_utc.timestamp()
        self._all[ev.id] = ev
        self._ends[ev.id] = end
        if ev.type in CAP_TYPES:
            self._caps[ev.id] = ev
        elif ev.type is EventType.NOTICE:
            self._notices[ev.id] = ev
        self._next_end = min(self._next_end, end)

    def drop(self, event_id: str) -> None:
        if self._all.pop(event_id, None) is not None:
            self._caps.pop(event_id, None)
            self._notices.pop(event_id, None)
            del self._ends[event_id]

    def drop_prefix(self, prefix: str) -> None:
        for k in [k for k in self._all if k.startswith(prefix)]:
            self.drop(k)

    def _prune(self, now: float) -> None:
        if now < self._next_end:
            return
        for k in [k for k, end in self._ends.items() if end <= now]:
            self.drop(k)
        self._next_end = min(self._ends.values(), default=math.inf)

    def live(self, now: float) -> list[GridEvent]:
        """Events that have not ended at ``now`` (in force or to come)."""
        self._prune(now)
        return list(self._all.values())

    def caps_in_force(self, now: float) -> list[GridEvent]:
        """Curtail and alert events in force at ``now``."""
        self._prune(now)
        return [e for e in self._caps.values() if e.start_utc.timestamp() <= now]

    def not_acted(self, now: float, limit: int = 50) -> dict[str, Any]:
        """Notices not ended at ``now`` (soonest first, at most ``limit``) and their count:
        what was received and is not acted on, with the reason."""
        self._prune(now)
        live = sorted(self._notices.values(), key=lambda e: (e.start_utc, e.id))
        shown = [e.model_dump(mode="json", exclude_none=True) for e in live[:limit]]
        return {"count": len(live), "notices": shown}
