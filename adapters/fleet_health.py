"""Each device's health in a fleet, from how its last calls ended.

Health says what is wrong: ``ok``; ``degraded`` after a transient failure or while a
device reports errors; ``unreachable`` after ``unreachable_after`` consecutive failures to
connect or get an answer; ``unreadable`` when it answers something that cannot be parsed;
``rejected`` when it refused the last command; ``unconfirmed`` when it accepted one the
read-back never showed. One log line per device per change of health, with the error,
and no traceback for a device fault. Unreachable and unreadable devices get one try per
sweep (:meth:`HealthBook.attempts`); unreachable ones are probed again with an exponential
backoff (1 s doubling to ``probe_max_s``), so that a dead rack does not slow every sweep by
its timeouts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    Health,
    NotConfirmed,
)
from adapters.faults import is_bug, traceback_once
from adapters.neterrors import describe
from adapters.outcomes import DeviceStatus, RetryPolicy

log = logging.getLogger("gridsched.fleet")


@dataclass(frozen=True)
class HealthBook:
    """Sets each :class:`DeviceStatus`'s health, failure count and next probe from the
    result of a call to its device."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    unreachable_after: int = 3
    probe_max_s: float = 60.0
    #: Called after each change of a device's health (its ``last_error`` already set).
    on_change: Callable[[DeviceStatus], None] | None = None

    def set(self, st: DeviceStatus, health: Health, why: str | None) -> None:
        """One log line per change of health, with the reason; no traceback."""
        if health is st.health:
            return
        old, st.health = st.health, health
        if self.on_change is not None:
            self.on_change(st)
        first, st.seen = not st.seen, True
        if health is Health.OK and first:
            return
        if health is Health.OK:
            log.info("%s ok again (was %s)", st.device_id, old.value)
        elif health is Health.DEGRADED and old is not Health.OK:
            log.info("%s degraded (was %s): %s", st.device_id, old.value, why)
        elif health is not Health.DEGRADED:
            log.warning("%s %s: %s", st.device_id, health.value, why)

    def ok(self, st: DeviceStatus, op: str = "apply", awaiting: bool = False) -> None:
        """A call (``op``: read, stage or apply) that answered. ``awaiting``: a command of
        the device's still waits for its read-back (pending or unconfirmed)."""
        st.failures = 0
        st.next_probe = 0.0
        if st.health is Health.UNCONFIRMED and awaiting:
            return  # answers again, but no command of its has been seen in effect since
        if st.health is Health.REJECTED and op != "apply":
            return  # reads work; the command it refused still stands refused
        st.last_error = None
        errors = st.telemetry.errors if st.telemetry is not None else ()
        health = Health.DEGRADED if errors else Health.OK
        self.set(st, health, "; ".join(errors) if errors else None)

    def fail(self, st: DeviceStatus, exc: BaseException) -> str:
        """A call that failed with ``exc``; returns the error in words."""
        st.failures += 1
        # an AdapterError names its device; anything else is said in words (a bug, KeyError,
        # keeps its name)
        msg = str(exc) if isinstance(exc, AdapterError) else f"{st.device_id}: {describe(exc)}"
        st.last_error = msg
        if isinstance(exc, BadReply) or _answer_unreadable(exc):
            self.set(st, Health.UNREADABLE, msg)
        elif isinstance(exc, ControlRejected):
            self.set(st, Health.REJECTED, msg)
        elif isinstance(exc, NotConfirmed):
            self.set(st, Health.UNCONFIRMED, msg)
        elif st.failures >= self.unreachable_after and (
            isinstance(exc, (DeviceUnreachable, DeviceTimeout)) or not isinstance(exc, AdapterError)
        ):
            self.set(st, Health.UNREACHABLE, f"{st.failures} failures: {msg}")
            st.connected = False
            backoff = min(self.probe_max_s, 2.0 ** (st.failures - self.unreachable_after))
            st.next_probe = time.monotonic() + backoff
        elif st.health is not Health.UNREACHABLE:
            self.set(st, Health.DEGRADED, msg)
        return msg

    def fail_outside(self, st: DeviceStatus, exc: BaseException) -> str:
        """A call that raised outside the adapters' contract: said once per change of health
        (not per try), a bug's traceback once per place, none for a library choking on an
        answer (a device fault)."""
        before = st.health
        msg = self.fail(st, exc)
        if st.health is not before:
            first = traceback_once(exc, reading=True)
            log.warning(
                "adapter %s raised outside its contract: %s", st.device_id, msg, exc_info=first
            )
        return msg

    def not_seen(self, st: DeviceStatus, timeout_s: float) -> None:
        """An accepted mode no reading showed within ``timeout_s`` (a caller's own wait)."""
        st.last_error = str(NotConfirmed(st.device_id, f"mode not seen within {timeout_s:g} s"))
        if st.health is Health.OK:
            self.set(st, Health.DEGRADED, st.last_error)

    def attempts(self, st: DeviceStatus) -> int:
        """One try for a device already marked unreachable or unreadable (a retry would get
        the same), the full retry policy otherwise."""
        if st.health in (Health.UNREACHABLE, Health.UNREADABLE):
            return 1
        return self.retry.attempts


def _answer_unreadable(exc: BaseException) -> bool:
    """An exception outside the adapters' contract that says the device answered and the
    answer could not be read (a library choking on it: json's decoder, a protobuf parser),
    not that it could not be reached (OSError, a timeout) and not a bug of ours."""
    if isinstance(exc, AdapterError | OSError):  # TimeoutError is an OSError
        return False
    return not is_bug(exc, reading=True)
