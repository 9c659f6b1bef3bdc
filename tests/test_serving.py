"""Inference demand read from the serving engines' own metrics pages.

The test servers are prometheus_client registries holding exactly the metric names, types
and labels vLLM and TGI document (adapters/serving.py names the sources), served over HTTP
on loopback by prometheus_client itself, so the parser reads what a real engine's page
looks like, counters' ``_total`` and histograms' ``_bucket``/``_sum``/``_count`` included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from adapters.base import BadReply, DeviceUnreachable
from adapters.serving import ServingEndpoint, ServingSample, parse_metrics
from scheduler.service.demand import (
    DemandTracker,
    SlaState,
    forecast_tokens_s,
    needs_replan,
    sla_state,
)

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25)


class FakeVllm:
    """A vLLM-shaped metrics page, labelled by model_name as vLLM labels it."""

    def __init__(self, legacy_itl: bool = False) -> None:
        self.reg = CollectorRegistry()
        lab = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "running", lab, registry=self.reg)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", lab, registry=self.reg)
        self.gen = Counter("vllm:generation_tokens", "generated", lab, registry=self.reg)
        Counter("vllm:prompt_tokens", "prompt", lab, registry=self.reg)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "ttft", lab, buckets=TTFT_BUCKETS, registry=self.reg
        )
        itl_name = (
            "vllm:time_per_output_token_seconds"
            if legacy_itl
            else "vllm:inter_token_latency_seconds"
        )
        self.itl = Histogram(itl_name, "itl", lab, buckets=ITL_BUCKETS, registry=self.reg)
        self.per_req = Histogram(
            "vllm:request_generation_tokens",
            "tokens per request",
            lab,
            buckets=(16, 64, 256, 1024, 4096),
            registry=self.reg,
        )


@contextlib.contextmanager
def served(fake: FakeVllm) -> Iterator[tuple[FakeVllm, str]]:
    """The fake engine's page served over loopback HTTP by prometheus_client; its URL."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=fake.reg)
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def vllm() -> Iterator[tuple[FakeVllm, str]]:
    with served(FakeVllm()) as engine:
        yield engine


def _read(endpoint: ServingEndpoint, at_s: float) -> ServingSample:
    async def go() -> ServingSample:
        async with httpx.AsyncClient() as client:
            return await endpoint.read(client, at_s)

    return asyncio.run(go())


def test_vllm_page_over_http_gives_demand_and_latency(vllm: tuple[FakeVllm, str]) -> None:
    fake, url = vllm
    ep = ServingEndpoint("vllm", url)
    for model in ("llama-70b", "llama-8b"):  # two models on one engine: summed
        fake.running.labels(model).set(8)
        fake.waiting.labels(model).set(2)
        fake.gen.labels(model).inc(1000)
        fake.per_req.labels(model).observe(200)
    tracker = DemandTracker(drain_s=50.0)
    first = _read(ep, at_s=100.0)
    assert first.running == 16 and first.waiting == 4 and first.generated_tokens == 2000
    assert tracker.update({url: first}) is None  # one reading has no rate yet

    fake.gen.labels("llama-70b").inc(3000)
    fake.gen.labels("llama-8b").inc(2000)
    for v in (0.08, 0.08, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 2.0):
        fake.ttft.labels("llama-70b").observe(v)
    for v in (0.02,) * 9 + (0.2,):
        fake.itl.labels("llama-8b").observe(v)
    second = _read(ep, at_s=110.0)
    reading = tracker.update({url: second})
    assert reading is not None
    assert reading.served_tokens_s == pytest.approx(5000 / 10.0)
    # 4 waiting requests x 200 tokens each (the engine's own per-request mean), over 50 s
    assert reading.backlog_tokens_s == pytest.approx(4 * 200 / 50.0)
    assert reading.demand_tokens_s == pytest.approx(500 + 16)
    # p50 of TTFT: rank 5 of 10 falls in the 0.25-0.5 bucket (7 observations there)
    p50 = reading.ttft_s.quantile(0.5)
    assert p50 == pytest.approx(0.25 + 0.25 * (5 - 2) / 7)
    state, p90 = sla_state(reading.itl_s, 0.9, target_s=0.025)
    assert state is SlaState.MET and p90 is not None and p90 <= 0.025
    assert sla_state(reading.itl_s, 0.99, target_s=0.025)[0] is SlaState.MISSED


