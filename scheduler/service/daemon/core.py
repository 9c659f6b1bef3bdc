"""The daemon: plan, apply, watch, and answer the grid, in one asyncio process.

Jobs (APScheduler on the daemon's loop): re-plan every ``replan_s`` and at once after a
signal or a price change; poll telemetry every ``poll_s`` and dispatch the plan's current
step (power comes back in batches within the site's ramp limit); refresh prices.

A signal that lowers the cap below the measured load does not wait for the optimiser: it
is stored durably, then :meth:`Daemon.fast_path` walks a precomputed shed order (least
valuable kW first: least efficient miners asleep, then GPUs down to their lowest cap, then
GPUs asleep, never below committed inference) and commands every device in one concurrent
sweep; the re-plan follows. On restart the stored active events are enforced before
anything else. A price feed (or, when configured, the signal feed) silent past its limit
adds a fail-safe cap. A re-plan that does not end optimal is never applied: the last good
plan stays while it covers now, else the fail-safe posture holds (committed inference
serving, miners within the fail-safe cap); docs/daemon.md, "Fail-safe semantics".
SIGTERM leaves the devices in the configured posture.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from adapters import registry
from adapters.base import Applied, Health, ModeRequest, Telemetry
from adapters.fleet import Fleet, Outcome, freeze_heap
from adapters.meter import MeterError, MeterReading, ModbusMeter
from models.devices import DeviceClass, DeviceKind
from models.durations import parse_duration_s
from models.economics import hashprice_from_feed
from models.market import Series, demo_prices, load_price_file, site_prices
from models.signals import EventType, GridEvent
from models.site import FeedKind, Mining, Posture, SiteConfig
from scheduler.audit.store import Store
from scheduler.planner.inputs import (
    PlanInputs,
    SiteState,
    assemble_inputs,
    event_caps,
    peak_rules,
    slot_peaks,
)
from scheduler.planner.optimize import Planner
from scheduler.planner.plan import Plan
from scheduler.planner.shedding import value_per_kw
from scheduler.planner.solvers import SolverError, SolveStatus
from scheduler.planner.timegrid import TimeGrid, first_step_s, multires_grid, uniform_grid
from scheduler.service.demand_feed import DemandFeed
from scheduler.service.eventbook import EventBook
from scheduler.service.metrics import DRAIN_BUCKETS, FAST_BUCKETS, SOLVE_BUCKETS, Histogram
from scheduler.service.openadr_programs import Programs
from scheduler.service.power import (
    Compliance,
    DevicePower,
    SitePower,
    estimate_kw,
    judge,
    site_power,
)
from scheduler.service.sdnotify import Notifier

log = logging.getLogger("gridsched.daemon")
SLEEP = "sleep"
#: A cap signal whose write takes longer than this is shed while it is being written.
SHED_WHILE_WRITING_AFTER_S = 0.02
#: Solver outcomes whose plan may be applied. Not a time limit: a plan is extracted only
#: from an optimal solution (any other status gives a schedule of zero units, every device
#: asleep), so anything else keeps the last good plan or the fail-safe posture.
DISPATCHABLE = frozenset({SolveStatus.OPTIMAL})
#: Failures of a background task that come from the world (a device, the network, the
#: disk, the solver): logged in one line. Anything else is a bug and keeps its traceback.
EXPECTED_FAULTS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sqlite3.Error,
    SolverError,
)


@dataclass(frozen=True)
class ShedStep:
    device_id: str
    request: ModeRequest
    mode: str  # the mode name it leaves the device in
    saves_kw: float  # at the meter
    tokens_lost: float = 0.0
    #: (saves_kw, tokens_lost) when the device's earlier step in the order (a GPU's cap
    #: down) was not taken: a GPU put to sleep from its full mode loses all it serves.
    alone: tuple[float, float] | None = None


@dataclass
class Counters:
    """Monotonic totals for Prometheus (reset on restart, as counters may)."""

    energy_j: dict[str, float] = field(
        default_factory=lambda: {"asic": 0.0, "gpu": 0.0, "site": 0.0}
    )
    revenue_usd: dict[str, float] = field(
        default_factory=lambda: {"mining": 0.0, "inference_committed": 0.0, "inference_spot": 0.0}
    )
    energy_cost_usd: float = 0.0
    tokens: float = 0.0
    hashes: float = 0.0
    signals: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, result)
    openadr_payloads: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, acted)
    commands: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    plan_failures: int = 0  # re-plans that ended without a plan to apply
    task_failures: dict[str, int] = field(default_factory=dict)  # background task -> count
    store_failures: int = 0  # audit records the state file refused
    solve_s: Histogram = field(default_factory=lambda: Histogram(SOLVE_BUCKETS))
    fast_path_s: Histogram = field(default_factory=lambda: Histogram(FAST_BUCKETS))
    drain_s: Histogram = field(default_factory=lambda: Histogram(DRAIN_BUCKETS))

    def signal(self, source: str, result: str) -> None:
        self.signals[(source, result)] = self.signals.get((source, result), 0) + 1

    def openadr_payload(self, payload_type: str, acted: bool) -> None:
        key = (payload_type, "true" if acted else "false")
        self.openadr_payloads[key] = self.openadr_payloads.get(key, 0) + 1


def _fetch(kind: FeedKind, url: str | None, command: tuple[str, ...] | None, what: str) -> str:
    """A feed's body from an HTTP endpoint or a command's stdout."""
    if kind is FeedKind.HTTP:
        import httpx

        resp = httpx.get(url or "", timeout=30.0)
        resp.raise_for_status()
        return resp.text
    done = subprocess.run(
        list(command or ()), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} command exited {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout


class Daemon:
    def __init__(self, config: SiteConfig, db_path: str | Path | None = None) -> None:
        self.config = config
        d = config.daemon
        self.db_path = Path(db_path) if db_path else config.resolve(d.state_dir) / "gridsched.db"
        self.store = Store(self.db_path)
        self.built = registry.build(config)
        self.fleet = Fleet(
            self.built.adapters,
            self.built.groups,
            concurrency=d.command_concurrency,
            read_concurrency=d.read_concurrency,
            on_outcome=None,
        )
        self.classes: dict[str, DeviceClass] = {dc.name: dc for dc in config.devices}
        self.step_s = parse_duration_s(d.step)
        self.horizon_s = parse_duration_s(d.horizon)
        self.planner = Planner()
        self.plan: Plan | None = None
        self.plan_at: float | None = None
        self.plan_error: str | None = None
        #: what the shutdown posture came to: devices told, confirmed by read-back, not
        #: confirmed in time, failed (printed by `gridsched run`, recorded in the audit)
        self.shutdown_report: dict[str, Any] = {}
        self.solver_status = "none"
        self.prices: Series | None = None
        self.prices_ok_at: float | None = None
        self.price_error: str | None = None
        self.hashprice: float | None = None  # from the feed; None: [mining] as configured
        self.hashprice_ok_at: float | None = None
        self.hashprice_error: str | None = None
        self.last_signal_at = time.time()
        self.readings: dict[str, Telemetry] = {}
        self.modes: dict[str, str] = {}  # device -> mode as last applied (or read)
        self.shed_order: list[ShedStep] = []
        self.hold_dispatch = False  # after a fast-path shed, until the next plan
        self.last_dispatch = time.monotonic()
        self._ramp_tokens = 0.0  # kW of wake-ups the ramp limit allows now
        self.billing_peak_kw = config.tariff.billing_peak_so_far_kw
        self.counters = Counters()
        self.started_at = time.time()
        self._plan_lock = asyncio.Lock()
        self._dispatch_lock = asyncio.Lock()
        self._replan_pending = False
        self._fast_running = False
        self._fast_again: str | None = None
        self._book: EventBook | None = None  # loaded from the store on first use
        self.openadr_programs = Programs()  # their payload descriptors, events' defaults
        self._peak_rules: list[str] = []  # tariff rules seen, in order: their peak slots
        self._pending: dict[str, GridEvent] = {}  # caps being written, already enforced
        self._it_cache: dict[bool, SitePower] = {}
        self._answered: set[str] = set()  # devices read in the latest poll
        self._fresh: set[str] = set()  # of those, the ones with a power figure
        self._last_kw: dict[str, float] = {}  # each device's last power read, kept when unread
        meter = config.site.meter
        self.meter = ModbusMeter(meter) if meter is not None else None
        self.meter_reading: MeterReading | None = None  # the last good one
        self.meter_error: str | None = None  # why the latest poll has no meter reading
        # Commands sent but not yet seen in a reading: device -> (mode, applied, sent at).
        self._expected: dict[str, tuple[str, Applied, float]] = {}
        self._failsafe: str | None = None
        self.store_error: str | None = None  # the last audit write refused, until one lands
        self.cap_error: str | None = None  # why the cap in force is a fall-back
        self._cap_ok_kw: float | None = None  # the last cap computed without error
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_poll = time.monotonic()
        self._poll_lock = asyncio.Lock()
        self._confirm_pending = False
        self._staging = False
        self.scheduler: Any = None
        self.notifier = Notifier()
        self.ven: Any = None  # scheduler.service.ven.Ven when a VTN is configured
        # inference demand from the serving engines' metrics, and GPU drains ([inference.demand])
        self.demand = DemandFeed(config.inference) if config.inference.demand else None
        if self.demand is not None:
            self.demand.wire_drains(self.built.adapters, self.counters.drain_s.observe)
            if self.demand.cfg.gpu_engines:  # a drain runs inside the GPU's apply call
                bound_s = self.demand.cfg.drain_s + 10.0
                self.fleet.op_timeout_s = max(self.fleet.op_timeout_s, bound_s)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.start()
        for sim in self.built.simulators:
            await sim.start()
        await self.fleet.connect_all()
        await self.poll(dispatch=False)
        # Active events come first: enforce them before any plan is made.
        await self.fast_path("restart")
        await self.refresh_prices()
        await self.refresh_hashprice()
        if self.demand is not None:  # a first reading (a rate needs two): no re-plan asked
            await self.demand.poll()
        await self.replan("start")
        self._start_jobs()
        from scheduler.service.ven_daemon import start_ven  # OpenADR VEN, if GRIDSCHED_VTN_URL

        self.ven = await start_ven(self)
        freeze_heap()  # set-up is done: long-lived objects leave the collector's full passes
        self.notifier.ready(f"planning {self.config.site.name}")

    def _start_jobs(self) -> None:
        from apscheduler.events import EVENT_JOB_ERROR
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        d = self.config.daemon
        sched = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        opts: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        sched.add_job(
            self.replan, "interval", seconds=d.replan_s, args=["schedule"], id="replan", **opts
        )
        sched.add_job(self.poll, "interval", seconds=d.poll_s, id="poll", **opts)
        # The plan's next step is applied at its boundary, not at the first poll after it.
        step = self._dispatch_step_s()
        now = time.time()
        sched.add_job(
            self.dispatch,
            "interval",
            seconds=step,
            start_date=datetime.fromtimestamp(now - now % step + step + 0.05, UTC),
            id="step",
            **opts,
        )
        sched.add_job(
            self.refresh_prices, "interval", seconds=d.price_feed.refresh_s, id="prices", **opts
        )
        if d.hashprice_feed.kind is not FeedKind.CONFIG:
            sched.add_job(
                self.refresh_hashprice,
                "interval",
                seconds=d.hashprice_feed.refresh_s,
                id="hashprice",
                **opts,
            )
        sched.add_job(self.housekeeping, "interval", seconds=60, id="housekeeping", **opts)
        if self.demand is not None:
            poll_s = self.demand.cfg.poll_s
            sched.add_job(self.poll_demand, "interval", seconds=poll_s, id="demand", **opts)
        # APScheduler logs a job's exception with its traceback; count it as a task failure
        sched.add_listener(self._job_failed, EVENT_JOB_ERROR)
        sched.start()
        self.scheduler = sched

    async def stop(self, posture: Posture | None = None) -> list[Outcome]:
        posture = posture or self.config.daemon.shutdown_posture
        self.notifier.stopping()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for t in list(self._tasks):
            t.cancel()
        outcomes: list[Outcome] = []
        self.shutdown_report = {"told": 0, "confirmed": 0, "unconfirmed": 0, "failed": 0}
        if posture is not Posture.HOLD:
            requests = {
                i: ModeRequest("sleep")
                for i, st in self.fleet.status.items()
                if posture is Posture.SLEEP_ALL or self.classes[st.group].kind is DeviceKind.ASIC
            }
            outcomes = await self.fleet.apply(requests)
            await self._record_outcomes("shutdown", outcomes)
            self.shutdown_report = await self._confirm_shutdown(outcomes)
        if self.ven is not None:
            await self.ven.stop()  # removes its subscription at the VTN
        await self._audit("shutdown", {"posture": posture.value, **self.shutdown_report})
        await self.fleet.close()
        if self.demand is not None:
            await self.demand.close()
        if self.meter is not None:
            self.meter.close()
        for sim in self.built.simulators:
            await sim.stop()
        self.store.close()
        return outcomes

    async def _confirm_shutdown(self, outcomes: list[Outcome]) -> dict[str, Any]:
        """Read the devices told to take the shutdown posture back until each shows it, for
        at most ``shutdown_confirm_s`` (and no longer than their firmware's deadline): an
        accepted command is not a device asleep."""
        accepted = [o for o in outcomes if o.ok]
        wait_s = min(
            self.config.daemon.shutdown_confirm_s,
            max((self.fleet.by_id[o.device_id].confirm_deadline_s() for o in accepted), default=0),
        )
        seen = await self.fleet.confirm(accepted, wait_s) if accepted and wait_s > 0 else {}
        confirmed = sum(1 for s in seen.values() if s is not None)
        return {
            "told": len(outcomes),
            "confirmed": confirmed,
            "unconfirmed": len(accepted) - confirmed,
            "failed": len(outcomes) - len(accepted),
            "waited_s": round(wait_s, 1),
        }

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background as task ``name``; its failure is logged and
        counted (``gridsched_task_failures_total{task=name}``), never lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self._task_failed(task.get_name(), exc)

    def _job_failed(self, event: Any) -> None:
        """A scheduled job raised (APScheduler has logged it with its traceback)."""
        name = str(event.job_id)
        self.counters.task_failures[name] = self.counters.task_failures.get(name, 0) + 1

    def _task_failed(self, name: str, exc: BaseException) -> None:
        self.counters.task_failures[name] = self.counters.task_failures.get(name, 0) + 1
        if isinstance(exc, EXPECTED_FAULTS):  # a device, the disk: one line says it
            log.error("background task %s failed: %s: %s", name, type(exc).__name__, exc)
        else:  # a bug: its traceback is worth the lines
            log.error("background task %s failed", name, exc_info=exc)

    async def _audit(self, kind: str, payload: Any, at: float | None = None) -> bool:
        """Append to the audit trail. A write the state file refuses (disk full, I/O
        error) is logged, counted and shown in /v1/status, never raised: the fail-safe,
        dispatch and the watchdog must not wait on the disk. (Signals are different: one
        that cannot be stored is refused with 503, see ``accept``.)"""
        try:
            await self.store.record(kind, payload, at)
        except Exception as exc:
            self.counters.store_failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self.store_error:  # once per distinct error, not every poll
                log.error(
                    "audit record %r not written: %s",
                    kind,
                    error,
                    exc_info=None if isinstance(exc, EXPECTED_FAULTS) else exc,
                )
            self.store_error = error
            return False
        if self.store_error is not None:
            log.warning("audit records are written again (after: %s)", self.store_error)
            self.store_error = None
        return True

    # -- signals ------------------------------------------------------------------------------

    def _events(self) -> EventBook:
        if self._book is None:
            self._book = EventBook(self._load_events(time.time()))
        return self._book

    def active_events(self, now: float | None = None) -> list[GridEvent]:
        """Stored events that have not ended or been cancelled, plus any fail-safe cap."""
        now = time.time() if now is None else now
        return self._with_pending(self._events().live(now), now, started=False)

    def _with_pending(self, events: list[GridEvent], now: float, started: bool) -> list[GridEvent]:
        """The book's events with the caps still being written in place of theirs (not ended
        at ``now``; with ``started``, in force at it), plus the fail-safe cap while a feed
        is silent."""
        if self._pending:
            events = [e for e in events if e.id not in self._pending]
            events += [
                e
                for e in self._pending.values()
                if now < e.end_utc.timestamp() and (not started or e.start_utc.timestamp() <= now)
            ]
        if self.failsafe_reason(now) is not None:
            events.append(
                GridEvent(
                    id="failsafe",
                    type=EventType.CURTAIL,
                    start=datetime.fromtimestamp(now - 1, UTC),
                    limit_kw=self.failsafe_cap_kw(),
                    source="failsafe",
                )
            )
        return events

    def _load_events(self, now: float) -> list[GridEvent]:
        """The store's events in force or to come (on start; then kept in step by accept)."""
        out: list[GridEvent] = []
        for raw in self.store.signals(include_ended_after=now):
            body = {k: v for k, v in raw.items() if not k.startswith("_")}
            try:
                out.append(GridEvent.model_validate(body))
            except ValueError:
                log.exception("stored event %s no longer validates", raw.get("id"))
        return out

    def _remember(self, events: list[GridEvent]) -> None:
        """Mirror what add_signals did in the store (cancels, prefix cancels, upserts)."""
        book = self._events()
        for ev in events:
            if ev.type is EventType.CANCEL:
                if ev.id.endswith(":*"):
                    book.drop_prefix(ev.id[:-1])
                else:
                    book.drop(ev.id)
            else:
                book.put(ev)

    def failsafe_cap_kw(self) -> float:
        d = self.config.daemon
        if d.failsafe_cap_kw is not None:
            return d.failsafe_cap_kw
        levels = self.config.tariff.dr_levels_kw
        return levels.get("1", self.config.site.interconnect_kw)

    def failsafe_reason(self, now: float) -> str | None:
        """Why the site is held at the fail-safe cap (a silent feed, no good plan covering
        now), or None."""
        d = self.config.daemon
        feed = d.price_feed
        reasons = []
        if self.prices_ok_at is not None and now - self.prices_ok_at > feed.silent_after_s:
            silent = now - self.prices_ok_at
            reasons.append(
                f"price feed silent for {silent:.0f} s (limit {feed.silent_after_s:g} s)"
            )
        if d.signal_silence_s is not None and now - self.last_signal_at > d.signal_silence_s:
            silent = now - self.last_signal_at
            reasons.append(
                f"signal feed silent for {silent:.0f} s (limit {d.signal_silence_s:g} s)"
            )
        if (gap := self.plan_gap(now)) is not None:
            reasons.append(gap)
        return "; ".join(reasons) or None

    def plan_gap(self, now: float) -> str | None:
        """Why no good plan covers ``now`` (None while one does, or while the first plan is
        still being made): the site then holds the fail-safe posture."""
        if self.plan is not None and self.plan_index(now) is not None:
            return None
        if self.plan is None:
            if self.plan_error is None:
                return None  # starting: the first plan is on its way
            return f"no good plan covers now (re-plan failed: {self.plan_error})"
        ended = datetime.fromtimestamp(float(self.plan.ends_s[-1]), UTC).isoformat()
        why = f"; re-plan failed: {self.plan_error}" if self.plan_error else ""
        return f"no good plan covers now (the last good plan ended at {ended}{why})"

    def health_problem(self, now: float | None = None) -> str | None:
        """What makes the daemon unhealthy (``/healthz`` 503), or None: no plan yet, a
        failed re-plan (even while the last good plan still covers now), a stale plan."""
        now = time.time() if now is None else now
        age = self.plan_age_s(now)
        if self.plan_error is not None:
            return f"last re-plan failed: {self.plan_error}"
        if age is None:
            return "no plan yet"
        if age > self.config.daemon.max_plan_age_s:
            return "plan is stale"
        return self.plan_gap(now)

    async def accept(
        self, events: list[GridEvent], source: str, webhook_id: str | None, raw: str
    ) -> tuple[bool, list[str]]:
        """Store events durably (the caller answers 2xx after this), then act on them.

        A write normally lands in a few ms: the answer goes out, then the fast path sheds.
        If the disk is slower than ``SHED_WHILE_WRITING_AFTER_S``, a cap does not wait for
        it (shedding is the safe direction): it counts as in force and the fast path starts
        while the write goes on; if the write then fails, the event is dropped again and a
        re-plan restores what was shed. A write that lands is remembered even when the
        caller has gone away meanwhile.
        """
        now = time.time()
        self.last_signal_at = now
        bodies = []
        keep_until = now + 600.0
        for ev in events:
            body = ev.model_dump(mode="json", exclude_none=True)
            if "end" in body:
                body.pop("duration", None)  # resolved into end; both would not validate again
            end = ev.end_utc.timestamp() if ev.type is not EventType.CANCEL else now
            body["_ends_at"] = min(end, 4e11)
            keep_until = max(keep_until, min(end, now + 400 * 86400))
            bodies.append(body)

        async def write() -> tuple[bool, list[str]]:
            stored, ids = await self.store.add_signals(bodies, source, webhook_id, raw, keep_until)
            if stored:
                self._remember(events)
            return stored, ids

        writing = asyncio.ensure_future(write())
        writing.add_done_callback(_log_write_failure)
        caps = {e.id: e for e in events if e.type in (EventType.CURTAIL, EventType.ALERT)}
        early = False
        if caps:
            done, _ = await asyncio.wait({writing}, timeout=SHED_WHILE_WRITING_AFTER_S)
            if not done:
                early = True
                self._pending.update(caps)
                self.request_fast_path(f"signal {', '.join(caps)[:120]} (being written)")
        try:
            stored, ids = await asyncio.shield(writing)
        except asyncio.CancelledError:
            raise  # the write goes on and is remembered when it lands
        except Exception:
            if early:  # not accepted: the plan decides again without it
                self.request_replan("a signal could not be stored", delay_s=0.0)
            raise
        finally:
            if early:
                for key, ev in caps.items():
                    if self._pending.get(key) is ev:
                        del self._pending[key]
        self.counters.signal(source, "accepted" if stored else "duplicate")
        if stored:
            # a cancel can bring a lower cap of another event back into force
            if (caps and not early) or any(ev.type is EventType.CANCEL for ev in events):
                self.request_fast_path(f"signal {', '.join(ids)[:120]}")
            self.request_replan("signal")
        return stored, ids

    def request_fast_path(self, reason: str) -> None:
        """Run the fast path now, or once more right after the one running (coalesced)."""
        if self._fast_running:
            self._fast_again = reason
            return
        self._fast_running = True

        async def run(why: str) -> None:
            try:
                while True:
                    await self.fast_path(why)
                    if self._fast_again is None:
                        return
                    why, self._fast_again = self._fast_again, None
            finally:
                self._fast_running = False

        self.spawn(run(reason), "fast-path")

    # -- measurements -------------------------------------------------------------------------

    def measured(self, expect: bool = False) -> dict[str, float]:
        """Site power now: IT by kind, import (what metrics, status and the audit trail
        report), and how much of it is estimated.

        Every managed device counts: at its reading from the latest poll, else at its last
        known power (its mode's nameplate if never read; see ``scheduler.service.power``),
        never at 0 kW. With a site meter read in the latest poll, import is the meter's.

        ``expect``: a device commanded since its reading counts at its new mode's power
        until a reading shows it there; what the fast path and dispatch decide on, so that a
        second curtail right after a first does not shed the same kW twice (with a meter:
        its reading, moved by what the commands not yet seen change).
        """
        cached = self._it_cache.get(expect)
        if cached is None:
            cached = self._it_cache[expect] = self._site_power(expect)
        p = cached
        out = {
            "asic_kw": p.asic_kw,
            "gpu_kw": p.gpu_kw,
            "unmanaged_kw": p.unmanaged_kw,
            "import_kw": p.devices_import_kw,
            "devices_import_kw": p.devices_import_kw,
            "estimated_kw": p.estimated_kw,
            "devices_unread": float(p.devices_unread),
        }
        meter_kw = self.meter_kw()
        if meter_kw is not None:
            # the gap (unmetered loads, PUE, unread devices) as the meter saw it
            seen = p if not expect else self._it_cache.get(False) or self._site_power(False)
            out["import_kw"] = meter_kw + p.devices_import_kw - seen.devices_import_kw
        return out

    def _site_power(self, expect: bool) -> SitePower:
        devices = {
            i: (self.classes[st.group].kind.value, self._device_power(i, expect))
            for i, st in self.fleet.status.items()
        }
        unmanaged = 0.0  # classes without adapters: as planned
        managed = {st.group for st in self.fleet.status.values()}
        if self.plan is not None:
            k = self.plan_index(time.time())
            for cp in self.plan.classes:
                if cp.name not in managed and k is not None:
                    unmanaged += float(cp.power_kw[k])
        worst = sum(  # and at most every unit at its top mode
            dc.units * max(m.power_kw for m in dc.modes)
            for dc in self.config.devices
            if dc.name not in managed
        )
        site = self.config.site
        return site_power(devices, unmanaged, site.pue, site.base_load_kw, worst)

    def _device_power(self, device_id: str, expect: bool) -> DevicePower:
        dc = self._class_of(device_id)
        told = self._expected.get(device_id) if expect else None
        t = self.readings.get(device_id)
        read = device_id in self._fresh and t is not None and t.power_w is not None
        if told is not None:
            kw = self._mode_kw(dc, told[0])
            return DevicePower(kw, read, kw)
        if read and t is not None and t.power_w is not None:
            return DevicePower(t.power_w / 1000.0, True, t.power_w / 1000.0)
        mode = self.modes.get(device_id)
        kw, worst = estimate_kw(
            self._last_kw.get(device_id),
            None if mode is None else self._mode_kw(dc, mode),
            max(m.power_kw for m in dc.modes),
        )
        return DevicePower(kw, False, worst)

    def _note_power(self, readings: Mapping[str, Telemetry]) -> None:
        """Which devices this poll read with a power figure; the last power of each is kept
        for when it cannot be read."""
        self._answered = set(readings)
        self._fresh = {i for i, t in readings.items() if t.power_w is not None}
        for i in self._fresh:
            self._last_kw[i] = (readings[i].power_w or 0.0) / 1000.0

    def meter_kw(self) -> float | None:
        """The site meter's import from the latest poll (None: no meter, or not read)."""
        if self.meter_reading is None or self.meter_error is not None:
            return None
        return self.meter_reading.import_w / 1000.0

    def _compliance_record(self, now: float) -> dict[str, Any]:
        """What the audit trail keeps of compliance with each telemetry record: the state,
        why, where import came from, and the meter's view when there is one."""
        c = self.compliance(now)
        out: dict[str, Any] = {
            "compliance": c.state.value,
            "compliance_reason": c.reason,
            "import_source": c.source,
        }
        if c.meter_kw is not None:
            out["meter_kw"] = round(c.meter_kw, 3)
            out["meter_gap_kw"] = round(c.meter_gap_kw or 0.0, 3)
        if c.meter_error is not None:
            out["meter_error"] = c.meter_error
        return out

    async def _read_meter(self) -> None:
        """Read the site meter (with the fleet, each poll). A failure is said once per
        change, in the log and in /v1/status; import falls back to the devices' sum."""
        if self.meter is None:
            return
        try:
            self.meter_reading = await self.meter.read()
        except MeterError as exc:
            if str(exc) != self.meter_error:
                log.warning("site meter: %s; import is the devices' sum meanwhile", exc)
            self.meter_error = str(exc)
            return
        if self.meter_error is not None:
            log.warning("site meter read again (after: %s)", self.meter_error)
        self.meter_error = None

    def compliance(self, now: float | None = None) -> Compliance:
        """Whether import meets the cap in force now: met, not met or unverified, and why."""
        cap, _ = self.cap_now(now)
        cached = self._it_cache.get(False)
        if cached is None:
            cached = self._it_cache[False] = self._site_power(False)
        return judge(cap, cached, self.meter_kw(), self.meter_error)

    def cap_now(self, now: float | None = None) -> tuple[float, list[GridEvent]]:
        """The import cap in force at ``now`` and the events that make it. An event whose
        cap cannot be computed counts at the most restrictive cap that can be justified
        (the fail-safe cap, or the last cap computed lower), never as no cap at all."""
        now = time.time() if now is None else now
        events = self._with_pending(self._events().caps_in_force(now), now, started=True)
        grid = TimeGrid(
            np.array([int(now)], dtype=np.int64), np.array([int(now) + 1], dtype=np.int64)
        )
        base_kw = self.config.site.base_load_kw
        error: str | None = None
        try:
            cap_kw = float(event_caps(self.config, grid, events, base_kw)[0][0])
        except Exception:
            cap_kw, error = self._fallback_cap(grid, events)
        cap_kw = min(cap_kw, self.config.site.interconnect_kw)
        if error != self.cap_error:  # once per change: cap_now runs at every scrape
            if error is not None:
                log.error("cap computation failed; enforcing %.1f kW: %s", cap_kw, error)
            else:
                log.warning("cap computation works again: %.1f kW", cap_kw)
            self.cap_error = error
        if error is None:
            self._cap_ok_kw = cap_kw
        return cap_kw, events

    def _fallback_cap(self, grid: TimeGrid, events: list[GridEvent]) -> tuple[float, str]:
        """Each event's cap on its own; one that raises counts at the fail-safe cap or the
        last good cap, whichever is lower."""
        last_kw = math.inf if self._cap_ok_kw is None else self._cap_ok_kw  # 0 kW is a cap
        fallback_kw = min(self.failsafe_cap_kw(), last_kw)
        cap_kw = math.inf
        problems = []
        for ev in events:
            try:
                cap, _ = event_caps(self.config, grid, [ev], self.config.site.base_load_kw)
                cap_kw = min(cap_kw, float(cap[0]))
            except Exception as exc:
                text = " ".join(str(exc).split())  # a ConfigError spans lines
                problems.append(f"event {ev.id!r}: {type(exc).__name__}: {text}")
                cap_kw = min(cap_kw, fallback_kw)
        if not problems:  # the events together fail where each alone does not
            problems.append("the events in force together")
            cap_kw = min(cap_kw, fallback_kw)
        why = "; ".join(problems)
        return cap_kw, f"{why}: enforcing {cap_kw:g} kW (fail-safe or last good cap)"

    async def poll(self, dispatch: bool = True) -> None:
        """Read the fleet and act on what it shows (one at a time: the scheduled poll and a
        confirmation after a shed may meet)."""
        async with self._poll_lock:
            await self._poll(dispatch)

    def _confirm_soon(self) -> None:
        """After a shed, read the fleet again once it should have reacted rather than at the
        next regular poll (up to ``poll_s`` later): metrics, status and the audit trail
        show the response within seconds, and a device that did not follow is seen sooner."""
        d = self.config.daemon
        if not 0 < d.confirm_after_s < d.poll_s or self._confirm_pending:
            return
        self._confirm_pending = True

        async def later() -> None:
            try:
                await asyncio.sleep(d.confirm_after_s)
                await self.poll()
            finally:
                self._confirm_pending = False

        self.spawn(later(), "confirm")

    async def _poll(self, dispatch: bool) -> None:
        t0 = time.monotonic()
        readings, _ = await asyncio.gather(self.fleet.read_all(), self._read_meter())
        now = time.time()
        dt = max(0.0, t0 - self._last_poll)
        self._last_poll = t0
        self.readings.update(readings)
        self._note_power(readings)
        self._settle_expected(readings, time.time())
        self._it_cache.clear()
        drifted = 0
        for device_id, st in self.fleet.status.items():
            if st.health is Health.UNREACHABLE:
                self.readings.pop(device_id, None)
            t = readings.get(device_id)
            if t is None:
                continue
            if device_id not in self.modes:
                self.modes[device_id] = self._mode_from_reading(device_id, t)
            elif self._drifted(device_id, t):
                drifted += 1
        m = self.measured()
        cap, events = self.cap_now(now)
        self.shed_order = self.compute_shed_order()
        if drifted and self.measured(expect=True)["import_kw"] > cap + 1e-6:
            # e.g. a miner that rebooted into mining during a DR event: shed now, do not
            # wait for the plan
            self.request_fast_path(f"{drifted} devices left their mode; load above the cap")
        self._integrate(m, dt, now)
        self.billing_peak_kw = max(self.billing_peak_kw, m["import_kw"])
        counts = self.fleet.health_counts()
        await self._audit(
            "telemetry",
            {
                **{k: round(v, 3) for k, v in m.items()},
                "cap_kw": None if math.isinf(cap) else round(cap, 3),
                "events": [e.id for e in events],
                "health": {h.value: n for h, n in counts.items()},
                **self._compliance_record(now),
            },
            now,
        )
        failsafe = self.failsafe_reason(now)
        if (failsafe is None) != (self._failsafe is None):
            self._failsafe = failsafe
            if failsafe is not None:
                log.warning("fail-safe cap %.0f kW: %s", self.failsafe_cap_kw(), failsafe)
                self.request_fast_path(f"fail-safe: {failsafe}")
            else:
                log.warning("fail-safe over: the feeds answer and a good plan covers now")
            cap_kw = self.failsafe_cap_kw()
            await self._audit("failsafe", {"reason": failsafe, "cap_kw": cap_kw}, now)
            self.request_replan("fail-safe", delay_s=0.0)
        elif failsafe is not None:
            self._failsafe = failsafe
        if (gap := self.plan_gap(now)) is not None:
            await self.safe_posture(gap)  # every poll: devices that drift are put back
        if dispatch:
            await self.dispatch()
        if self.config.daemon.stage_ahead_s and not self._staging:
            self._staging = True
            self.spawn(self.stage_ahead(), "stage")
        self.notifier.watchdog(
            f"import {m['import_kw']:.0f} kW, cap {cap:.0f} kW, "
            f"{counts[Health.UNREACHABLE]} unreachable"
        )

    def _integrate(self, m: dict[str, float], dt: float, now: float) -> None:
        c = self.counters
        c.energy_j["asic"] += m["asic_kw"] * 1000.0 * dt
        c.energy_j["gpu"] += m["gpu_kw"] * 1000.0 * dt
        c.energy_j["site"] += m["import_kw"] * 1000.0 * dt
        ths = sum(t.hashrate_ths or 0.0 for t in self.readings.values())
        tok = sum(t.tokens_s or 0.0 for t in self.readings.values())
        c.hashes += ths * 1e12 * dt
        c.tokens += tok * dt
        hp = self.mining().net_hashprice
        c.revenue_usd["mining"] += ths * hp * dt / 86400.0
        inf = self.config.inference
        committed = min(tok, self._committed_now(now))
        c.revenue_usd["inference_committed"] += committed * dt * inf.committed_usd_per_mtok / 1e6
        spot = min(max(tok - committed, 0.0), inf.spot_tokens_s)
        c.revenue_usd["inference_spot"] += spot * dt * inf.spot_usd_per_mtok / 1e6
        price = self.price_now(now)
        if price is not None:
            c.energy_cost_usd += m["import_kw"] * dt / 3600.0 / 1000.0 * price

    def _committed_now(self, now: float) -> float:
        inf = self.config.inference
        if not inf.hourly_profile:
            return inf.committed_tokens_s
        hour = datetime.fromtimestamp(now, self.config.site.tz).hour
        return inf.committed_tokens_s * inf.hourly_profile[hour]

    def price_now(self, now: float) -> float | None:
        if self.plan is not None:
            k = self.plan_index(now)
            if k is not None:
                return float(self.plan.price_usd_per_mwh[k])
        return None

    def _class_of(self, device_id: str) -> DeviceClass:
        return self.classes[self.fleet.status[device_id].group]

    def _mode_from_reading(self, device_id: str, t: Telemetry) -> str:
        dc = self._class_of(device_id)
        if t.state == "sleeping":
            return SLEEP
        if t.target_w is None:
            return dc.modes[0].name
        return min(
            dc.modes, key=lambda m: abs(dc.device_target_w(m.name) - (t.target_w or 0.0))
        ).name

    # -- the fast path ------------------------------------------------------------------------

    def _mode_kw(self, dc: DeviceClass, mode: str) -> float:
        m = dc.mode(mode)
        if m is None:
            if mode == SLEEP:
                return dc.idle_kw
            raise KeyError(f"class {dc.name!r} has no mode {mode!r}")
        return m.power_kw

    def _commanded(self, outcomes: Iterable[Outcome], modes: Mapping[str, str]) -> None:
        """Note the modes that devices accepted (``modes``: device -> mode asked)."""
        now = time.time()
        for o in outcomes:
            if o.ok and o.applied is not None:
                self.modes[o.device_id] = modes[o.device_id]
                self._expected[o.device_id] = (modes[o.device_id], o.applied, now)
        self._it_cache.clear()

    def _drifted(self, device_id: str, t: Telemetry) -> bool:
        """A device that sleeps or runs against its last command (a reboot, an operator, a
        crash) takes the mode it reads, so that dispatch puts it back to the plan's."""
        mode = self.modes[device_id]
        if device_id in self._expected or t.state not in ("sleeping", "running"):
            return False  # on its way, or between states
        if (t.state == "sleeping") == (mode == SLEEP):
            return False
        self._adopt_reading(device_id, t, f"was set to {mode}: putting it back")
        return True

    def _adopt_reading(self, device_id: str, t: Telemetry, why: str) -> None:
        """Take the mode a device reads as its own, so that dispatch sends the plan's again."""
        seen = self._mode_from_reading(device_id, t)
        log.warning("%s reads %s but %s", device_id, seen, why)
        self.modes[device_id] = seen

    def _settle_expected(self, readings: Mapping[str, Telemetry], now: float) -> None:
        """Forget expectations that a reading confirms. One older than the device's
        confirmation deadline (its firmware family's, ``confirm_deadline_s``) is a device
        that did not follow: its mode becomes what it reads, so that dispatch sends the
        plan's mode again."""
        for device_id, (mode, applied, at) in list(self._expected.items()):
            t = readings.get(device_id)
            adapter = self.fleet.by_id[device_id]
            confirmed = t is not None and t.at >= at and adapter.confirms(applied, t)
            deadline_s = adapter.confirm_deadline_s()
            if confirmed:
                del self._expected[device_id]
            elif now - at > deadline_s:
                del self._expected[device_id]
                if t is not None and t.at >= at:
                    why = f"did not reach {mode} within {deadline_s:g} s: sending it again"
                    self._adopt_reading(device_id, t, why)

    def compute_shed_order(self) -> list[ShedStep]:
        """Least valuable kW first (the order of ``scheduler.planner.shedding``, over devices);
        precomputed so that a signal needs no thinking."""
        pue = self.config.site.pue
        miners: list[tuple[float, ShedStep]] = []
        downcaps: list[tuple[float, ShedStep]] = []
        sleeps: list[tuple[float, ShedStep]] = []
        for device_id, st in self.fleet.status.items():
            dc = self.classes[st.group]
            # A device that cannot be read stays in the order: it may be drawing (at its
            # mode, or the class's top mode if it was never read).
            m = dc.mode(self.modes.get(device_id) or _top_mode(dc))
            if m is None:  # asleep
                continue
            saves = pue * (m.power_kw - dc.idle_kw)
            if dc.kind is DeviceKind.ASIC:
                step = ShedStep(device_id, ModeRequest("sleep"), SLEEP, saves)
                miners.append((float(value_per_kw(m.hashrate_ths, saves)), step))
                continue
            low = min((x for x in dc.modes if x.throughput_tokens_s > 0), key=lambda x: x.power_kw)
            if low.name != m.name:
                lost = m.throughput_tokens_s - low.throughput_tokens_s
                down_kw = pue * (m.power_kw - low.power_kw)
                step = ShedStep(
                    device_id,
                    ModeRequest("run", dc.device_target_w(low.name)),
                    low.name,
                    down_kw,
                    lost,
                )
                downcaps.append((float(value_per_kw(lost, down_kw)), step))
            low_kw = pue * (low.power_kw - dc.idle_kw)
            alone = (saves, m.throughput_tokens_s)  # asleep straight from its mode now
            step = ShedStep(
                device_id, ModeRequest("sleep"), SLEEP, low_kw, low.throughput_tokens_s, alone
            )
            sleeps.append((float(value_per_kw(low.throughput_tokens_s, low_kw)), step))
        order: list[ShedStep] = []
        for group in (miners, downcaps, sleeps):
            order += [s for _, s in sorted(group, key=lambda x: x[0])]
        return order

    def _reading_gaps(self) -> tuple[float, dict[str, float]]:
        """How far readings of awake devices lag their modes, at the meter: the kW that
        devices reading below their mode's power will still add (in total), and the kW
        each device reading above it draws beyond the shed order's figure. Devices with a
        command not yet confirmed already count at their new mode."""
        pue = self.config.site.pue
        below = 0.0
        above: dict[str, float] = {}
        for device_id, t in self.readings.items():
            mode = self.modes.get(device_id, SLEEP)
            if mode == SLEEP or device_id in self._expected or t.power_w is None:
                continue
            m = self._class_of(device_id).mode(mode)
            if m is None:
                continue
            gap = m.power_kw - t.power_w / 1000.0
            if gap > 0:
                below += pue * gap
            elif gap < 0:
                above[device_id] = -pue * gap
        return below, above

    def serving_tokens(self) -> float:
        total = 0.0
        for device_id, mode in self.modes.items():
            dc = self._class_of(device_id)
            m = dc.mode(mode)
            if dc.kind is DeviceKind.GPU and m is not None:
                total += m.throughput_tokens_s
        return total

    async def fast_path(self, reason: str) -> list[Outcome]:
        """Shed at once, by the precomputed order, to the cap in force now."""
        t0 = time.perf_counter()
        cap, events = self.cap_now()
        load = self.measured(expect=True)["import_kw"]
        below, above = self._reading_gaps()
        # Shed until what stays on fits under the cap at the larger of its reading and its
        # mode's power: a miner still ramping up reads below its mode (the order's figure)
        # and would climb back over the cap; one drawing more than its mode saves more.
        excess = load + below - cap
        if excess <= 1e-6 or not self.fleet.status:
            return []
        unread = self.fleet.status.keys() - self._fresh
        floor = self._committed_now(time.time())
        tokens = self.serving_tokens()
        chosen: dict[str, ShedStep] = {}
        for step in self.shed_order:
            if excess <= 0:
                break
            saves_kw, lost = step.saves_kw, step.tokens_lost
            if step.alone is not None and step.device_id not in chosen:
                saves_kw, lost = step.alone  # not capped down first: it loses all it serves
            if lost > 0 and tokens - lost < floor:
                continue  # committed inference is served first
            if step.device_id in chosen and step.request.action != "sleep":
                continue
            if step.device_id in unread:
                continue  # told below, but not counted on
            chosen[step.device_id] = step  # a GPU already capped down may still go to sleep
            excess -= saves_kw + above.get(step.device_id, 0.0)
            tokens -= lost
        # Devices that cannot be read count in ``load`` at their last known power and may
        # be drawing it: each is told too (its first step), but what it would save is not
        # counted on: it may not follow, and nothing read would show it.
        for step in self.shed_order:
            if step.device_id not in unread or step.device_id in chosen:
                continue
            if step.tokens_lost > 0 and tokens - step.tokens_lost < floor:
                continue
            chosen[step.device_id] = step
            tokens -= step.tokens_lost
        if not chosen:
            return []
        self.hold_dispatch = True
        # Miners (and GPUs that need no drain) at once; GPUs that drain their requests
        # before powering down after, so that no drain delays a miner's shed.
        drained = self.demand.drains(chosen) if self.demand is not None else set()
        first = {i: s.request for i, s in chosen.items() if i not in drained}
        outcomes = await self.fleet.apply(first) if first else []
        elapsed = time.perf_counter() - t0
        self.counters.fast_path_s.observe(elapsed)
        if drained:
            outcomes += await self.fleet.apply({i: chosen[i].request for i in drained})
        self._commanded(outcomes, {i: s.mode for i, s in chosen.items()})
        self._confirm_soon()
        log.warning(
            "fast path (%s): load %.0f kW > cap %.0f kW; %d devices commanded in %.0f ms",
            reason,
            load,
            cap,
            len(chosen),
            elapsed * 1000,
        )
        await self._record_outcomes(
            "fast-path",
            outcomes,
            {
                "reason": reason,
                "load_kw": round(load, 3),
                "cap_kw": cap,
                "events": [e.id for e in events],
            },
        )
        self.shed_order = self.compute_shed_order()
        return outcomes

    async def safe_posture(self, why: str) -> list[Outcome]:
        """No good plan covers now: hold the fail-safe posture. Committed inference serves
        (GPUs asleep or capped down are raised to their fullest mode until the committed
        tokens are met); with ``failsafe_posture = "sleep_miners"`` every miner sleeps;
        then the fast path sheds to the fail-safe cap (miners first, never below the
        committed floor). Dispatch has no plan step to follow meanwhile."""
        sleep_miners = self.config.daemon.failsafe_posture is Posture.SLEEP_MINERS
        need = self._committed_now(time.time()) - self.serving_tokens()
        requests: dict[str, ModeRequest] = {}
        chosen: dict[str, str] = {}
        for device_id, st in sorted(self.fleet.status.items()):
            if st.health is Health.UNREACHABLE:
                continue
            dc = self.classes[st.group]
            mode = self.modes.get(device_id, SLEEP)
            if dc.kind is DeviceKind.ASIC:
                if sleep_miners and mode != SLEEP:
                    requests[device_id], chosen[device_id] = ModeRequest("sleep"), SLEEP
                continue
            if need <= 0:
                continue
            best = max(dc.modes, key=lambda x: x.throughput_tokens_s)
            current = dc.mode(mode)
            gain = best.throughput_tokens_s - (current.throughput_tokens_s if current else 0.0)
            if gain > 0:
                requests[device_id] = registry.mode_request(dc, best.name)
                chosen[device_id] = best.name
                need -= gain
        outcomes: list[Outcome] = []
        if requests:
            outcomes = await self.fleet.apply(requests)
            self._commanded(outcomes, chosen)
            log.warning("fail-safe posture (%s): %d devices commanded", why, len(requests))
            await self._record_outcomes("fail-safe", outcomes, {"reason": why})
            self.shed_order = self.compute_shed_order()
        self.request_fast_path(f"fail-safe: {why}")
        return outcomes

    async def _record_outcomes(
        self, why: str, outcomes: Iterable[Outcome], extra: dict[str, Any] | None = None
    ) -> None:
        rows = []
        for o in outcomes:
            self.counters.commands["ok" if o.ok else "failed"] += 1
            rows.append(
                {
                    "device": o.device_id,
                    "request": o.request.describe(),
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
            await self._audit("commands", {"why": why, **(extra or {}), "outcomes": rows})

    # -- planning -----------------------------------------------------------------------------

    async def poll_demand(self) -> None:
        """Read the serving engines; a demand change beyond the threshold re-plans."""
        if self.demand is not None and await self.demand.poll():
            self.request_replan("demand")

    def inference_sla(self) -> dict[str, dict[str, Any]]:
        """Latency objectives met / missed / unverified (unverified without a feed)."""
        if self.demand is not None:
            return self.demand.objectives()
        inf = self.config.inference
        return {
            k.removesuffix("_s"): {"state": "unverified", "value_s": None, "target_s": v}
            for k in ("ttft_p95_s", "itl_p95_s")
            if (v := getattr(inf, k)) is not None
        }

    def request_replan(self, reason: str, delay_s: float = 0.5) -> None:
        """Re-plan soon. Requests within ``delay_s`` (a burst of signals) share one plan;
        the fast path has already acted on anything urgent."""
        if not self._replan_pending:
            self._replan_pending = True

            async def later() -> None:
                await asyncio.sleep(delay_s)
                await self.replan(reason)

            self.spawn(later(), "replan")

    def _dispatch_step_s(self) -> int:
        """Length of the plan's first steps: its boundaries are where dispatch acts."""
        d = self.config.daemon
        return first_step_s(d.resolution) if d.resolution else self.step_s

    def _grid(self, now: float) -> TimeGrid:
        d = self.config.daemon
        step = self._dispatch_step_s()
        start = int(now) - int(now) % step
        if d.resolution:
            return multires_grid(start, self.horizon_s, d.resolution)
        return uniform_grid(start, self.horizon_s, step)

    def _state(self) -> SiteState:
        units_on: dict[str, int] = {}
        for device_id, mode in self.modes.items():
            group = self.fleet.status[device_id].group
            units_on[group] = units_on.get(group, 0) + (mode != SLEEP)
        load = self.measured(expect=True)["import_kw"] if self.readings else None
        return SiteState(
            current_load_kw=load, units_on=units_on or None, billing_peak_kw=self.billing_peak_kw
        )

    def _available_config(self) -> SiteConfig:
        """The config with each managed class's units limited to the devices that answer
        (were read in the latest poll)."""
        devices = []
        for dc in self.config.devices:
            ids = self.fleet.ids(dc.name)
            if ids:
                alive = sum(i in self._answered for i in ids)
                dc = dc.model_copy(update={"available": min(alive, dc.count)})
            devices.append(dc)
        # Devices that do not answer are out of the plan's units but may still draw: their
        # estimated power is a load the plan cannot move.
        site = self.config.site
        stuck_kw = sum(
            self._device_power(i, False).kw for i in self.fleet.status if i not in self._answered
        )
        if stuck_kw > 0:
            site = site.model_copy(update={"base_load_kw": site.base_load_kw + site.pue * stuck_kw})
        return self.config.model_copy(
            update={"devices": tuple(devices), "mining": self.mining(), "site": site}
        )

    def _keep_cap_margin(self, inputs: PlanInputs) -> None:
        """Plan under DR and fail-safe caps with ``cap_margin_pct`` of the cap kept free, so
        that what is measured, not the nameplate sum, stays under the cap."""
        share = self.config.daemon.cap_margin_pct / 100.0
        capped = np.isfinite(inputs.dr_cap_kw)
        if share <= 0 or not capped.any():
            return
        inputs.cap_kw = np.where(capped, inputs.cap_kw * (1.0 - share), inputs.cap_kw)
        inputs.notes.append(
            f"planned {self.config.daemon.cap_margin_pct:g} % under DR and fail-safe caps "
            "([daemon] cap_margin_pct)"
        )

    async def replan(self, reason: str = "schedule") -> Plan | None:
        self._replan_pending = False
        async with self._plan_lock:
            now = time.time()
            try:
                grid = self._grid(now)
                prices = self.prices or demo_prices(
                    int(grid.starts_s[0]), int(grid.ends_s[-1]), self.config.site.timezone
                )
                config = self._available_config()
                inputs = assemble_inputs(
                    config, grid, prices, self.active_events(now), self._state()
                )
                # Billed peaks on fixed slots: the next step's plan keeps this matrix and
                # re-solves warm (20 x 5 x 576: 0.1 s instead of 0.5-0.8 s cold).
                for rule in peak_rules(inputs.peaks):
                    if rule not in self._peak_rules:
                        self._peak_rules.append(rule)
                slot_peaks(inputs, inputs.peaks, self._peak_rules)
                self._keep_cap_margin(inputs)
                if self.demand is not None:
                    self.demand.set_plan_demand(inputs, now)
                plan = await asyncio.to_thread(
                    self.planner.plan, inputs, config.site.name, config.site.timezone
                )
            except Exception as exc:  # bad prices, a solver failure: keep the last plan
                log.exception("re-plan (%s) failed", reason)
                await self._plan_failed(reason, f"{type(exc).__name__}: {exc}", "error")
                return None
            status = SolveStatus(plan.status)
            if status not in DISPATCHABLE:  # its schedule is zeros: never apply it
                error = f"solver {plan.solver} ended with {status.value} ({plan.termination})"
                log.error("re-plan (%s) failed: %s", reason, error)
                await self._plan_failed(reason, error, status.value)
                return None
            self.plan, self.plan_at, self.plan_error = plan, now, None
            if self.demand is not None:
                self.demand.planned()  # the demand this plan was made for is in force
            self.solver_status = plan.status
            self.counters.solve_s.observe(plan.solve_s + plan.build_s)
            k = self.plan_index(now)
            await self._audit(
                "plan",
                {
                    "reason": reason,
                    "status": plan.status,
                    "solve_s": round(plan.solve_s, 4),
                    "warm": plan.warm,
                    "objective": plan.objective,
                    "profit_usd": round(plan.money.profit, 2),
                    "step": None
                    if k is None
                    else {
                        "start_s": int(plan.starts_s[k]),
                        "import_kw": round(float(plan.import_kw[k]), 3),
                        "cap_kw": round(float(plan.cap_kw[k]), 3),
                        "units": {cp.name: cp.units_at(k) for cp in plan.classes},
                    },
                    "violations": [v.message for v in plan.violations],
                },
                now,
            )
        self.hold_dispatch = False
        await self.dispatch()
        return plan

    async def _plan_failed(self, reason: str, error: str, status: str) -> None:
        """A re-plan gave nothing to apply: the last good plan stays in force while it
        covers now, else the fail-safe posture; status, /healthz and metrics say why."""
        self.plan_error, self.solver_status = error, status
        self.counters.plan_failures += 1
        await self._audit("plan-failed", {"reason": reason, "error": error, "status": status})
        if (gap := self.plan_gap(time.time())) is not None:
            await self.safe_posture(gap)

    def plan_index(self, now: float) -> int | None:
        if self.plan is None:
            return None
        k = int(np.searchsorted(self.plan.ends_s, now, side="right"))
        return k if k < len(self.plan.starts_s) and self.plan.starts_s[k] <= now else None

    # -- dispatch -----------------------------------------------------------------------------

    def _usable(self, class_name: str) -> list[str]:
        """The class's devices that dispatch can command: those the latest poll read. The
        plan counts the others as a load it cannot move (``_available_config``): its units
        are not theirs to take, and a wake sent in the dark would not be seen."""
        return [i for i in self.fleet.ids(class_name) if i in self._answered]

    def targets(self, now: float) -> dict[str, str]:
        """Each managed device's mode for the plan step containing ``now``."""
        k = self.plan_index(now)
        if k is None or self.plan is None:
            return {}
        out: dict[str, str] = {}
        for cp in self.plan.classes:
            usable = self._usable(cp.name)
            if not usable:
                continue
            out.update(assign(usable, self.modes, cp.units_at(k)))
        return out

    async def dispatch(self) -> list[Outcome]:
        if self.hold_dispatch:
            return []
        async with self._dispatch_lock:
            now = time.time()
            targets = self.targets(now)
            if not targets:
                return []
            pue = self.config.site.pue
            changes: list[tuple[float, str, str]] = []
            for device_id, mode in targets.items():
                current = self.modes.get(device_id)
                if current == mode:
                    continue
                dc = self._class_of(device_id)
                before = self._mode_kw(dc, current) if current is not None else dc.idle_kw
                delta = pue * (self._mode_kw(dc, mode) - before)
                changes.append((delta, device_id, mode))
            if not changes:
                return []
            elapsed_min = max(time.monotonic() - self.last_dispatch, 0.0) / 60.0
            cap, _ = self.cap_now(now)
            headroom = cap - self.measured(expect=True)["import_kw"]
            picked, self._ramp_tokens, deferred = ramp_batch(
                changes,
                self._ramp_tokens,
                self.config.site.ramp_up_kw_per_min,
                elapsed_min,
                headroom,
            )
            requests: dict[str, ModeRequest] = {}
            chosen: dict[str, str] = {}
            for device_id, mode in picked:
                dc = self._class_of(device_id)
                requests[device_id] = registry.mode_request(dc, mode)
                chosen[device_id] = mode
            self.last_dispatch = time.monotonic()
            if not requests:
                return []
            outcomes = await self.fleet.apply(requests)
            self._commanded(outcomes, chosen)
            await self._record_outcomes("dispatch", outcomes, {"deferred_by_ramp_or_cap": deferred})
            self.shed_order = self.compute_shed_order()
            return outcomes

    def stage_requests(self, now: float) -> dict[str, ModeRequest]:
        """The run request each miner read asleep will wake with, for wakes the plan has
        coming within ``stage_ahead_s``: predicted as dispatch will assign them, from the
        modes as they stand (the earliest step that wakes a miner names its mode)."""
        ahead = self.config.daemon.stage_ahead_s
        k = self.plan_index(now)
        if not ahead or k is None or self.plan is None:
            return {}
        plan = self.plan
        out: dict[str, ModeRequest] = {}
        for cp in plan.classes:
            dc = self.classes[cp.name]
            if dc.kind is not DeviceKind.ASIC:
                continue
            usable = self._usable(cp.name)
            asleep = {
                i
                for i in usable
                if self.modes.get(i) == SLEEP
                and (t := self.readings.get(i)) is not None
                and t.state == "sleeping"
            }
            last: dict[str, int] = {}
            for j in range(k + 1, len(plan.starts_s)):
                if not asleep or plan.starts_s[j] > now + ahead:
                    break
                want = cp.units_at(j)
                if want == last:
                    continue  # the same counts wake no one new
                last = want
                for device_id, mode in assign(usable, self.modes, want).items():
                    if device_id in asleep:
                        req = registry.mode_request(dc, mode)
                        if req.action == "run":
                            out[device_id] = req
                            asleep.discard(device_id)
        return out

    async def stage_ahead(self) -> list[Outcome]:
        """Set up on sleeping miners the wakes the plan has coming (a LuxOS profile), so that
        each wake is one command when its step comes; recorded in the audit as ``stage``."""
        try:
            requests = self.stage_requests(time.time())
            if not requests:
                return []
            outcomes = await self.fleet.stage(requests)
            await self._record_outcomes("stage", outcomes)
            return outcomes
        except Exception:  # a background task: its failure must be told, not lost
            log.exception("staging the coming wakes failed; each wake will send its profile")
            return []
        finally:
            self._staging = False

    # -- prices -------------------------------------------------------------------------------

    async def refresh_prices(self) -> None:
        feed = self.config.daemon.price_feed
        now = time.time()
        try:
            series = await asyncio.to_thread(self._load_prices, now)
        except Exception as exc:
            self.price_error = f"{type(exc).__name__}: {exc}"
            log.warning("price feed (%s): %s", feed.kind.value, self.price_error)
            return
        changed = (
            self.prices is None
            or series.label != self.prices.label
            or not np.array_equal(series.values, self.prices.values, equal_nan=True)
        )
        self.prices, self.prices_ok_at, self.price_error = series, now, None
        if changed and self.plan is not None:
            self.request_replan("prices")

    def _load_prices(self, now: float) -> Series:
        feed = self.config.daemon.price_feed
        if feed.kind is FeedKind.CONFIG:  # the [prices] source, with its currency and units
            start = int(now) - int(now) % 3600 - 86400
            return site_prices(self.config, start, start + 4 * 86400)
        if feed.kind is FeedKind.FILE:
            path = str(self.config.resolve(feed.path or ""))
            return load_price_file(
                path, feed.format.value, feed.column or "", feed.timestamp_column
            )
        text = _fetch(feed.kind, feed.url, feed.command, "price")
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
            fh.write(text)
            name = fh.name
        source = feed.url if feed.kind is FeedKind.HTTP else " ".join(feed.command or ())
        try:
            series = load_price_file(
                name, feed.format.value, feed.column or "", feed.timestamp_column
            )
            return series.scaled(1.0, label=f"{feed.kind.value} {source}:{feed.column}")
        finally:
            Path(name).unlink(missing_ok=True)

    def mining(self) -> Mining:
        """[mining] with the hashprice in force: the feed's last good value, or as
        configured."""
        if self.hashprice is None:
            return self.config.mining
        return self.config.mining.model_copy(update={"hashprice_usd_per_ths_day": self.hashprice})

    async def refresh_hashprice(self) -> None:
        """Read the hashprice feed; a change re-plans. A failed reading keeps the last good
        value (hashprice moves slowly; no fail-safe for it) and says why in /v1/status."""
        feed = self.config.daemon.hashprice_feed
        if feed.kind is FeedKind.CONFIG:
            return

        def read() -> float:
            if feed.kind is FeedKind.FILE:
                text = self.config.resolve(feed.path or "").read_text()
            else:
                text = _fetch(feed.kind, feed.url, feed.command, "hashprice")
            return hashprice_from_feed(text, feed.format, feed.key, feed.per)

        try:
            value = await asyncio.to_thread(read)
        except Exception as exc:
            self.hashprice_error = f"{type(exc).__name__}: {exc}"
            log.warning("hashprice feed (%s): %s", feed.kind.value, self.hashprice_error)
            return
        old = self.hashprice
        self.hashprice, self.hashprice_ok_at, self.hashprice_error = value, time.time(), None
        if old is None or abs(value - old) > 1e-12 * max(1.0, abs(old)):
            log.info("hashprice %.4f USD per TH/s per day (was %s)", value, old)
            if self.plan is not None:
                self.request_replan("hashprice")

    async def housekeeping(self) -> None:
        await self.store.prune_webhook_ids(time.time())

    # -- views for the API ----------------------------------------------------------------------

    def plan_age_s(self, now: float | None = None) -> float | None:
        return (
            None if self.plan_at is None else (time.time() if now is None else now) - self.plan_at
        )

    def status(self) -> dict[str, Any]:
        now = time.time()
        cap, events = self.cap_now(now)
        m = self.measured()
        by_class: dict[str, dict[str, Any]] = {}
        for device_id, st in self.fleet.status.items():
            c = by_class.setdefault(
                st.group, {"devices": 0, "health": {h.value: 0 for h in Health}, "modes": {}}
            )
            c["devices"] += 1
            c["health"][st.health.value] += 1
            mode = self.modes.get(device_id, "unknown")
            c["modes"][mode] = c["modes"].get(mode, 0) + 1
        return {
            "site": self.config.site.name,
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "uptime_s": round(now - self.started_at, 1),
            "import_kw": round(m["import_kw"], 3),
            "cap_kw": None if math.isinf(cap) else cap,
            # met / not_met / unverified, the reason, and how much of import is estimated
            "compliance": self.compliance(now).as_dict(),
            "it_kw": {"asic": round(m["asic_kw"], 3), "gpu": round(m["gpu_kw"], 3)},
            "active_events": [e.model_dump(mode="json", exclude_none=True) for e in events],
            # OpenADR payloads received and not acted on, with the reason (notices)
            "openadr_not_acted": self._events().not_acted(now),
            "openadr_ven": self.ven.status() if self.ven is not None else None,
            "failsafe": self.failsafe_reason(now),
            "audit": self.store.audit_status(),  # the chain's head: a witness to copy
            "failsafe_posture": self.config.daemon.failsafe_posture.value,
            "cap_error": self.cap_error,
            "plan": {
                "age_s": None if self.plan_at is None else round(now - self.plan_at, 1),
                "status": self.solver_status,
                "error": self.plan_error,
                "ok": self.plan_error is None and self.plan is not None,
                "covers_now": self.plan_index(now) is not None,
                "failures": self.counters.plan_failures,
            },
            "store": {"error": self.store_error, "write_failures": self.counters.store_failures},
            "task_failures": dict(self.counters.task_failures),
            "prices": {
                "label": None if self.prices is None else self.prices.label,
                "age_s": None if self.prices_ok_at is None else round(now - self.prices_ok_at, 1),
                "error": self.price_error,
            },
            "hashprice": {
                "usd_per_ths_day": self.mining().hashprice_usd_per_ths_day,
                "source": self.config.daemon.hashprice_feed.kind.value,
                "age_s": None
                if self.hashprice_ok_at is None
                else round(now - self.hashprice_ok_at, 1),
                "error": self.hashprice_error,
            },
            "classes": by_class,
            "hold_dispatch": self.hold_dispatch,
            "inference_demand": None if self.demand is None else self.demand.status(),
            "inference_sla": self.inference_sla(),
        }


def _top_mode(dc: DeviceClass) -> str:
    """The class's most power-hungry mode: what a device never read is assumed to run."""
    return max(dc.modes, key=lambda m: m.power_kw).name


def _log_write_failure(task: asyncio.Future[Any]) -> None:
    """Log a failed signal write here too: its sender may have gone before it failed."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("signal write failed: %s: %s", type(exc).__name__, exc)


def ramp_batch(
    changes: list[tuple[float, str, str]],
    tokens: float,
    ramp_kw_per_min: float | None,
    elapsed_min: float,
    headroom_kw: float,
) -> tuple[list[tuple[str, str]], float, int]:
    """Which (device, mode) changes to make now: every decrease; increases while they fit the
    ramp limit and the headroom under the cap. ``changes`` are (meter kW delta, device, mode).

    The ramp limit is a token bucket in kW: it fills at ``ramp_kw_per_min`` and holds at most
    a minute's worth, or one device's step when a device is larger than that, so that
    wake-ups come in batches and always make progress. Returns the changes, the tokens left
    and how many increases wait for a later call.
    """
    if ramp_kw_per_min is None:
        budget = math.inf
    else:
        biggest = max((d for d, _, _ in changes if d > 0), default=0.0)
        tokens = min(tokens + ramp_kw_per_min * elapsed_min, max(ramp_kw_per_min, biggest))
        budget = tokens
    picked: list[tuple[str, str]] = []
    deferred = 0
    for delta, device_id, mode in sorted(changes):
        if delta > 0:
            if delta > budget or delta > headroom_kw:
                deferred += 1
                continue
            budget -= delta
        headroom_kw -= delta
        picked.append((device_id, mode))
    return picked, (tokens if ramp_kw_per_min is None else budget), deferred


def assign(ids: list[str], modes: dict[str, str], want: dict[str, int]) -> dict[str, str]:
    """Give each device a mode so that ``want`` counts are met with the fewest changes.

    Devices already in a wanted mode keep it; awake devices move before sleeping ones wake;
    the rest sleep.
    """
    left = dict(want)
    out: dict[str, str] = {}
    rest: list[str] = []
    for i in ids:
        m = modes.get(i)
        if m is not None and m != SLEEP and left.get(m, 0) > 0:
            out[i] = m
            left[m] -= 1
        else:
            rest.append(i)
    rest.sort(key=lambda i: (modes.get(i, SLEEP) == SLEEP, i))
    for mode, n in left.items():
        for _ in range(n):
            if not rest:
                break
            out[rest.pop(0)] = mode
    for i in rest:
        out[i] = SLEEP
    return out
