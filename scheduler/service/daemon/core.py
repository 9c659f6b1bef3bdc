"""The daemon's composition root: it builds the parts, wires them, and owns their life
cycle through an :class:`~contextlib.AsyncExitStack` (what was opened is closed, in
reverse, however the start or the run ended).

The parts, each a module with one job: ``signals`` (intake and the cap in force),
``fastpath`` (shed at once, by ``shedorder``'s order; the fail-safe posture), ``dispatch``
(the plan's step, ramp batches, staging), ``planning`` (re-plans, never applying a failed
one), ``feeds`` (prices, hashprice), ``poll`` (read, account, record, watch), ``status``;
beside them what they share: ``devices`` (modes and commands awaiting read-back),
``measure`` (site power and compliance), ``plans`` (the plan in force), ``failsafe``,
``recorder`` (the audit trail), ``counters``. The store, the fleet, the planner and the
clock are injected (built from the config when not given)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters import discovery, fds, registry
from adapters.base import ModeRequest
from adapters.fleet import Fleet, Outcome, freeze_heap
from adapters.fleet_shards import make_fleet
from adapters.meter import ModbusMeter
from models.devices import DeviceKind
from models.signals import GridEvent
from models.site import FeedKind, Posture, SiteConfig
from scheduler.audit.store import Store
from scheduler.planner.optimize import Planner
from scheduler.planner.plan import Plan
from scheduler.service.daemon import status as views
from scheduler.service.daemon.billing import BillingPeak
from scheduler.service.daemon.clock import Clock, SystemClock
from scheduler.service.daemon.counters import Counters, Tasks, quiet_apscheduler_skips
from scheduler.service.daemon.devices import DeviceModes
from scheduler.service.daemon.dispatch import Dispatcher
from scheduler.service.daemon.failsafe import FailSafe
from scheduler.service.daemon.fastpath import Shedder
from scheduler.service.daemon.feeds import Feeds
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.planning import Planning, dispatch_step_s
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.poll import Poller
from scheduler.service.daemon.posture import confirm_posture
from scheduler.service.daemon.recorder import Recorder
from scheduler.service.daemon.signals import Signals
from scheduler.service.demand_feed import DemandFeed
from scheduler.service.metrics import Snapshot
from scheduler.service.openadr_programs import Programs
from scheduler.service.sdnotify import Notifier

log = logging.getLogger("gridsched.daemon")


class Daemon:
    def __init__(
        self,
        config: SiteConfig,
        db_path: str | Path | None = None,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        built: registry.Built | None = None,
        planner: Planner | None = None,
    ) -> None:
        self.config = config
        d = config.daemon
        self.db_path = Path(db_path) if db_path else config.resolve(d.state_dir) / "gridsched.db"
        self.clock = clock or SystemClock()
        self.store = store or Store(self.db_path)
        self.built = built or registry.build(config)
        # what discovery found before (the state file): a known miner is not probed again
        self.identities = discovery.IdentityBook.from_docs(self.store.device_identities())
        discovery.attach(self.built.adapters, self.identities)
        #: called with (done, total) as each device's connect ends (`gridsched run`: a
        #: progress line on a terminal)
        self.connect_progress: Callable[[int, int], None] | None = None
        # a connection per device and per call in flight: past the open-files limit a
        # connection fails as a device fault (adapters/fds.py); raised before any worker
        # process starts, so that the workers inherit it
        needed = fds.fleet_fds_needed(
            len(self.built.adapters), d.command_concurrency, d.read_concurrency
        )
        short = fds.short_of(needed)
        if short is not None:
            log.warning("%s", short)
        #: the open-files limit this process runs with (raised above) and what its fleet
        #: may hold: in /v1/status and /metrics, for as long as it runs short
        self.open_files = (fds.fd_limit()[0], needed)
        # in this process, or with the miners driven by worker processes ([daemon]
        # fleet_workers): one fleet to the parts either way, one log of its outcomes
        self.fleet: Fleet = make_fleet(
            self.built.adapters,
            self.built.groups,
            d.fleet_workers,
            concurrency=d.command_concurrency,
            read_concurrency=d.read_concurrency,
            clock=self.clock.time,
        )
        self.counters = Counters()
        self.tasks = Tasks(self.counters)
        self.recorder = Recorder(self.store, self.counters)
        self.notifier = Notifier()
        # their payload descriptors, events' defaults: as stored by the last run, and kept
        self.openadr_programs = Programs(
            self.store.openadr_programs(), self.store.put_openadr_programs
        )
        self.ven: Any = None  # scheduler.service.ven.Ven when a VTN is configured
        self.started_at = self.clock.time()
        #: what the shutdown posture came to: devices told, confirmed by read-back, not
        #: confirmed in time, failed (printed by `gridsched run`, recorded in the audit)
        self.shutdown_report: dict[str, Any] = {}
        # inference demand from the serving engines' metrics, and GPU drains
        self.demand = DemandFeed(config.inference) if config.inference.demand else None
        if self.demand is not None:
            self.demand.wire_drains(self.built.adapters, self.counters.drain_s.observe)
            if self.demand.cfg.gpu_engines:  # a drain runs inside the GPU's apply call
                self.fleet.op_timeout_s = max(self.fleet.op_timeout_s, self.demand.cfg.drain_s + 10)
        meter = config.site.meter
        # the parts
        self.plans = CurrentPlan()
        self.devices = DeviceModes(config, self.fleet, self.clock)
        # when each device last slept or woke, as the last run left it (its min-off/min-on)
        self.devices.dwell.restore(self.store.device_dwell(), set(self.fleet.status))
        self.fleet.on_outcome = self._verdict  # the read-back's verdicts
        self.devices.on_verdict = self.recorder.verdict  # to the audit trail as they come
        # the billing period's peak, as the state file kept it (restored across restarts)
        billing = BillingPeak(
            config.site.tz, config.tariff.billing_peak_so_far_kw, self.store.billing_peaks(),
            self.store, on_failure=self._billing_write_failed,
        )  # fmt: skip
        self.power = Power(
            self.fleet, self.devices, self.plans, ModbusMeter(meter) if meter else None, billing
        )
        self.fleet.on_reading = self.power.heard  # each reading counts as it comes
        self.feeds = Feeds(config, self.clock, self._feed_changed)
        self.failsafe = FailSafe(config, self.clock, self.feeds, self.plans)
        self.signals = Signals(
            config, self.clock, self.store, self.counters, self.failsafe,
            shed=self.request_fast_path, replan=self.request_replan,
        )  # fmt: skip
        self.shedder = Shedder(
            self.fleet, self.devices, self.power, self.signals, self.plans, self.clock,
            self.recorder, self.tasks, self.demand, replan=self.request_replan,
        )  # fmt: skip
        self.dispatcher = Dispatcher(
            self.fleet, self.devices, self.power, self.signals, self.plans, self.clock,
            self.recorder, self.tasks,
        )  # fmt: skip
        self.planning = Planning(
            planner or Planner(), self.fleet, self.devices, self.power, self.signals,
            self.feeds, self.plans, self.clock, self.recorder, self.tasks, self.demand,
            dispatch=self.dispatch, safe_posture=self.shedder.safe_posture,
        )  # fmt: skip
        self.poller = Poller(
            self.fleet, self.devices, self.power, self.signals, self.failsafe, self.shedder,
            self.dispatcher, self.planning, self.feeds, self.plans, self.clock,
            self.recorder, self.tasks, self.notifier,
        )  # fmt: skip
        # /metrics: rendered on this loop, served by the API and by [metrics] listen
        self.metrics_snapshot = Snapshot(self)
        self.exporter: Any = None  # scheduler.service.exporter.MetricsExporter when listening
        self._metrics_socket: socket.socket | None = None  # [metrics] listen, once bound
        self._resources = contextlib.AsyncExitStack()  # store, simulators, fleet, meter
        self._jobs = contextlib.AsyncExitStack()  # scheduled jobs, background tasks, VEN

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self, before_connect: Callable[[Daemon], None] | None = None) -> None:
        """Open the store, start the simulators, connect the fleet and read it once, and log
        how many devices answer; no jobs. ``before_connect`` runs once the simulators listen
        (tests inject faults)."""
        stack = self._resources
        self.store.start()
        stack.callback(self.store.close)
        # after the fleet's close (no verdict comes later), before the store's
        stack.push_async_callback(self.recorder.flush_verdicts)
        stack.push_async_callback(self.save_identities)  # found by reconnects since
        for sim in self.built.simulators:
            await sim.start()
            stack.push_async_callback(sim.stop)
        if self.power.meter is not None:
            stack.callback(self.power.meter.close)
        if self.demand is not None:
            stack.push_async_callback(self.demand.close)
        stack.push_async_callback(self.fleet.close)
        stack.callback(self.tasks.cancel_all)
        if before_connect is not None:
            before_connect(self)
        await self.fleet.connect_all(self.connect_progress)
        await self.save_identities()
        await self.poll(dispatch=False)
        views.log_answers(self)  # how many devices answer, and why the others do not

    async def save_identities(self) -> None:
        """Store what discovery found or changed since the last save (none: no write)."""
        await self.store.put_device_identities(self.identities.changes())

    async def close(self) -> None:
        """Close what :meth:`open` and :meth:`start` opened, without a shutdown posture."""
        self.tasks.stopping = True  # a job cancelled from here on is cut short, not failed
        await self._jobs.aclose()
        try:
            await self.recorder.dwell(self.devices.dwell.changes())
        finally:
            await self._resources.aclose()

    async def start(self) -> None:
        await self.open()
        # Active events come first: enforce them before any plan is made.
        await self.fast_path("start")
        await self.feeds.refresh_prices()
        await self.feeds.refresh_hashprice()
        if self.demand is not None:  # a first reading, before the start-up plan uses it
            await self.demand.poll()
        await self.replan("start")
        self._start_jobs()
        from scheduler.service.ven_daemon import start_ven  # OpenADR VEN, if GRIDSCHED_VTN_URL

        self.ven = await start_ven(self)
        if self.ven is not None:
            self._jobs.push_async_callback(self.ven.stop)  # removes its subscription
        self.serve_metrics()
        freeze_heap()  # set-up is done: long-lived objects leave the collector's full passes
        self.notifier.ready(f"planning {self.config.site.name}")

    def _start_jobs(self) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        d = self.config.daemon
        sched = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        opts: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}

        def every(fn: Any, seconds: float, name: str, **kw: Any) -> None:
            job = self.tasks.job(fn, name)
            sched.add_job(job, "interval", seconds=seconds, id=name, **opts, **kw)

        every(self.replan, d.replan_s, "replan", args=["schedule"])
        every(self.poll, d.poll_s, "poll")
        # The plan's next step is applied at its boundary, not at the first poll after it.
        step, now = dispatch_step_s(self.config), self.clock.time()
        first = datetime.fromtimestamp(now - now % step + step + 0.05, UTC)
        every(self.dispatch, step, "step", start_date=first)
        every(self.feeds.refresh_prices, d.price_feed.refresh_s, "prices")
        if d.hashprice_feed.kind is not FeedKind.CONFIG:
            every(self.feeds.refresh_hashprice, d.hashprice_feed.refresh_s, "hashprice")
        every(self.housekeeping, 60, "housekeeping")
        if self.demand is not None:
            every(self.poll_demand, self.demand.cfg.poll_s, "demand")
        # APScheduler logs a job's exception with its traceback; count it as a task failure
        sched.add_listener(self.tasks.job_failed, EVENT_JOB_ERROR)
        sched.add_listener(self.tasks.job_skipped, EVENT_JOB_MAX_INSTANCES)
        quiet_apscheduler_skips()  # said by job_skipped, in the daemon's words
        sched.start()
        self._jobs.callback(sched.shutdown, wait=False)
        self.scheduler = sched

    def bind_metrics(self) -> None:
        """Bind ``[metrics] listen`` now (``gridsched run`` does, before a device is
        touched); OSError naming the setting. No-op when unset or bound."""
        at = self.config.metrics.listen_at()
        if at is None or self._metrics_socket is not None:
            return
        from scheduler.service.exporter import bind

        try:
            self._metrics_socket = bind(at)
        except OSError as exc:
            raise OSError(
                f"[metrics] listen = {self.config.metrics.listen!r}: cannot listen there "
                f"({exc.strerror or exc}); choose another address"
            ) from exc
        self._resources.callback(self._metrics_socket.close)  # if never served

    def serve_metrics(self) -> None:
        """``/metrics`` on ``[metrics] listen``, answered by a process of its own."""
        self.bind_metrics()
        if self._metrics_socket is None:
            return
        from scheduler.service.exporter import MetricsExporter

        self.exporter = MetricsExporter(
            self.metrics_snapshot, asyncio.get_running_loop(), self._metrics_socket,
            self.config.daemon, self.config.metrics.render_wait_s,
        )  # fmt: skip
        self.exporter.start()
        self._jobs.callback(self.exporter.stop)

    async def stop(self, posture: Posture | None = None) -> list[Outcome]:
        """Stop the jobs, leave the devices in ``posture`` (the configured shutdown posture
        by default), confirm it by read-back, record it, and close everything."""
        posture = posture or self.config.daemon.shutdown_posture
        self.notifier.stopping()
        self.tasks.cancel_all()
        self.dispatcher.stop()  # nothing armed before the stop dispatches after it
        outcomes: list[Outcome] = []
        self.shutdown_report = {"told": 0, "confirmed": 0, "unconfirmed": 0, "failed": 0}
        try:
            await self._jobs.aclose()
            if posture is not Posture.HOLD:
                requests = {
                    i: ModeRequest("sleep")
                    for i, st in self.fleet.status.items()
                    if posture is Posture.SLEEP_ALL
                    or self.devices.classes[st.group].kind is DeviceKind.ASIC
                }
                outcomes = await self.fleet.apply(requests)
                self.devices.slept_now(outcomes)  # the next run counts their min-off
                await self.recorder.outcomes("shutdown", outcomes)
                limit_s = self.config.daemon.shutdown_confirm_s
                self.shutdown_report = await confirm_posture(self.fleet, outcomes, limit_s)
            report = {"posture": posture.value, **self.shutdown_report}
            await self.recorder.audit("shutdown", report)
            await self.recorder.dwell(self.devices.dwell.changes())
        finally:
            await self._resources.aclose()
        return outcomes

    def _verdict(self, out: Outcome) -> None:
        """A read-back verdict: the devices take it, then dispatch (a confirmed sleep may
        free the room its wakes waited for)."""
        self.devices.read_back(out)
        self.dispatcher.heard(out)

    def _feed_changed(self, what: str) -> None:
        if self.plans.plan is not None:  # before the first plan, start() plans anyway
            self.request_replan(what)

    # -- what the jobs, the HTTP API, the VEN and the metrics call ----------------------------

    def _billing_write_failed(self) -> None:
        """A billing-peak write the state file refused counts as a refused audit record
        (``gridsched_store_write_failures_total``, alert GridschedAuditNotWritten)."""
        self.counters.store_failures += 1

    async def accept(
        self, events: list[GridEvent], source: str, webhook_id: str | None, raw: str
    ) -> tuple[bool, list[str]]:
        return await self.signals.accept(events, source, webhook_id, raw)

    async def poll(self, dispatch: bool = True) -> None:
        await self.poller.poll(dispatch)

    async def replan(self, reason: str = "schedule") -> Plan | None:
        return await self.planning.replan(reason)

    def request_replan(self, reason: str, delay_s: float = 0.5) -> None:
        self.planning.request(reason, delay_s)

    async def dispatch(self) -> list[Outcome]:
        return await self.dispatcher.dispatch()

    async def fast_path(self, reason: str) -> list[Outcome]:
        return await self.shedder.shed(reason)

    def request_fast_path(self, reason: str) -> None:
        self.shedder.request(reason)

    async def poll_demand(self) -> None:
        """Read the serving engines; a demand change beyond the threshold re-plans."""
        if self.demand is not None and await self.demand.poll():
            self.request_replan("demand")

    async def housekeeping(self) -> None:
        await self.store.prune_webhook_ids(self.clock.time())

    @property
    def plan(self) -> Plan | None:
        return self.plans.plan

    def measured(self, expect: bool = False) -> dict[str, float]:
        return self.power.measured(self.clock.time(), expect)

    def meter_kw(self) -> float | None:
        return self.power.meter_kw()

    def cap_now(self, now: float | None = None) -> tuple[float, list[GridEvent]]:
        return self.signals.cap_now(self.clock.time() if now is None else now)

    def active_events(self, now: float | None = None) -> list[GridEvent]:
        return self.signals.active_events(self.clock.time() if now is None else now)

    def failsafe_reason(self, now: float | None = None) -> str | None:
        return self.failsafe.reason(self.clock.time() if now is None else now)

    def health_problem(self, now: float | None = None) -> str | None:
        return views.health_problem(self, self.clock.time() if now is None else now)

    def status(self) -> dict[str, Any]:
        return views.status(self)

    def inference_sla(self) -> dict[str, dict[str, Any]]:
        return views.inference_sla(self)
