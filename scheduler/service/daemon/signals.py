"""Grid signals in the daemon: stored durably before they are answered, kept in an event
book, and turned into the import cap in force. A cap never waits for a slow disk: past
``SHED_WHILE_WRITING_AFTER_S`` it counts as in force while its write goes on."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from adapters.faults import file_refused, in_words, is_bug, named, traceback_once
from adapters.neterrors import describe
from models.errors import ConfigError
from models.signals import STORED, EventType, GridEvent, level_problems
from models.site import SiteConfig
from scheduler.audit.store import Store
from scheduler.planner.class_caps import class_caps_at
from scheduler.planner.event_caps import event_caps
from scheduler.planner.inputs import protected_load_kw
from scheduler.planner.timegrid import TimeGrid
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.counters import Counters
from scheduler.service.daemon.failsafe import FailSafe
from scheduler.service.eventbook import EventBook

log = logging.getLogger("gridsched.daemon")
#: A cap signal whose write takes longer than this is shed while it is being written.
SHED_WHILE_WRITING_AFTER_S = 0.02


class Signals:
    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        store: Store,
        counters: Counters,
        failsafe: FailSafe,
        shed: Callable[[str], None],
        replan: Callable[[str, float], None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.counters = counters
        self.failsafe = failsafe
        self.shed = shed  # asks the fast path to run (coalesced)
        self.replan = replan  # asks for a re-plan after a delay (coalesced)
        self._book: EventBook | None = None  # loaded from the store on first use
        self.pending: dict[str, GridEvent] = {}  # caps being written, already enforced
        self.cap_error: str | None = None  # why the cap in force is a fall-back
        self.class_cap_error: str | None = None  # why caps on classes are not enforced
        self._cap_ok_kw: float | None = None  # the last cap computed without error
        self.generation = 0  # counts signals stored
        #: what an alert with no figure caps import at without a DR level 3, as the plan
        #: has it: base load and committed inference (the fast path counted the base alone)
        self.protected_kw = protected_load_kw(config)

    def book(self) -> EventBook:
        if self._book is None:
            self._book = EventBook(self._load(self.clock.time()))
        return self._book

    def _load(self, now: float) -> list[GridEvent]:
        """The store's events in force or to come (on start; then kept in step by accept)."""
        out: list[GridEvent] = []
        for raw in self.store.signals(include_ended_after=now):
            body = {k: v for k, v in raw.items() if not k.startswith("_")}
            try:
                out.append(GridEvent.model_validate(body, context=STORED))  # as it acted
            except ValueError as exc:  # the stored data's fault: in words, one line
                why = (
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                    if isinstance(exc, ValidationError)
                    else describe(exc)
                )
                log.error("stored event %s no longer validates: %s", raw.get("id"), why)
        return out

    def _remember(self, events: list[GridEvent]) -> None:
        """Mirror what add_signals did in the store (cancels, prefix cancels, upserts)."""
        book = self.book()
        for ev in events:
            if ev.type is EventType.CANCEL:
                if ev.id.endswith(":*"):
                    book.drop_prefix(ev.id[:-1])
                else:
                    book.drop(ev.id)
            else:
                book.put(ev)

    def active_events(self, now: float) -> list[GridEvent]:
        """Stored events that have not ended or been cancelled, plus any fail-safe cap."""
        return self._with_pending(self.book().live(now), now, started=False)

    def for_plan(
        self, events: list[GridEvent], levels: dict[str, float]
    ) -> tuple[list[GridEvent], list[str]]:
        """The events a plan is made over, and its notes: a cap at a level the site has no
        cap for (an OpenADR SIMPLE level polled or heard by MQTT, which no answer could
        refuse) is planned at the fail-safe cap, as the fast path counts it (``cap_now``),
        instead of failing every re-plan while it is in force."""
        out: list[GridEvent] = []
        notes: list[str] = []
        for ev in events:
            problems = level_problems([ev], levels)
            if not problems:
                out.append(ev)
                continue
            cap_kw = self.failsafe.cap_kw()
            out.append(ev.model_copy(update={"level": None, "limit_kw": cap_kw}))
            notes.append(f"{problems[0]}; planned at the fail-safe cap, {cap_kw:g} kW")
        return out, notes

    def _with_pending(self, events: list[GridEvent], now: float, started: bool) -> list[GridEvent]:
        """The book's events with the caps still being written in place of theirs (not ended
        at ``now``; with ``started``, in force at it), plus the fail-safe cap while a feed
        is silent."""
        if self.pending:
            events = [e for e in events if e.id not in self.pending]
            events += [
                e
                for e in self.pending.values()
                if now < e.end_utc.timestamp() and (not started or e.start_utc.timestamp() <= now)
            ]
        if self.failsafe.reason(now) is not None:
            events.append(
                GridEvent(
                    id="failsafe",
                    type=EventType.CURTAIL,
                    start=datetime.fromtimestamp(now - 1, UTC),
                    limit_kw=self.failsafe.cap_kw(),
                    source="failsafe",
                )
            )
        return events

    async def accept(
        self, events: list[GridEvent], source: str, webhook_id: str | None, raw: str
    ) -> tuple[bool, list[str]]:
        """Store events durably (the caller answers 2xx after this), then act on them.

        A write normally lands in a few ms: the answer goes out, then the fast path sheds.
        If the disk is slower than ``SHED_WHILE_WRITING_AFTER_S``, a cap does not wait for
        it (shedding is the safe direction): it counts as in force and the fast path starts
        while the write goes on; if the write then fails, the event is dropped again and a
        re-plan restores what was shed. A write that lands is remembered even when the
        caller has gone away meanwhile.
        """
        now = self.clock.time()
        self.failsafe.last_signal_at = now
        bodies = []
        keep_until = now + 600.0
        for ev in events:
            body = ev.model_dump(mode="json", exclude_none=True)
            if "end" in body:
                body.pop("duration", None)  # resolved into end; both would not validate again
            end = ev.end_utc.timestamp() if ev.type is not EventType.CANCEL else now
            body["_ends_at"] = min(end, 4e11)
            keep_until = max(keep_until, min(end, now + 400 * 86400))
            bodies.append(body)

        async def write() -> tuple[bool, list[str]]:
            stored, ids = await self.store.add_signals(bodies, source, webhook_id, raw, keep_until)
            if stored:
                try:
                    self._remember(events)
                except Exception as exc:  # a bug: the store has the signal, and it is answered
                    # stored; the book is read again from the store rather than left without it
                    log.error(
                        "event book not updated, read again from the state file: %s",
                        in_words(exc),
                        exc_info=traceback_once(exc),
                    )
                    self._book = None
                self.generation += 1
            return stored, ids

        writing = asyncio.ensure_future(write())
        writing.add_done_callback(_log_write_failure)
        caps = {e.id: e for e in events if e.type in (EventType.CURTAIL, EventType.ALERT)}
        early = False
        if caps:
            done, _ = await asyncio.wait({writing}, timeout=SHED_WHILE_WRITING_AFTER_S)
            if not done:
                early = True
                self.pending.update(caps)
                self.shed(f"signal {', '.join(caps)[:120]} (being written)")
        try:
            stored, ids = await asyncio.shield(writing)
        except asyncio.CancelledError:
            raise  # the write goes on and is remembered when it lands
        except Exception:
            if early:  # not accepted: the plan decides again without it
                self.replan("a signal could not be stored", 0.0)
            raise
        finally:
            if early:
                for key, ev in caps.items():
                    if self.pending.get(key) is ev:
                        del self.pending[key]
        self.counters.signal(source, "accepted" if stored else "duplicate")
        if stored:
            # a cancel can bring a lower cap of another event back into force
            if (caps and not early) or any(ev.type is EventType.CANCEL for ev in events):
                self.shed(f"signal {', '.join(ids)[:120]}")
            self.replan("signal", 0.5)
        return stored, ids

    def cap_now(self, now: float) -> tuple[float, list[GridEvent]]:
        """The import cap in force at ``now`` and the events that make it. An event whose
        cap cannot be computed counts at the most restrictive cap that can be justified
        (the fail-safe cap, or the last cap computed lower), never as no cap at all."""
        events = self._with_pending(self.book().caps_in_force(now), now, started=True)
        grid = TimeGrid(
            np.array([int(now)], dtype=np.int64), np.array([int(now) + 1], dtype=np.int64)
        )
        error: str | None = None
        try:
            cap_kw = float(event_caps(self.config, grid, events, self.protected_kw)[0][0])
        except Exception:
            cap_kw, error = self._fallback_cap(grid, events)
        cap_kw = min(cap_kw, self.config.site.interconnect_kw)
        if error != self.cap_error:  # once per change: cap_now runs at every scrape
            if error is not None:
                log.error("cap computation failed; enforcing %.1f kW: %s", cap_kw, error)
            else:
                log.warning("cap computation works again: %.1f kW", cap_kw)
            self.cap_error = error
        if error is None:
            self._cap_ok_kw = cap_kw
        return cap_kw, events

    def _fallback_cap(self, grid: TimeGrid, events: list[GridEvent]) -> tuple[float, str]:
        """Each event's cap on its own; one that raises counts at the fail-safe cap or the
        last good cap, whichever is lower."""
        last_kw = math.inf if self._cap_ok_kw is None else self._cap_ok_kw  # 0 kW is a cap
        fallback_kw = min(self.failsafe.cap_kw(), last_kw)
        cap_kw = math.inf
        problems = []
        for ev in events:
            try:
                cap, _ = event_caps(self.config, grid, [ev], self.protected_kw)
                cap_kw = min(cap_kw, float(cap[0]))
            except Exception as exc:
                # a ConfigError spans lines, and its problems name the event already
                text = exc.one_line() if isinstance(exc, ConfigError) else in_words(exc)
                text = " ".join(text.split())
                problems.append(text if ev.id in text else f"event {ev.id!r}: {text}")
                if (first := traceback_once(exc)) is not None:  # a bug: where, once
                    log.error("cap of event %r: a bug in gridsched", ev.id, exc_info=first)
                cap_kw = min(cap_kw, fallback_kw)
        if not problems:  # the events together fail where each alone does not
            problems.append("the events in force together")
            cap_kw = min(cap_kw, fallback_kw)
        why = "; ".join(problems)
        return cap_kw, f"{why}: enforcing {cap_kw:g} kW (fail-safe or last good cap)"

    def class_caps(self, now: float) -> dict[tuple[str, ...], float]:
        """Caps in force at ``now`` on part of the site (events naming device classes):
        {classes: kW at the meter}. When they cannot be computed (the intake refuses unknown
        classes, so this is a bug, not a signal) none is enforced, the site cap holds, and
        ``class_cap_error`` says why (in /v1/status; logged once per change)."""
        events = self._with_pending(self.book().caps_in_force(now), now, started=True)
        caps: dict[tuple[str, ...], float] = {}
        error: str | None = None
        if any(e.classes for e in events) or any(e.classes for e in self.config.events):
            try:
                caps = class_caps_at(self.config, events, datetime.fromtimestamp(now, UTC))
            except Exception as exc:
                error = " ".join(in_words(exc).split())
                if (first := traceback_once(exc)) is not None:  # a bug: where, once
                    log.error("class caps: a bug in gridsched", exc_info=first)
        if error != self.class_cap_error:
            if error is not None:
                log.error("class caps could not be computed; the site cap holds: %s", error)
            else:
                log.warning("class caps are computed again")
            self.class_cap_error = error
        return caps

    def not_acted(self, now: float) -> dict[str, Any]:
        """OpenADR payloads received and not acted on, with the reason (notices)."""
        return self.book().not_acted(now)


def write_failure(exc: BaseException) -> str:
    """Why a signal was not stored, in words: the state file refusing (full, read-only,
    locked, corrupt) with its reason; a bug in gridsched by its name; another fault as
    it says itself (:func:`adapters.faults.is_bug`)."""
    if file_refused(exc):
        return f"the state file refused it: {describe(exc)}"
    if is_bug(exc):
        return f"a bug in gridsched: {named(exc)}"
    return describe(exc)


def _log_write_failure(task: asyncio.Future[Any]) -> None:
    """Log a failed signal write here too: its sender may have gone before it failed."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("signal write failed: %s", write_failure(exc), exc_info=traceback_once(exc))
