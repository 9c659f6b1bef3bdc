"""The site's billing peak: the highest import read in the billing period, the kW the
month's demand charge is paid on (``[tariff] demand_charge_usd_per_kw_month``).

The period is a calendar month in the site's time zone (``[site] timezone``), as the
planner bills it (:mod:`scheduler.planner.inputs`). The peak is the highest ``import_kw``
read at a poll (the site meter's when read, else the devices' sum): the import at that
moment, not averaged over a demand interval (the tariff defines none). It is kept in the
state file per period (:mod:`scheduler.audit.billing_peaks`): a restart takes the month's
peak back, and a month that begins while the daemon runs begins at 0.

``[tariff] billing_peak_so_far_kw`` is the peak already reached in the month the daemon
starts in with a state file that holds no peak yet (a new one, or one from before peaks
were kept; docs/configuration.md: "this billing month"): it floors that month, the first
the state file records, and no later one (a value set once would otherwise floor every
month after it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

log = logging.getLogger("gridsched.daemon")


class PeakStore(Protocol):
    async def put_billing_peak(self, period: str, start_at: float, peak_kw: float) -> None: ...


def period_of(now: float, tz: ZoneInfo) -> tuple[str, datetime]:
    """The billing period ``now`` falls in (``2026-08``) and its start (local midnight on
    the month's first day, in ``tz``)."""
    local = datetime.fromtimestamp(now, tz)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return f"{local.year}-{local.month:02d}", start


class BillingPeak:
    """The billing period's peak as the daemon knows it; the period follows the clock
    given to each call (a new month is entered at the first call in it)."""

    def __init__(
        self,
        tz: ZoneInfo,
        so_far_kw: float = 0.0,
        stored: Mapping[str, float] | None = None,
        store: PeakStore | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``on_failure``: called at each write the state file refuses (the daemon counts
        it in ``gridsched_store_write_failures_total``, as a refused audit record)."""
        self.tz, self.so_far_kw, self.store = tz, so_far_kw, store
        self.on_failure = on_failure
        #: each period's peak as the state file has it (what is not yet there is written
        #: at the next poll)
        self.stored: dict[str, float] = dict(stored or {})
        self.period: str | None = None
        self.start: datetime | None = None
        self.kw = 0.0
        self.error: str | None = None  # why the last write failed, until one lands

    def _enter(self, now: float) -> None:
        period, start = period_of(now, self.tz)
        if period == self.period:
            return
        first = min(self.stored, default=None)
        floor = self.so_far_kw if first is None or period <= first else 0.0
        kw = max(self.stored.get(period, 0.0), floor)
        if self.period is not None:
            log.info(
                "billing period %s begins (%s's peak: %.1f kW); its peak so far: %.1f kW",
                period, self.period, self.kw, kw,
            )  # fmt: skip
        self.period, self.start, self.kw = period, start, kw

    def peak_kw(self, now: float) -> float:
        """The peak of the period ``now`` falls in (0 in a month nothing was read in)."""
        self._enter(now)
        return self.kw

    async def observe(self, import_kw: float, now: float) -> None:
        """An import read at ``now``: the period's peak rises to it, and what the state
        file lacks is written. A write that fails is logged (once per error) and tried
        again at the next poll; the peak held in memory counts meanwhile."""
        self._enter(now)
        self.kw = max(self.kw, import_kw)
        period, start = self.period, self.start
        assert period is not None and start is not None
        if self.store is None or self.stored.get(period) == self.kw:
            return
        kw = self.kw
        try:
            await self.store.put_billing_peak(period, start.timestamp(), kw)
        except Exception as exc:
            if str(exc) != self.error:
                log.error("billing peak of %s (%.1f kW) not stored: %s", period, kw, exc)
            self.error = str(exc)
            if self.on_failure is not None:
                self.on_failure()
            return
        self.stored[period] = kw
        self.error = None

    def status(self, now: float) -> dict[str, Any]:
        """For ``/v1/status``: the period, its start (local time) and its peak."""
        kw = self.peak_kw(now)
        assert self.start is not None
        return {
            "period": self.period,
            "start": self.start.isoformat(),
            "peak_kw": round(kw, 3),
            "error": self.error,
        }
