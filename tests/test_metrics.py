"""The daemon's duration histograms as Prometheus reads them: the text exposition parsed
with prometheus-client's own parser, buckets cumulative, ``_count`` and ``_sum`` matching
what was observed; first for one histogram in a fresh registry, then for the three a
running daemon exposes on ``/metrics`` (simulated GPUs in process, a real solver).
"""

from __future__ import annotations

import asyncio
import math
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from models.signals import EventType, GridEvent
from models.site import parse_site
from scheduler.service.api import create_app
from scheduler.service.daemon import Daemon
from scheduler.service.metrics import DRAIN_BUCKETS, FAST_BUCKETS, SOLVE_BUCKETS, Histogram
from tests.support.daemon import running
from tests.support.sitefile import device_classes, site_text

SITE = site_text(
    "metrics test",
    interconnect_kw=500,
    site={"base_load_kw": 0},
    inference={
        "committed_tokens_s": 0,
        "committed_usd_per_mtok": 0.6,
        # spot demand that pays at any hour of the demo prices: the GPUs serve, so a curtail
        # to half the load has something to shed whatever the time of day the test runs at
        "spot_tokens_s": 100000,
        "spot_usd_per_mtok": 50,
    },
    devices=device_classes(
        {
            "name": "h100",
            "kind": "gpu",
            "model": "H100 SXM",
            "power_caps_w": [700, 350],
            "count": 2,
            "adapter": {"kind": "sim"},
        }
    ),
)


def _histograms(text: str) -> dict[str, dict[str, object]]:
    """Each histogram family in an exposition: its buckets (le -> count, in the order
    exposed), ``_count`` and ``_sum``."""
    out: dict[str, dict[str, object]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        buckets = [(s.labels["le"], s.value) for s in fam.samples if s.name.endswith("_bucket")]
        count = [s.value for s in fam.samples if s.name == f"{fam.name}_count"]
        total = [s.value for s in fam.samples if s.name == f"{fam.name}_sum"]
        names = {s.name.removeprefix(fam.name) for s in fam.samples}
        out[fam.name] = {"buckets": buckets, "count": count, "sum": total, "suffixes": names}
    return out


def _check_cumulative(name: str, h: dict[str, object]) -> None:
    buckets = h["buckets"]
    assert isinstance(buckets, list) and buckets, name
    bounds = [float(le) for le, _ in buckets]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1]), (name, bounds)
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), (name, counts)  # cumulative: never decreasing
    assert h["count"] == [counts[-1]], name  # +Inf holds every observation
    assert h["suffixes"] == {"_bucket", "_count", "_sum"}, name  # no _created: as before


class _One:
    def __init__(self, h: Histogram) -> None:
        self.h = h

    def collect(self) -> Iterator[Metric]:
        yield self.h.family("gridsched_test_duration_seconds", "test")


def test_a_histogram_exposes_cumulative_buckets_count_and_sum() -> None:
    h = Histogram((0.1, 1.0, 10.0))
    values = [0.05, 0.1, 0.5, 2.0, 20.0, 0.7]
    for v in values:
        h.observe(v)
    registry = CollectorRegistry()
    registry.register(_One(h))
    text = generate_latest(registry).decode()
    parsed = _histograms(text)["gridsched_test_duration_seconds"]
    _check_cumulative("test", parsed)
    assert parsed["buckets"] == [("0.1", 2.0), ("1.0", 4.0), ("10.0", 5.0), ("+Inf", 6.0)]
    assert parsed["count"] == [6.0] and h.count == 6
    assert parsed["sum"] == [pytest.approx(sum(values))] and h.total == pytest.approx(sum(values))
    # the daemon's bucket sets keep their bounds (le labels as dashboards query them)
    for buckets in (SOLVE_BUCKETS, FAST_BUCKETS, DRAIN_BUCKETS):
        fam = Histogram(buckets).family("x_seconds", "x")
        les = [s.labels["le"] for s in fam.samples if s.name == "x_seconds_bucket"]
        assert les == [*(str(b) for b in buckets), "+Inf"]


def test_bucket_bounds_out_of_order_are_refused() -> None:
    """Unsorted bounds would expose counts that are not cumulative; prometheus-client's
    histogram refuses them where they are given."""
    with pytest.raises(ValueError, match="sorted"):
        Histogram((1.0, 0.1))


