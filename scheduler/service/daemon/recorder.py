"""The daemon's audit trail writer: a record the state file refuses is logged, counted and
shown in /v1/status, never raised, so that the fail-safe, dispatch and the watchdog do not
wait on the disk. (Signals are different: one that cannot be stored is refused with 503,
see :mod:`scheduler.service.daemon.signals`.)

Read-back verdicts are recorded as they arrive, batched: the first of a batch starts a
write ``VERDICT_BATCH_S`` later of every verdict come by then (a poll's end and the
daemon's close write what is left at once). At site scale a sweep outlasts the
confirmation deadline (30,000 miners: no sweep ended in 452 s), so a verdict held until a
poll ends reached the audit trail minutes late, or never when the daemon stopped first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from adapters.faults import in_words, traceback_once
from adapters.fleet import Outcome, OutcomeKind
from scheduler.audit.store import Store
from scheduler.service.daemon.counters import Counters

log = logging.getLogger("gridsched.daemon")

#: How long the first verdict of a batch waits for others: one record per batch rather than
#: one per device (a curtail of 7,500 miners is read back within seconds).
VERDICT_BATCH_S = 0.25
#: Each read-back verdict's name in the counters (``/v1/status`` ``read_back``, /metrics'
#: ``gridsched_readback_verdicts_total{verdict}``).
_COUNTED = {
    OutcomeKind.CONFIRMED: "confirmed",
    OutcomeKind.UNCONFIRMED: "unconfirmed",
    OutcomeKind.SUPERSEDED: "superseded",
}


class Recorder:
    def __init__(self, store: Store, counters: Counters) -> None:
        self.store = store
        self.counters = counters
        self.error: str | None = None  # the last record refused, until one lands
        self.verdicts: list[Outcome] = []  # read-back verdicts not yet written
        self._writing: asyncio.Task[None] | None = None
        self._in_write = False  # the batch is being written (not waiting for more)

    async def audit(self, kind: str, payload: Any, at: float | None = None) -> bool:
        """Append to the audit trail; False when the state file refused it."""
        try:
            await self.store.record(kind, payload, at)
        except Exception as exc:
            self.counters.store_failures += 1
            # what the store refused, in words; a bug keeps its name, its traceback once
            error = in_words(exc)
            if error != self.error:  # once per distinct error, not every poll
                log.error(
                    "audit record %r not written: %s", kind, error, exc_info=traceback_once(exc)
                )
            self.error = error
            return False
        if self.error is not None:
            log.warning("audit records are written again (after: %s)", self.error)
            self.error = None
        return True

    async def outcomes(
        self,
        why: str,
        outcomes: Iterable[Outcome],
        extra: dict[str, Any] | None = None,
        count: bool = True,
    ) -> None:
        """Record each outcome (a ``commands`` record) and, with ``count``, count the
        commands (read-back verdicts are not commands)."""
        rows = []
        for o in outcomes:
            if count:
                self.counters.commands["ok" if o.ok else "failed"] += 1
            rows.append(
                {
                    "device": o.device_id,
                    "request": o.request.describe(),
                    "kind": o.kind.value,
                    "ok": o.ok,
                    "applied_w": o.applied.target_w if o.applied else None,
                    "note": o.applied.note if o.applied and o.applied.note else None,
                    "error": o.error,
                    "attempts": o.attempts,
                    "latency_s": round(o.latency_s, 4),
                    "at": o.at,
                }
            )
        if rows:
            await self.audit("commands", {"why": why, **(extra or {}), "outcomes": rows})

    async def dwell(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """Store when devices slept or woke (:mod:`.dwell`); a write the state file refuses
        counts as a refused record and is logged once per distinct error, never raised."""
        if not changes:
            return
        try:
            await self.store.put_device_dwell(changes)
        except Exception as exc:
            self.counters.store_failures += 1
            error = in_words(exc)
            if error != self.error:
                log.error("device dwell times not written: %s", error)
            self.error = error

    def verdict(self, out: Outcome) -> None:
        """A read-back verdict (the fleet's ``on_outcome`` hook, through
        :meth:`DeviceModes.read_back`): counted at once, written within ``VERDICT_BATCH_S``
        and the write's time."""
        key = _COUNTED.get(out.kind, "unconfirmed")
        self.counters.readbacks[key] = self.counters.readbacks.get(key, 0) + 1
        self.verdicts.append(out)
        if self._writing is None or self._writing.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a caller outside the daemon's): the next flush
                return
            self._writing = loop.create_task(self._write_soon(), name="read-back verdicts")

    async def _write_soon(self) -> None:
        await asyncio.sleep(VERDICT_BATCH_S)
        self._in_write = True
        try:
            while self.verdicts:  # those come while the last batch was written go next
                await self._write()
        finally:
            self._in_write = False

    async def _write(self) -> None:
        batch, self.verdicts = self.verdicts, []
        await self.outcomes("read-back", batch, count=False)

    async def flush_verdicts(self) -> None:
        """Write the verdicts not yet written now (a poll's end, the daemon's close): a
        batch waiting is written at once, one being written first finishes (the trail
        keeps their order)."""
        task = self._writing
        if task is not None and not task.done() and task is not asyncio.current_task():
            if not self._in_write:
                task.cancel()  # still waiting for its batch: this write takes it
                self._writing = None  # a verdict from now on starts a batch of its own
            else:
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # the caller was cancelled, not the write
        if self.verdicts:
            await self._write()
