"""A fleet's read-back: accepted commands waiting for a reading that shows them.

An accepted command is not yet done: it waits in ``pending`` until a reading sent after it
shows the mode (an :class:`Outcome` ``confirmed``), or until the device's confirmation
deadline passes (``unconfirmed``: the adapter forgets what it believed sent, and the fleet
sends it again, :meth:`adapters.fleet.Fleet.resend_unconfirmed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from adapters.base import DeviceAdapter, Health, ModeRequest, NotConfirmed, Telemetry
from adapters.fleet_health import HealthBook
from adapters.outcomes import DeviceStatus, Outcome, OutcomeKind, Pending

log = logging.getLogger("gridsched.fleet")


class ReadBack:
    """The commands of a fleet's devices waiting for a read-back, and those it never
    showed; each verdict is handed to ``emit`` and set in the device's health."""

    def __init__(
        self,
        by_id: Mapping[str, DeviceAdapter],
        status: Mapping[str, DeviceStatus],
        health: HealthBook,
        emit: Callable[[Outcome], None],
    ) -> None:
        self.by_id = by_id
        self.status = status
        self.health = health
        self.emit = emit
        #: Accepted commands not yet seen in effect, by device.
        self.pending: dict[str, Pending] = {}
        #: Commands whose read-back never showed them, by device, until sent again.
        self.unconfirmed: dict[str, ModeRequest] = {}

    def waiting(self, device_id: str) -> bool:
        """Whether a command of the device's waits for its read-back or was never seen."""
        return device_id in self.unconfirmed or device_id in self.pending

    def accepted(self, out: Outcome) -> None:
        """Wait for a reading that shows an accepted command; it supersedes any earlier
        one, unconfirmed or pending (health stays unconfirmed until a read-back shows it)."""
        dev = self.by_id[out.device_id]
        sent = out.at - out.latency_s
        self.pending[out.device_id] = Pending(out, sent, sent + dev.confirm_deadline_s())
        self.unconfirmed.pop(out.device_id, None)

    def settle(self, device_id: str, t: Telemetry | None, now: float) -> None:
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
            self.unconfirmed.pop(device_id, None)
            self.emit(
                Outcome(
                    device_id,
                    p.outcome.request,
                    True,
                    0,
                    max(0.0, t.at - p.sent_at),
                    applied,
                    at=now,
                    kind=OutcomeKind.CONFIRMED,
                )
            )
            if st.health is Health.UNCONFIRMED:
                self.health.ok(st, awaiting=self.waiting(device_id))
            return
        if now < p.deadline:
            return
        del self.pending[device_id]
        self.unconfirmed[device_id] = p.outcome.request
        if t is None:
            seen = "no reading"
        elif t.at < p.sent_at:  # a sweep longer than the deadline: say how old the news is
            seen = f"not read since the command; it last read {t.state}"
        else:
            seen = f"it reads {t.state}"
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
            msg = self.health.fail(st, exc)
            st.failures = 0  # it answers; a missed read-back is not a connection failure
        self.emit(
            Outcome(
                device_id,
                p.outcome.request,
                False,
                0,
                now - p.sent_at,
                applied,
                error=msg,
                at=now,
                kind=OutcomeKind.UNCONFIRMED,
            )
        )

    def check_pending(self, now: float | None = None) -> None:
        """Give up on pending commands past their deadline (readings settle the others)."""
        now = time.time() if now is None else now
        for device_id, p in list(self.pending.items()):
            if now >= p.deadline:
                self.settle(device_id, self.status[device_id].telemetry, now)
