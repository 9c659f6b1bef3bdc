"""What the daemon counts for Prometheus, and its background tasks (whose failures are
counted, never lost)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from adapters.faults import in_words, traceback_once
from scheduler.service.histograms import DRAIN_BUCKETS, FAST_BUCKETS, SOLVE_BUCKETS, Histogram

SWEEP_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: gridsched_signals_received_total's labels (docs/daemon.md), each pair exported from 0
SIGNAL_SOURCES = ("simple", "openadr3")
SIGNAL_RESULTS = (
    "accepted",
    "duplicate",
    "invalid",
    "unknown",
    "conflict",
    "unauthorized",
    "rejected",
    "not_stored",
)

log = logging.getLogger("gridsched.daemon")


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
    #: (source, result), every pair at 0 from the start: a series born at 1 has no
    #: increase() to Prometheus, and the alert on the first failure would not fire
    signals: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(s, r): 0 for s in SIGNAL_SOURCES for r in SIGNAL_RESULTS}
    )
    openadr_payloads: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, acted)
    commands: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    #: read-back verdicts on accepted commands, as they arrive
    readbacks: dict[str, int] = field(
        default_factory=lambda: {"confirmed": 0, "unconfirmed": 0, "superseded": 0}
    )
    plan_failures: int = 0  # re-plans that ended without a plan to apply
    #: background task -> count; a task's series at 0 from its first start (as ``signals``)
    task_failures: dict[str, int] = field(default_factory=dict)
    store_failures: int = 0  # audit records the state file refused
    solve_s: Histogram = field(default_factory=lambda: Histogram(SOLVE_BUCKETS))
    fast_path_s: Histogram = field(default_factory=lambda: Histogram(FAST_BUCKETS))
    drain_s: Histogram = field(default_factory=lambda: Histogram(DRAIN_BUCKETS))
    # each poll's reading of the fleet: issue 21's goals are 5 s (7,500 miners) and 20 s
    # (30,000); a loaded host has seen 80-160 s
    sweep_s: Histogram = field(default_factory=lambda: Histogram(SWEEP_BUCKETS))

    def signal(self, source: str, result: str) -> None:
        self.signals[(source, result)] = self.signals.get((source, result), 0) + 1

    def openadr_payload(self, payload_type: str, acted: bool) -> None:
        key = (payload_type, "true" if acted else "false")
        self.openadr_payloads[key] = self.openadr_payloads.get(key, 0) + 1

    def task_failed(self, name: str) -> None:
        self.task_failures[name] = self.task_failures.get(name, 0) + 1


class Tasks:
    """The daemon's background tasks: each one's failure is logged and counted
    (``gridsched_task_failures_total{task=name}``); all are cancelled on stop."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.running: set[asyncio.Task[Any]] = set()
        #: set when the daemon stops: a job cancelled from then on was cut short, not failed
        self.stopping = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task; once the daemon stops, a task spawned (by a
        timer armed before, a verdict of the shutdown's own read-back) is cancelled before
        it runs: a dispatch spawned so woke the miners the shutdown had put to sleep."""
        self.counters.task_failures.setdefault(name, 0)  # exported from 0, not born at 1
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if self.stopping:
            task.cancel()
            return task
        self.running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self.failed(task.get_name(), exc)

    def failed(self, name: str, exc: BaseException) -> None:
        """One line in words for a fault (a device, the disk, the network); a bug keeps its
        name and its traceback, once per place (:func:`adapters.faults.is_bug`)."""
        self.counters.task_failed(name)
        why = in_words(exc)
        log.error("background task %s failed: %s", name, why, exc_info=traceback_once(exc))

    def job_skipped(self, event: Any) -> None:
        """A scheduled run skipped because the last one still runs (a feed answering slower
        than its period), said in the daemon's words (APScheduler's own line is left out:
        :func:`quiet_apscheduler_skips`)."""
        log.warning(
            "%s: its last run is still going at its next time (slower than its period): "
            "this run skipped",
            event.job_id,
        )

    def job_failed(self, event: Any) -> None:
        """A scheduled job raised (APScheduler has logged it with its traceback)."""
        self.counters.task_failed(str(event.job_id))

    def job(self, fn: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[None]]:
        """A scheduled job that the daemon's stop may cut short without it counting as a
        failure: APScheduler logs a job's CancelledError as an exception with its
        traceback, and at site scale a poll is running whenever the daemon stops."""
        self.counters.task_failures.setdefault(name, 0)  # exported from 0, not born at 1

        @functools.wraps(fn)  # the job is still named, and found, as the function it runs
        async def run(*args: Any) -> None:
            try:
                await fn(*args)
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                log.info("%s: cut short by the daemon's stop", name)

        return run

    def cancel_all(self) -> None:
        self.stopping = True
        for t in list(self.running):
            t.cancel()


def _not_a_skip(record: logging.LogRecord) -> bool:
    return "skipped: maximum number of running instances" not in str(record.msg)


def quiet_apscheduler_skips() -> None:
    """Leave out APScheduler's own line for a run skipped ('Execution of job "Feeds.
    refresh_prices (trigger: ...)" skipped: maximum number of running instances reached
    (1)'): :meth:`Tasks.job_skipped` says it, naming the job as the daemon does."""
    aps = logging.getLogger("apscheduler.scheduler")
    if _not_a_skip not in aps.filters:
        aps.addFilter(_not_a_skip)