def test_an_engine_restart_does_not_read_as_negative_demand(vllm: tuple[FakeVllm, str]) -> None:
    fake, url = vllm
    ep = ServingEndpoint("vllm", url)
    fake.gen.labels("m").inc(10_000)
    tracker = DemandTracker()
    tracker.update({url: _read(ep, 0.0)})
    page = _read(ep, 5.0)
    restarted = parse_metrics(
        "vllm",
        "# TYPE vllm:generation_tokens counter\n"
        'vllm:generation_tokens_total{model_name="m"} 250.0\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 1.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 0.0\n',
        at_s=10.0,
    )
    assert page.generated_tokens == 10_000
    reading = tracker.update({url: restarted})
    assert reading is not None and reading.served_tokens_s == pytest.approx(250 / 10.0)


def test_older_vllm_itl_name_and_no_observations_is_unverified() -> None:
    fake = FakeVllm(legacy_itl=True)
    fake.itl.labels("m").observe(0.03)
    from prometheus_client import generate_latest

    sample = parse_metrics("vllm", generate_latest(fake.reg).decode(), at_s=0.0)
    assert sample.itl_s.count == 1
    assert sla_state(sample.ttft_s, 0.95, 1.0)[0] is SlaState.UNVERIFIED


def test_tgi_page() -> None:
    reg = CollectorRegistry()
    Gauge("tgi_queue_size", "queue", registry=reg).set(3)
    Gauge("tgi_batch_current_size", "batch", registry=reg).set(12)
    tokens = Histogram("tgi_request_generated_tokens", "tokens", buckets=(64, 512), registry=reg)
    tokens.observe(100)
    tokens.observe(300)
    Histogram("tgi_request_mean_time_per_token_duration", "tpot", registry=reg).observe(0.04)
    from prometheus_client import generate_latest

    s = parse_metrics("tgi", generate_latest(reg).decode(), at_s=0.0)
    assert (s.running, s.waiting, s.generated_tokens) == (12, 3, 400)
    assert s.output_tokens_per_request.count == 2 and s.itl_s.count == 1


@pytest.mark.parametrize(
    ("engine", "text", "missing"),
    [
        (
            "vllm",
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n",
            "waiting",
        ),
        ("tgi", "# TYPE tgi_queue_size gauge\ntgi_queue_size 1\n", "tgi_"),
        ("vllm", "this is { not a metrics page", "not a Prometheus"),
    ],
)
def test_a_page_without_what_is_needed_says_what(engine: str, text: str, missing: str) -> None:
    with pytest.raises(BadReply, match=missing):
        parse_metrics(engine, text, 0.0, "http://engine/metrics")


def test_an_engine_that_is_not_there_is_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(DeviceUnreachable):
            _read(ServingEndpoint("vllm", f"http://127.0.0.1:{port}/metrics", 1.0), 0.0)
    with pytest.raises(ValueError, match="vllm or tgi"):
        ServingEndpoint("triton", "http://x/metrics")


def test_forecast_decays_from_the_measured_gap_to_the_prior() -> None:
    prior = np.array([1000.0, 1000.0, 2000.0, 500.0])
    hours = np.array([0.0, 1.0, 2.0, 3.0])
    f = forecast_tokens_s(prior, hours, measured_now=3000.0, tau_h=1.0)
    assert f[0] == pytest.approx(3000.0)
    assert f[1] == pytest.approx(1000 + 2000 * np.exp(-1))
    assert f[3] == pytest.approx(500 + 2000 * np.exp(-3))
    # a lull never forecasts negative demand
    assert (forecast_tokens_s(prior, hours, measured_now=0.0, tau_h=10.0) >= 0).all()
    assert needs_replan(1000.0, 1300.0, threshold=0.2)
    assert not needs_replan(1000.0, 1100.0, threshold=0.2)
    assert not needs_replan(0.0, 0.0, threshold=0.2)