def test_the_daemons_histograms_on_metrics_match_what_it_observed(tmp_path: Path) -> None:
    d = Daemon(parse_site(tomllib.loads(SITE), "test", str(tmp_path)), tmp_path / "g.db")

    async def go() -> str:
        async with running(d):
            plans = [await d.replan("test") for _ in range(2)]
            assert all(p is not None for p in plans)
            solve_s = sum(p.solve_s + p.build_s for p in plans if p is not None)
            assert d.counters.solve_s.count == 2
            assert d.counters.solve_s.total == pytest.approx(solve_s)
            # a curtail below the load now: the fast path sheds (and a re-plan may follow)
            load_kw = d.measured(expect=True)["import_kw"]
            ev = GridEvent(
                id="dr",
                type=EventType.CURTAIL,
                start=datetime.now(UTC),
                duration="1h",
                limit_kw=load_kw / 2,
            )
            await d.accept([ev], "test", None, "{}")
            async with asyncio.timeout(30):
                while d.counters.fast_path_s.count < 1:
                    await asyncio.sleep(0.02)
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
                r = await c.get("/metrics")
            assert r.status_code == 200
            return r.text

    hist = _histograms(asyncio.run(go()))
    for name in (
        "gridsched_solver_duration_seconds",
        "gridsched_fastpath_duration_seconds",
        "gridsched_gpu_drain_seconds",
    ):
        _check_cumulative(name, hist[name])
    c = d.counters
    solver = hist["gridsched_solver_duration_seconds"]
    assert solver["count"] == [float(c.solve_s.count)] and c.solve_s.count >= 2
    assert solver["sum"] == [pytest.approx(c.solve_s.total)]
    fast = hist["gridsched_fastpath_duration_seconds"]
    assert fast["count"] == [float(c.fast_path_s.count)] and c.fast_path_s.count >= 1
    assert fast["sum"] == [pytest.approx(c.fast_path_s.total)] and c.fast_path_s.total > 0
    assert hist["gridsched_gpu_drain_seconds"]["count"] == [float(c.drain_s.count)]


def test_failure_counters_are_exported_at_zero_before_their_first_failure(tmp_path: Path) -> None:
    """The SRE's walk (session 24, D1): gridsched_task_failures_total{task} and
    gridsched_signals_received_total{source,result} had no series until their first count,
    so each was born at 1; increase() over a series born at 1 is 0, and GridschedTaskFailing
    and GridschedSignalsNotStored never fired on the first failure (a promtool test with
    the series as exported, absent then 1, failed). Prometheus's advice: export the label
    values known in advance at 0."""
    from prometheus_client.parser import text_string_to_metric_families

    d = Daemon(parse_site(tomllib.loads(SITE), "test", str(tmp_path)), tmp_path / "g.db")

    async def go() -> str:
        async with running(d):
            await d.replan("test")
            await d.tasks.spawn(asyncio.sleep(0), "replan")  # a task started, none failed
            d.tasks.job(d.poll, "poll")  # a scheduled job set up (the daemon's start does)
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
                return (await c.get("/metrics")).text

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(asyncio.run(go()))
        for s in fam.samples
    }
    for source in ("simple", "openadr3"):
        key = (("result", "not_stored"), ("source", source))
        assert samples.get(("gridsched_signals_received_total", key)) == 0.0, source
    tasks = {
        dict(labels)["task"]: v
        for (name, labels), v in samples.items()
        if name == "gridsched_task_failures_total"
    }
    assert {"replan", "poll"} <= set(tasks) and set(tasks.values()) == {0.0}, tasks


def test_the_plan_age_limit_healthz_uses_is_exported_for_the_stale_alert(tmp_path: Path) -> None:
    """The SRE's walk (session 24, N4): GridschedPlanStale compared the plan's age with a
    fixed 900 s while /healthz uses [daemon] max_plan_age_s (600 on the walk's site), so the
    two disagreed about the same plan. The limit is exported; the alert reads it."""
    from prometheus_client.parser import text_string_to_metric_families

    site = tomllib.loads(SITE)
    site.setdefault("daemon", {})["max_plan_age_s"] = 600
    d = Daemon(parse_site(site, "test", str(tmp_path)), tmp_path / "g.db")

    async def go() -> str:
        async with running(d):
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
                return (await c.get("/metrics")).text

    values = {
        s.name: s.value
        for fam in text_string_to_metric_families(asyncio.run(go()))
        for s in fam.samples
    }
    assert values.get("gridsched_plan_max_age_seconds") == 600.0
