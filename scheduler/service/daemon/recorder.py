"""The daemon's audit trail writer: a record the state file refuses is logged, counted and
shown in /v1/status, never raised, so that the fail-safe, dispatch and the watchdog do not
wait on the disk. (Signals are different: one that cannot be stored is refused with 503,
see :mod:`scheduler.service.daemon.signals`.)"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from adapters.fleet import Outcome
from scheduler.audit.store import Store
from scheduler.service.daemon.counters import EXPECTED_FAULTS, Counters

log = logging.getLogger("gridsched.daemon")


class Recorder:
    def __init__(self, store: Store, counters: Counters) -> None:
        self.store = store
        self.counters = counters
        self.error: str | None = None  # the last record refused, until one lands

    async def audit(self, kind: str, payload: Any, at: float | None = None) -> bool:
        """Append to the audit trail; False when the state file refused it."""
        try:
            await self.store.record(kind, payload, at)
        except Exception as exc:
            self.counters.store_failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self.error:  # once per distinct error, not every poll
                log.error(
                    "audit record %r not written: %s",
                    kind,
                    error,
                    exc_info=None if isinstance(exc, EXPECTED_FAULTS) else exc,
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
