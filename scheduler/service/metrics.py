"""Prometheus metrics: one collector over the daemon's latest snapshot.

Names follow ``gridsched_<subsystem>_<name>_<unit>`` in base units (watts, joules,
seconds, hashes per second, tokens), ``_total`` for counters. Labels are per device class
and mode always; per device only when asked (``[metrics] per_device``, by default while
the site has at most ``per_device_up_to`` devices): each device's power and whether it
answers, and GPUs with DCGM-exporter's labels (``gpu``, ``UUID``, ``modelName``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from models.site import FeedKind
from scheduler.service import metrics_aggregates as aggregates
from scheduler.service import metrics_families as families
from scheduler.service.histograms import DRAIN_BUCKETS, FAST_BUCKETS, SOLVE_BUCKETS, Histogram
from scheduler.service.metrics_child import tail_text

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon

# the daemon's duration histograms, imported from here by the daemon's counters
__all__ = [
    "DRAIN_BUCKETS", "FAST_BUCKETS", "SOLVE_BUCKETS", "DaemonCollector", "Histogram",
    "Rendering", "Snapshot", "metrics_registry", "render_metrics",
]  # fmt: skip


class DaemonCollector:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._classes: aggregates.ClassAggregates | None = None  # the last render's

    def collect(self) -> Iterator[Metric]:
        d = self.d
        now = time.time()
        m = d.measured()
        cap, events = d.cap_now(now)

        g = GaugeMetricFamily(
            "gridsched_site_power_watts",
            "Measured power by kind (IT) and at the meter",
            labels=["kind"],
        )
        # sums of readings in kW: round off the float noise (130855.00000000007 W)
        g.add_metric(["asic"], round(m["asic_kw"] * 1000, 3))
        g.add_metric(["gpu"], round(m["gpu_kw"] * 1000, 3))
        g.add_metric(["import"], round(m["import_kw"] * 1000, 3))
        yield g
        g = GaugeMetricFamily(
            "gridsched_site_import_cap_watts", "Import cap in force (interconnect or DR)"
        )
        g.add_metric([], cap * 1000 if math.isfinite(cap) else d.config.site.interconnect_kw * 1000)
        yield g
        g = GaugeMetricFamily(
            "gridsched_site_billing_peak_watts", "Highest import this billing period"
        )
        billing, at = d.power.billing, d.clock.time()  # the daemon's clock decides the period
        g.add_metric([], billing.peak_kw(at) * 1000)
        yield g
        g = GaugeMetricFamily(
            "gridsched_site_billing_period_start_seconds",
            "Start of the billing period (a month in the site's time zone) the peak is of",
        )
        g.add_metric([], billing.start.timestamp() if billing.start else 0.0)
        yield g
        yield from families.power_truth(d, m, now)
        yield from families.class_caps(d, now)
        yield from families.drifts(d)

        classes = self._classes = aggregates.class_aggregates(d, self._classes)
        yield from classes.families()

        if d.config.metrics.per_device_for(len(d.fleet.status)):
            yield from families.per_device(d)
        yield from families.ven(d)

        cnt = d.counters
        e = CounterMetricFamily(
            "gridsched_energy_joules", "Energy by kind (IT) and at the meter", labels=["kind"]
        )
        for k, v in cnt.energy_j.items():
            e.add_metric([k], v)
        yield e
        r = CounterMetricFamily(
            "gridsched_revenue_usd",
            "Revenue by source (devices read: hashrate read, tokens from the GPU mode read back)",
            labels=["source"],
        )
        for k, v in cnt.revenue_usd.items():
            r.add_metric([k], v)
        yield r
        x = CounterMetricFamily("gridsched_energy_cost_usd", "Energy cost at the planned price")
        x.add_metric([], cnt.energy_cost_usd)
        yield x
        x = CounterMetricFamily("gridsched_inference_tokens", "Tokens served")
        x.add_metric([], cnt.tokens)
        yield x
        x = CounterMetricFamily("gridsched_mining_hashes", "Hashes computed")
        x.add_metric([], cnt.hashes)
        yield x

        s = CounterMetricFamily(
            "gridsched_signals_received",
            "Signals by source and result",
            labels=["source", "result"],
        )
        for (src, res), n in sorted(cnt.signals.items()):
            s.add_metric([src, res], n)
        yield s
        s = CounterMetricFamily(
            "gridsched_openadr_payloads",
            "OpenADR 3 event payloads received, by type and whether they are acted on",
            labels=["type", "acted"],
        )
        for (kind, acted), n in sorted(cnt.openadr_payloads.items()):
            s.add_metric([kind, acted], n)
        yield s
        act = GaugeMetricFamily(
            "gridsched_signals_active", "Events in force now by type", labels=["type"]
        )
        by_type: dict[str, int] = {}
        for ev in events:
            if ev.source == "failsafe":  # the site's own posture, no grid operator's event:
                continue  # gridsched_failsafe_active says it (DR alerts must not fire on it)
            by_type[ev.type.value] = by_type.get(ev.type.value, 0) + 1
        for t_, n in sorted(by_type.items()):
            act.add_metric([t_], n)
        yield act
        f = GaugeMetricFamily(
            "gridsched_failsafe_active",
            "1 while the site is held at the fail-safe cap (a silent feed, no good plan)",
        )
        f.add_metric([], 1.0 if d.failsafe_reason(now) else 0.0)
        yield f
        f = GaugeMetricFamily(
            "gridsched_cap_fallback",
            "1 while the cap in force could not be computed and a fall-back cap is enforced",
        )
        f.add_metric([], 0.0 if d.signals.cap_error is None else 1.0)
        yield f
        x = CounterMetricFamily(
            "gridsched_task_failures",
            "Background tasks and scheduled jobs that raised, by task",
            labels=["task"],
        )
        for k, v in sorted(cnt.task_failures.items()):
            x.add_metric([k], v)
        yield x
        x = CounterMetricFamily(
            "gridsched_store_write_failures", "Audit records the state file refused"
        )
        x.add_metric([], cnt.store_failures)
        yield x
        x = CounterMetricFamily(
            "gridsched_commands", "Device commands by result", labels=["result"]
        )
        for k, v in cnt.commands.items():
            x.add_metric([k], v)
        yield x
        x = CounterMetricFamily(
            "gridsched_readback_verdicts",
            "Read-back verdicts on accepted commands, as they arrive",
            labels=["verdict"],
        )
        for k, v in cnt.readbacks.items():
            x.add_metric([k], v)
        yield x
        yield GaugeMetricFamily(
            "gridsched_open_files_limit",
            "The daemon's open-files limit (soft, as raised at start toward what it needs)",
            value=d.open_files[0],
        )
        yield GaugeMetricFamily(
            "gridsched_open_files_needed",
            "Files the fleet may hold: a connection per device, the commands and readings "
            "in flight, and 256 spare",
            value=d.open_files[1],
        )
        yield GaugeMetricFamily(
            "gridsched_commands_awaiting_readback",
            "Accepted commands not yet shown by a reading, nor past their deadline",
            value=len(d.fleet.pending),
        )
        yield GaugeMetricFamily(
            "gridsched_fleet_upkeep_queued",
            "Devices whose reading asked for upkeep (a LuxOS session renewal) not yet done",
            value=d.fleet.upkeep.queued,
        )
        x = CounterMetricFamily(
            "gridsched_fleet_upkeeps",
            "Upkeeps (LuxOS session renewals) run after a reading asked, by result (done: "
            "made, or no longer needed)",
            labels=["result"],
        )
        x.add_metric(["done"], d.fleet.upkeep.done)
        x.add_metric(["failed"], d.fleet.upkeep.failed)
        yield x
        yield classes.health_family()
        yield from families.fleet_workers(d)

        plan = d.plan
        step = d.plans.index(now)
        if plan is not None and step is not None:
            g = GaugeMetricFamily(
                "gridsched_market_price_usd_per_mwh", "Energy price of the plan step now"
            )
            g.add_metric([], float(plan.price_usd_per_mwh[step]))
            yield g
            g = GaugeMetricFamily(
                "gridsched_market_hashprice_usd_per_ths_day", "Net hashprice of the plan step now"
            )
            g.add_metric([], float(plan.hashprice[step]))
            yield g
            g = GaugeMetricFamily("gridsched_plan_import_watts", "Planned import for the step now")
            g.add_metric([], float(plan.import_kw[step]) * 1000)
            yield g
            g = GaugeMetricFamily(
                "gridsched_plan_class_power_watts",
                "Planned IT power by class for the step now",
                labels=["class"],
            )
            for cp in plan.classes:
                g.add_metric([cp.name], float(cp.power_kw[step]) * 1000)
            yield g
        feeds = GaugeMetricFamily(
            "gridsched_feed_age_seconds",
            "Seconds since a feed last gave a good reading (+Inf: not yet)",
            labels=["feed"],
        )
        prices_at = d.feeds.prices_ok_at
        feeds.add_metric(["prices"], now - prices_at if prices_at else math.inf)
        if d.config.daemon.hashprice_feed.kind is not FeedKind.CONFIG:
            ok_at = d.feeds.hashprice_ok_at
            feeds.add_metric(["hashprice"], now - ok_at if ok_at else math.inf)
        yield feeds
        age = d.plans.age_s(now)
        p = GaugeMetricFamily(
            "gridsched_plan_age_seconds", "Seconds since the plan in force was made"
        )
        p.add_metric([], age if age is not None else float("inf"))  # no plan yet: stale
        yield p
        yield GaugeMetricFamily(  # GridschedPlanStale's limit, the one /healthz uses
            "gridsched_plan_max_age_seconds",
            "A plan older than this is stale ([daemon] max_plan_age_s; /healthz 503)",
            value=d.config.daemon.max_plan_age_s,
        )
        st_ = GaugeMetricFamily(
            "gridsched_solver_last_status", "1 for the last solve's status", labels=["status"]
        )
        st_.add_metric([d.plans.solver_status], 1.0)
        yield st_
        ok = GaugeMetricFamily(
            "gridsched_plan_ok",
            "1 while the last re-plan gave a plan to apply; 0 before the first or after a failure",
        )
        ok.add_metric([], 1.0 if d.plan is not None and d.plans.error is None else 0.0)
        yield ok
        x = CounterMetricFamily(
            "gridsched_plan_failures", "Re-plans that ended without a plan to apply"
        )
        x.add_metric([], cnt.plan_failures)
        yield x
        yield cnt.solve_s.family("gridsched_solver_duration_seconds", "Plan build and solve time")
        yield cnt.fast_path_s.family(
            "gridsched_fastpath_duration_seconds",
            "Fast-path shed (a signal, a cap exceeded at a poll, the fail-safe): decision to every "
            "device commanded; a device that does not answer holds it to its timeout",
        )
        yield cnt.sweep_s.family(
            "gridsched_fleet_sweep_duration_seconds", "Poll: every device and the meter read"
        )
        yield cnt.drain_s.family(
            "gridsched_gpu_drain_seconds", "GPU drains before power-down: told to in-flight done"
        )
        yield from families.inference(d)


def metrics_registry(daemon: Daemon) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Rendering:
    """One rendering of ``/metrics`` and when the loop last found it current."""

    body: bytes
    at_s: float  # time.monotonic()


class Snapshot:
    """``/metrics`` as rendered once for a state of the daemon: scrapes that find nothing
    changed (no poll, command, read-back verdict, plan or signal since) within the same
    second get the same bytes, so that several Prometheus servers scraping a large site
    cost one render, and every series in a scrape comes from one instant.

    :meth:`render` runs on the daemon's loop only (the collector reads its state);
    :attr:`latest` is what the metrics listener is sent
    (:mod:`scheduler.service.exporter`)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry = metrics_registry(daemon)
        self._key: tuple[int, ...] | None = None
        self._body = b""
        self.renders = 0
        #: the last rendering, with when the loop last found it current
        self.latest: Rendering | None = None

    def key(self) -> tuple[int, ...]:
        d = self.daemon
        return (
            d.poller.polls,
            d.devices.generation,
            d.plans.generation,
            d.signals.generation,
            sum(d.counters.task_failures.values()),
            d.counters.store_failures,
            getattr(d.fleet, "restarts", 0),  # a fleet worker started again
            int(d.clock.time()),
        )

    def render(self) -> tuple[bytes, str]:
        key = self.key()
        if key != self._key:
            self._body, _ = render_metrics(self.registry)
            self._key = key
            self.renders += 1
        # unchanged or new, the body is the state now
        self.latest = Rendering(self._body, time.monotonic())
        return self._body, CONTENT_TYPE_LATEST

    def tail(self, rendering: Rendering) -> bytes:
        """The families said at serve time, after a rendering: its age and the stale
        scrapes (the same as the metrics listener's, :mod:`scheduler.service.metrics_child`)."""
        return tail_text(time.monotonic() - rendering.at_s, 0)  # rendered for the scrape
