"""The VEN's reports: planned from each event it takes, sampled, posted when due.

The import is sampled every ``sample_s`` (the daemon's ``measure``: the meter when read,
else the devices' figure, unverified); each report the event's ``reportDescriptors`` ask for
(``ven_reports.plan_reports``) is posted once its last interval is over. What cannot be
measured is answered as not available and logged once per payload type; a descriptor that
cannot be answered at all (no ``payloadType``) is said once and skipped.

A report the VTN does not take is tried again with back-off (the sample period, doubling,
at most ``REPORT_RETRY_MAX_S``, as the polls back off) for ``REPORT_GIVE_UP_S``; one the
VTN refuses (a 4xx other than 401, 408, 425 and 429: the body, not an outage) is given up
after ``MAX_REPORT_REFUSALS`` refusals in a row. A report given up is no longer pending; it
is counted in the status's ``reports_given_up`` and said in ``not_reported`` with the VTN's
last answer; ``given_up_here`` counts those given up by this process (the metric
``gridsched_openadr_ven_reports_total{state="given_up"}``, from 0).

With a state store (``keep_in``: the daemon's SQLite file, ``scheduler.audit.report_ledger``)
each report sent or given up is recorded by its ``reportName``, and each sample is stored:
a restarted VEN that plans the same reports again (the VTN still lists the event) leaves the
settled ones alone, and reports the others from what was measured before the restart too.
The time it was down counts as unread (one sample period after the last sample stored),
never as the last sample stretched over it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from models.site import OpenADR
from scheduler.service.ven_client import VtnClient, VtnError
from scheduler.service.ven_report_windows import STREAM_LOOKBACK_S
from scheduler.service.ven_reports import (
    ImportSample,
    Measure,
    ReportJob,
    SampleLog,
    plan_reports,
)

__all__ = [
    "MAX_REPORT_REFUSALS",
    "REPORT_GIVE_UP_S",
    "REPORT_RETRY_MAX_S",
    "Attempt",
    "Interpret",
    "ReportStore",
    "Reporter",
]

log = logging.getLogger(__name__)

#: a report the VTN refuses (4xx) this many times in a row is given up, said with its answer
MAX_REPORT_REFUSALS = 3
#: the longest wait between two tries of a report the VTN did not take
REPORT_RETRY_MAX_S = 300.0
#: a report the VTN has not taken for this long (an outage, 5xx, no answer) is given up
REPORT_GIVE_UP_S = 86400.0
#: 4xx answers that are not a refusal of the body: tried again like an outage
_NOT_REFUSALS = frozenset({401, 408, 425, 429})
#: the daemon's reading of an EVENT notification as simple-format event dicts (for reports)
Interpret = Callable[[dict[str, Any]], list[dict[str, Any]]]
#: runs one VEN step, recording its failure in the status; True when it succeeded
Attempt = Callable[[Callable[[], Awaitable[None]], str], Awaitable[bool]]
Sample = tuple[float, float | None, bool]


class ReportStore(Protocol):
    """Where reports settled and samples are kept (``scheduler.audit.store.Store``)."""

    def openadr_reports(self) -> dict[str, tuple[str, str]]: ...
    def openadr_samples(self, since: float) -> list[Sample]: ...
    async def put_openadr_report(
        self, name: str, event_id: str, outcome: str, detail: Any
    ) -> None: ...
    async def forget_openadr_reports(self, event_id: str) -> None: ...
    async def put_openadr_samples(self, rows: list[Sample], keep_after: float) -> None: ...


class Reporter:
    def __init__(
        self,
        vtn: VtnClient,
        site: OpenADR,
        status: dict[str, Any],
        attempt: Attempt,
        interpret: Interpret | None,
        measure: Measure | None,
    ) -> None:
        self.vtn, self.site, self.status = vtn, site, status
        self._attempt = attempt
        self._interpret = interpret
        self.measure = measure
        self.jobs: dict[str, ReportJob] = {}
        self.samples = SampleLog()
        self.retry_max_s = REPORT_RETRY_MAX_S
        self.give_up_after_s = REPORT_GIVE_UP_S
        self.refusals_to_give_up = MAX_REPORT_REFUSALS
        self._logged: set[str] = set()  # said in the log once
        self._store: ReportStore | None = None
        self._settled: dict[str, tuple[str, str]] = {}  # reportName -> (outcome, detail)
        self._unsaved: list[Sample] = []
        self._forgotten: list[str] = []  # deleted events whose stored reports to forget
        self._last_stored: float | None = None  # the last sample before a restart
        #: reports given up by this process (the metric's counter: one given up before a
        #: restart and taken up again from the state file is in the status, not here)
        self.given_up_here = 0
        #: event id -> (its notification, when to plan it again): report streams
        self.streams: dict[str, tuple[dict[str, Any], float]] = {}
        status.setdefault("reports_given_up", 0)

    @property
    def pending(self) -> int:
        return sum(1 for j in self.jobs.values() if not j.sent and j.given_up is None)

    def keep_in(self, store: ReportStore) -> None:
        """Record reports settled and samples in ``store``, and take up what it holds
        (call before the first event is planned)."""
        self._store = store
        self._settled = store.openadr_reports()
        rows = store.openadr_samples(time.time() - self.samples.keep_s)
        for t, kw, verified in rows:
            self.samples.add(t, ImportSample(kw, verified))
        self._last_stored = rows[-1][0] if rows else None

    def _say(self, line: str) -> None:
        if line not in self.status["not_reported"]:
            self.status["not_reported"] = (self.status["not_reported"] + [line])[-50:]

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)

    def plan(self, body: dict[str, Any], now: float | None = None) -> None:
        """The reports an EVENT notification's object asks for."""
        if self.measure is None or self._interpret is None:
            return
        obj = body["object"]
        try:
            now = time.time() if now is None else now
            planned = plan_reports(obj, self._interpret(body), now, self.site)
        except Exception as exc:
            self._say(f"event {obj.get('id')}: {exc}"[:200])
            return
        oid = str(obj.get("id"))
        if planned.more_after is not None:  # a stream: planned a day ahead, then again
            self.streams[oid] = (body, planned.more_after)
        else:
            self.streams.pop(oid, None)
        for job in planned.jobs:
            if job.key not in self.jobs:
                self.jobs[job.key] = job
                self._take_up(job)
        for line in planned.not_reported:
            self._say(line)
        for line in planned.malformed:
            self._say(line)
            self._log_once(line, "VEN: %s", line)
        for kind, why in planned.unavailable.items():
            # once per type: every event of a program asks
            self._log_once(kind, "VEN: reports asked for are answered as not available: %s", why)

    def _take_up(self, job: ReportJob) -> None:
        """A job settled before a restart stays settled."""
        outcome, detail = self._settled.get(job.name, ("", ""))
        if outcome == "sent":
            job.sent = True
        elif outcome == "given_up":
            job.given_up = detail
            self.status["reports_given_up"] += 1
            self._say(f"report {job.key}: {detail}"[:300])

    def extend(self, now: float) -> None:
        """Plan the next reports of each stream whose time has come, and let go of the
        reports settled long ago (a stream's are never planned again past
        ``STREAM_LOOKBACK_S``; the state file keeps what each became)."""
        for body, at in list(self.streams.values()):
            if now >= at:
                self.plan(body, now)
        old = now - STREAM_LOOKBACK_S - 3600.0
        for k in [k for k, j in self.jobs.items() if j.due_at < old and (j.sent or j.given_up)]:
            del self.jobs[k]

    def forget(self, event_id: str) -> None:
        """A deleted event's reports not sent yet (and, stored, its reports settled)."""
        self.streams.pop(event_id, None)
        for k in [k for k, j in self.jobs.items() if j.event_id == event_id and not j.sent]:
            del self.jobs[k]
        if self._store is not None:
            self._forgotten.append(event_id)

    async def loop(self, measure: Measure, sample_s: float) -> None:
        if self._last_stored is not None and self._last_stored + sample_s < time.time():
            # down since the last sample stored: unread from one period after it
            self._add(self._last_stored + sample_s, ImportSample(None, False))
        while True:
            now = time.time()
            try:
                self._add(now, measure())
            except Exception as exc:  # an unreadable site is a gap, not 0 kW
                log.warning("VEN: import not read for reports: %s", exc)
            await self._flush(now)
            self.extend(now)
            for job in list(self.jobs.values()):
                if job.sent or job.given_up is not None or now < max(job.due_at, job.next_at):
                    continue
                ok, error = await self._post(job)
                if not ok:
                    await self._failed(job, error, now, sample_s)
            await asyncio.sleep(sample_s)

    async def send(self, job: ReportJob) -> bool:
        """Post ``job``'s report; False if it failed, was sent already, or was given up."""
        return (await self._post(job))[0]

    async def _post(self, job: ReportJob) -> tuple[bool, BaseException | None]:
        if job.sent or job.given_up is not None:
            return False, None
        whole = [r.name for r in self.site.resources if not r.classes]
        resource = whole[0] if whole else "AGGREGATED_REPORT"
        body = job.body(self.samples, str(self.site.ven_name), resource, self.vtn.version)
        job.attempts += 1
        error: list[BaseException] = []

        async def post() -> None:
            try:
                await self.vtn.call("POST", "/reports", json=body)
            except Exception as exc:
                error.append(exc)
                raise

        if not await self._attempt(post, f"report {job.key}"):
            return False, error[0] if error else None
        job.sent = True
        self.status["reports_sent"] += 1
        await self._settle(job, "sent", body)
        return True, None

    async def _failed(
        self, job: ReportJob, error: BaseException | None, now: float, sample_s: float
    ) -> None:
        """Back off, or give up: after the VTN's refusals, or after the retry window."""
        job.failing_since = now if job.failing_since is None else job.failing_since
        status = error.status if isinstance(error, VtnError) else None
        refused = status is not None and 400 <= status < 500 and status not in _NOT_REFUSALS
        job.refusals = job.refusals + 1 if refused else 0
        failing_s = now - job.failing_since
        if job.refusals < self.refusals_to_give_up and failing_s < self.give_up_after_s:
            job.next_at = now + min(sample_s * 2 ** min(job.attempts - 1, 30), self.retry_max_s)
            return
        what = "refused" if job.refusals >= self.refusals_to_give_up else "not taken"
        why = (
            f"gave up after {job.attempts} attempts over {failing_s:.0f} s, {what} by the "
            f"VTN: {error}"
        )[:300]
        job.given_up = why
        self.status["reports_given_up"] += 1
        self.given_up_here += 1
        self._say(f"report {job.key}: {why}"[:300])
        log.error("VEN: report %s %s", job.key, why)
        await self._settle(job, "given_up", why)

    async def _settle(self, job: ReportJob, outcome: str, detail: Any) -> None:
        if self._store is None:
            return
        self._settled[job.name] = (outcome, "" if outcome == "sent" else str(detail))
        try:
            await self._store.put_openadr_report(job.name, job.event_id, outcome, detail)
        except Exception as exc:  # said: after a restart this report may be sent again
            log.error(
                "VEN: report %s %s, not recorded in the state file: %s", job.key, outcome, exc
            )

    def _add(self, t: float, sample: ImportSample) -> None:
        self.samples.add(t, sample)
        if self._store is not None:
            self._unsaved.append((t, sample.power_kw, sample.verified))

    async def _flush(self, now: float) -> None:
        """Store the samples taken since the last flush, and forget deleted events' reports."""
        if self._store is None:
            return
        rows, self._unsaved = self._unsaved, []
        gone, self._forgotten = self._forgotten, []
        try:
            if rows:
                await self._store.put_openadr_samples(rows, now - self.samples.keep_s)
            for event_id in gone:
                await self._store.forget_openadr_reports(event_id)
        except Exception as exc:  # kept in memory: a restart loses them, said once
            self._log_once(f"store {exc}", "VEN: report samples not stored: %s", exc)

    def record(self, t: float, power_kw: float | None, verified: bool) -> None:
        self._add(t, ImportSample(power_kw, verified))
