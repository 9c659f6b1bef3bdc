"""The VEN's reports: planned from each event it takes, sampled, posted when due.

The import is sampled every ``sample_s`` (the daemon's ``measure``: the meter when read,
else the devices' figure, unverified); each report the event's ``reportDescriptors`` ask for
(``ven_reports.plan_reports``) is posted once its last interval is over, retried while the
VTN refuses it, and given up after ``MAX_REPORT_ATTEMPTS`` (said in the VEN's status). What
cannot be measured is answered as not available and logged once per payload type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models.site import OpenADR
from scheduler.service.ven_client import VtnClient
from scheduler.service.ven_reports import ImportSample, Measure, ReportJob, SampleLog, plan_reports

__all__ = ["MAX_REPORT_ATTEMPTS", "Attempt", "Interpret", "Reporter"]

log = logging.getLogger(__name__)

#: a report the VTN keeps refusing is given up (and said in status) after this many tries
MAX_REPORT_ATTEMPTS = 20
#: the daemon's reading of an EVENT notification as simple-format event dicts (for reports)
Interpret = Callable[[dict[str, Any]], list[dict[str, Any]]]
#: runs one VEN step, recording its failure in the status; True when it succeeded
Attempt = Callable[[Callable[[], Awaitable[None]], str], Awaitable[bool]]


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
        self._logged: set[str] = set()  # payload types said not available in the log

    @property
    def pending(self) -> int:
        return sum(1 for j in self.jobs.values() if not j.sent)

    def _say(self, line: str) -> None:
        if line not in self.status["not_reported"]:
            self.status["not_reported"] = (self.status["not_reported"] + [line])[-50:]

    def plan(self, body: dict[str, Any]) -> None:
        """The reports an EVENT notification's object asks for."""
        if self.measure is None or self._interpret is None:
            return
        obj = body["object"]
        try:
            planned = plan_reports(obj, self._interpret(body))
        except Exception as exc:
            self._say(f"event {obj.get('id')}: {exc}"[:200])
            return
        for job in planned.jobs:
            self.jobs.setdefault(job.key, job)
        for line in planned.not_reported:
            self._say(line)
        for kind, why in planned.unavailable.items():
            if kind not in self._logged:  # once per type: every event of a program asks
                self._logged.add(kind)
                log.warning("VEN: reports asked for are answered as not available: %s", why)

    def forget(self, event_id: str) -> None:
        """A deleted event's reports not sent yet."""
        for k in [k for k, j in self.jobs.items() if j.event_id == event_id and not j.sent]:
            del self.jobs[k]

    async def loop(self, measure: Measure, sample_s: float) -> None:
        while True:
            now = time.time()
            try:
                self.samples.add(now, measure())
            except Exception as exc:  # an unreadable site is a gap, not 0 kW
                log.warning("VEN: import not read for reports: %s", exc)
            due = [j for j in self.jobs.values() if not j.sent and now >= j.due_at]
            for job in [j for j in due if j.attempts < MAX_REPORT_ATTEMPTS]:
                if not await self.send(job) and job.attempts >= MAX_REPORT_ATTEMPTS:
                    self._say(f"report {job.key}: gave up after {job.attempts} attempts")
            await asyncio.sleep(sample_s)

    async def send(self, job: ReportJob) -> bool:
        """Post ``job``'s report; False if it failed or was sent already."""
        if job.sent:
            return False
        whole = [r.name for r in self.site.resources if not r.classes]
        resource = whole[0] if whole else "AGGREGATED_REPORT"
        body = job.body(self.samples, str(self.site.ven_name), resource, self.vtn.version)
        job.attempts += 1

        async def post() -> None:
            await self.vtn.call("POST", "/reports", json=body)

        ok = await self._attempt(post, f"report {job.key}")
        if ok:
            job.sent = True
            self.status["reports_sent"] += 1
        return ok

    def record(self, t: float, power_kw: float | None, verified: bool) -> None:
        self.samples.add(t, ImportSample(power_kw, verified))
