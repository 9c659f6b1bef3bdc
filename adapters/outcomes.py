"""The fleet's records: retry policy, each device's status, and control-call outcomes.

Kept apart from :mod:`adapters.fleet` (which re-exports them) so that the fleet's logic
reads on its own.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import StrEnum

from adapters.base import Applied, Health, ModeRequest, Telemetry


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the wait before try n+1 is uniform in [0, base*2^n] (capped)."""

    attempts: int = 3
    base_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_s, self.base_s * (2**attempt)))


@dataclass
class DeviceStatus:
    device_id: str
    group: str
    health: Health = Health.UNREACHABLE
    connected: bool = False
    failures: int = 0  # consecutive
    last_error: str | None = None
    next_probe: float = 0.0
    telemetry: Telemetry | None = None
    seen: bool = False  # health set at least once (the first is not a change worth a line)

    def probe_waits(self, now: float) -> bool:
        """Unreachable and its backoff not over at ``now`` (monotonic): not read until then,
        by a sweep or a read-back."""
        return self.health is Health.UNREACHABLE and now < self.next_probe


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"  # the device took the command; not yet seen in effect
    CONFIRMED = "confirmed"  # a reading sent after the command shows it: done
    UNCONFIRMED = "unconfirmed"  # accepted, and the read-back did not show it in time
    #: accepted, and a newer command to the device was accepted before a read-back showed
    #: this one: its wait ends (the newer one is read back); neither done nor not followed
    SUPERSEDED = "superseded"
    REJECTED = "rejected"  # the device answered no
    FAILED = "failed"  # no usable answer (unreachable, timeout, unparseable)


@dataclass(frozen=True, init=False)
class Outcome:
    """What happened to one control call: ``ok`` with what was applied, or the error.

    ``kind`` says which: a command gets one ``accepted``, ``rejected`` or ``failed``
    Outcome when it is sent and, once accepted, one ``confirmed`` or ``unconfirmed`` when
    read back, or ``superseded`` (``ok``, its ``applied.note`` naming the newer command)
    when a newer command is accepted first (``latency_s`` then counts from the command's
    going out to the device, after any wait for a slot, to the verdict).
    """

    device_id: str
    request: ModeRequest
    ok: bool
    attempts: int
    latency_s: float
    applied: Applied | None = None
    error: str | None = None
    at: float = field(default_factory=time.time)
    kind: OutcomeKind = OutcomeKind.ACCEPTED

    def __init__(
        self,
        device_id: str,
        request: ModeRequest,
        ok: bool,
        attempts: int,
        latency_s: float,
        applied: Applied | None = None,
        error: str | None = None,
        at: float | None = None,
        kind: OutcomeKind = OutcomeKind.ACCEPTED,
    ) -> None:
        if not ok and kind in (OutcomeKind.ACCEPTED, OutcomeKind.CONFIRMED):
            kind = OutcomeKind.FAILED
        # The fields written into the instance's dict at once: the generated __init__ of a
        # frozen dataclass sets each through object.__setattr__, 3-4 times the cost, and
        # a fleet makes two Outcomes per command (sent, then read back).
        self.__dict__.update(
            device_id=device_id,
            request=request,
            ok=ok,
            attempts=attempts,
            latency_s=latency_s,
            applied=applied,
            error=error,
            at=time.time() if at is None else at,
            kind=kind,
        )


@dataclass(frozen=True, init=False)
class Pending:
    """An accepted command waiting for a reading that shows it."""

    outcome: Outcome
    sent_at: float  # unix seconds the command went out
    deadline: float  # unix seconds past which it is unconfirmed

    def __init__(self, outcome: Outcome, sent_at: float, deadline: float) -> None:
        self.__dict__.update(outcome=outcome, sent_at=sent_at, deadline=deadline)  # as Outcome
