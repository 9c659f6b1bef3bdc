"""The fleet's health bookkeeping: each device's health from how its last calls ended.

Moved out of :mod:`adapters.fleet` (the fleet's operations use it through :class:`FleetHealth`).
"""

from __future__ import annotations

import logging
import time

from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    Health,
    ModeRequest,
    NotConfirmed,
)
from adapters.outcomes import DeviceStatus, Pending, RetryPolicy

log = logging.getLogger("gridsched.fleet")


class FleetHealth:
    status: dict[str, DeviceStatus]
    pending: dict[str, Pending]
    _unconfirmed: dict[str, ModeRequest]
    retry: RetryPolicy
    unreachable_after: int
    probe_max_s: float

    # -- bookkeeping ------------------------------------------------------------------------

    def _set_health(self, st: DeviceStatus, health: Health, why: str | None) -> None:
        """One log line per change of health, with the reason; no traceback."""
        if health is st.health:
            return
        old, st.health = st.health, health
        first, st.seen = not st.seen, True
        if health is Health.OK and first:
            return
        if health is Health.OK:
            log.info("%s ok again (was %s)", st.device_id, old.value)
        elif health is Health.DEGRADED and old is not Health.OK:
            log.info("%s degraded (was %s): %s", st.device_id, old.value, why)
        elif health is not Health.DEGRADED:
            log.warning("%s %s: %s", st.device_id, health.value, why)

    def _ok(self, st: DeviceStatus, op: str = "apply") -> None:
        st.failures = 0
        st.next_probe = 0.0
        if st.health is Health.UNCONFIRMED and (
            st.device_id in self._unconfirmed or st.device_id in self.pending
        ):
            return  # answers again, but no command of its has been seen in effect since
        if st.health is Health.REJECTED and op != "apply":
            return  # reads work; the command it refused still stands refused
        st.last_error = None
        errors = st.telemetry.errors if st.telemetry is not None else ()
        health = Health.DEGRADED if errors else Health.OK
        self._set_health(st, health, "; ".join(errors) if errors else None)

    def _fail(self, st: DeviceStatus, exc: BaseException) -> str:
        st.failures += 1
        msg = str(exc) if isinstance(exc, AdapterError) else f"{st.device_id}: {exc!r}"
        st.last_error = msg
        if isinstance(exc, BadReply):
            self._set_health(st, Health.UNREADABLE, msg)
        elif isinstance(exc, ControlRejected):
            self._set_health(st, Health.REJECTED, msg)
        elif isinstance(exc, NotConfirmed):
            self._set_health(st, Health.UNCONFIRMED, msg)
        elif st.failures >= self.unreachable_after and (
            isinstance(exc, (DeviceUnreachable, DeviceTimeout)) or not isinstance(exc, AdapterError)
        ):
            self._set_health(st, Health.UNREACHABLE, f"{st.failures} failures: {msg}")
            st.connected = False
            backoff = min(self.probe_max_s, 2.0 ** (st.failures - self.unreachable_after))
            st.next_probe = time.monotonic() + backoff
        elif st.health is not Health.UNREACHABLE:
            self._set_health(st, Health.DEGRADED, msg)
        return msg

    def _attempts(self, st: DeviceStatus) -> int:
        """One try for a device already marked unreachable or unreadable (a retry would get
        the same), the full retry policy otherwise."""
        if st.health in (Health.UNREACHABLE, Health.UNREADABLE):
            return 1
        return self.retry.attempts
