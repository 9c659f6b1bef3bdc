"""The fleet's read-back: accepted commands waiting for a reading that shows them.

Moved out of :mod:`adapters.fleet` (the fleet's operations use it through :class:`ReadBack`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from adapters.base import DeviceAdapter, Health, ModeRequest, NotConfirmed, Telemetry
from adapters.fleet_health import FleetHealth
from adapters.outcomes import Outcome, OutcomeKind, Pending

log = logging.getLogger("gridsched.fleet")


class ReadBack(FleetHealth):
    by_id: dict[str, DeviceAdapter]
    on_outcome: Callable[[Outcome], None] | None

    # -- read-back --------------------------------------------------------------------------

    def _emit(self, out: Outcome) -> None:
        if self.on_outcome is not None:
            try:
                self.on_outcome(out)
            except Exception:
                log.exception("on_outcome hook failed for %s", out.device_id)

    def _accepted(self, out: Outcome) -> None:
        """Wait for a reading that shows an accepted command; it supersedes any earlier
        one, unconfirmed or pending (health stays unconfirmed until a read-back shows it)."""
        dev = self.by_id[out.device_id]
        sent = out.at - out.latency_s
        self.pending[out.device_id] = Pending(out, sent, sent + dev.confirm_deadline_s())
        self._unconfirmed.pop(out.device_id, None)

    def _settle(self, device_id: str, t: Telemetry | None, now: float) -> None:
        """Confirm a pending command from a reading sent after it, or give up on it once its
        deadline has passed."""
        p = self.pending.get(device_id)
        if p is None:
            return
        applied = p.outcome.applied
        assert applied is not None
        dev = self.by_id[device_id]
        st = self.status[device_id]
        if t is not None and t.at >= p.sent_at and dev.confirms(applied, t):
            del self.pending[device_id]
            self._unconfirmed.pop(device_id, None)
            self._emit(
                Outcome(
                    device_id,
                    p.outcome.request,
                    True,
                    0,
                    max(0.0, t.at - p.sent_at),
                    applied,
                    kind=OutcomeKind.CONFIRMED,
                )
            )
            if st.health is Health.UNCONFIRMED:
                self._ok(st)
            return
        if now < p.deadline:
            return
        del self.pending[device_id]
        self._unconfirmed[device_id] = p.outcome.request
        seen = "no reading" if t is None else f"it reads {t.state}"
        exc = NotConfirmed(
            device_id,
            f"accepted {p.outcome.request.describe()}, but the read-back did not show "
            f"{applied.request.describe()} within {p.deadline - p.sent_at:g} s ({seen})",
        )
        try:
            dev.unconfirmed(applied)
        except Exception:
            log.exception("adapter %s: unconfirmed hook raised", device_id)
        if st.health is Health.UNREACHABLE:
            msg = str(exc)  # the worse news stands: it does not answer at all
        else:
            msg = self._fail(st, exc)
            st.failures = 0  # it answers; a missed read-back is not a connection failure
        self._emit(
            Outcome(
                device_id,
                p.outcome.request,
                False,
                0,
                now - p.sent_at,
                applied,
                error=msg,
                kind=OutcomeKind.UNCONFIRMED,
            )
        )

    def check_pending(self) -> None:
        """Give up on pending commands past their deadline (readings settle the others)."""
        now = time.time()
        for device_id, p in list(self.pending.items()):
            if now >= p.deadline:
                self._settle(device_id, self.status[device_id].telemetry, now)

    def unconfirmed_requests(self) -> dict[str, ModeRequest]:
        """The commands accepted and never seen in effect, to be sent again."""
        return dict(self._unconfirmed)
