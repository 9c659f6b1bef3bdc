"""Inference demand from PromQL queries against an existing Prometheus.

The test server answers ``GET /api/v1/query`` exactly as the Prometheus documentation
("HTTP API", prometheus.io/docs/prometheus/latest/querying/api) shows: the JSON envelope,
``resultType`` vector or scalar with values as strings (``"NaN"`` spelt out), an error
envelope with ``errorType`` under HTTP 400/422/503. Where a real ``prometheus`` binary is
installed, one test runs it, scraping the vLLM-shaped page of tests/test_serving.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest

from adapters.base import BadReply, DeviceTimeout, DeviceUnreachable
from adapters.promql import NoSeries, PromqlClient, QueryResult
from models.errors import ConfigError
from models.site import Inference, InferenceDemand, parse_site
from scheduler.service.daemon import Daemon
from scheduler.service.demand_feed import DemandFeed
from scheduler.service.metrics import metrics_registry
from tests.support.child import Child
from tests.support.prices import write_flat_prices
from tests.support.wait import wait_until
from tests.test_demand_feed import SITE, Clock, _serving, _settled, feeding
from tests.test_serving import FakeVllm, served

DEMAND = 'sum(rate(vllm:generation_tokens_total{model_name=~".+"}[1m]))'
TTFT = "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))"
ITL = "histogram_quantile(0.95, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[5m])))"
NOW = 1_764_600_000.0


def vector(*values: str) -> tuple[int, dict[str, Any]]:
    """A successful instant-vector answer, one series per value (labels as vLLM's)."""
    result = [
        {"metric": {"model_name": f"m{i}", "job": "vllm"}, "value": [NOW, v]}
        for i, v in enumerate(values)
    ]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


def scalar(value: str) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "success", "data": {"resultType": "scalar", "result": [NOW, value]}}


def error(code: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"status": "error", "errorType": kind, "error": message}


#: a status code and body, or "hang" (never answer)
Answer = tuple[int, dict[str, Any] | str] | str


@dataclass
class FakePrometheus:
    """What each query answers; every request heard (path, parameters)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    heard: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)  # set: stop hanging
    url: str = ""


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            fake.heard.append((parts.path, params))
            answer: Answer = error(400, "bad_data", 'invalid parameter "query"')
            if parts.path == "/api/v1/query" and "query" in params:
                answer = fake.answers.get(params["query"][0], vector())
            if isinstance(answer, str):  # "hang": the client's timeout is the test
                fake.hang.wait(10)
                return
            code, body = answer
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _query(url: str, expr: str, timeout_s: float = 2.0) -> QueryResult:
    async def go() -> QueryResult:
        async with httpx.AsyncClient() as client:
            return await PromqlClient(url, timeout_s).query(client, expr)

    return asyncio.run(go())


def test_an_instant_vector_is_summed_and_the_request_is_the_documented_one(
    prom: FakePrometheus,
) -> None:
    prom.answers[DEMAND] = vector("1200.5", "300")
    got = _query(prom.url + "/", DEMAND)
    assert got.values == (1200.5, 300.0) and got.total == 1500.5 and got.at_s == NOW
    path, params = prom.heard[-1]
    assert path == "/api/v1/query" and params["query"] == [DEMAND]  # braces, quotes: encoded
    assert params["timeout"] == ["2000ms"]  # the server gives up when the client does
    prom.answers["vector(1) * 2"] = scalar("2")
    assert _query(prom.url, "vector(1) * 2").total == 2.0


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        (vector(), NoSeries, "no series"),
        (vector("NaN"), BadReply, "NaN"),
        (vector("10", "+Inf"), BadReply, "+Inf"),
        (scalar("NaN"), BadReply, "NaN"),
        (error(422, "execution", "many-to-many matching not allowed"), BadReply, "many-to-many"),
        (error(400, "bad_data", "1:5: parse error: unexpected"), BadReply, "bad_data"),
        (error(503, "timeout", "query timed out in expression evaluation"), BadReply, "timeout"),
        ((502, "<html>Bad Gateway</html>"), BadReply, "HTTP 502"),
        (
            (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
            BadReply,
            "resultType 'matrix'",
        ),
        ((200, "not json"), BadReply, "JSON envelope"),
    ],
)
def test_an_answer_without_a_figure_is_an_error_never_zero(
    prom: FakePrometheus, answer: Answer, kind: type[Exception], words: str
) -> None:
    prom.answers[DEMAND] = answer
    with pytest.raises(kind, match=words.replace("+", r"\+")) as err:
        _query(prom.url, DEMAND)
    assert prom.url in str(err.value)  # names the server and the query
    if kind is BadReply:
        assert not isinstance(err.value, NoSeries)


def test_a_server_that_does_not_answer_times_out_and_one_not_there_is_unreachable(
    prom: FakePrometheus,
) -> None:
    prom.answers[DEMAND] = "hang"
    with pytest.raises(DeviceTimeout, match=r"no answer in 0\.2 s"):
        _query(prom.url, DEMAND, timeout_s=0.2)
    with socket.socket() as gone:  # bound, never listening: connections are refused
        gone.bind(("127.0.0.1", 0))
        with pytest.raises(DeviceUnreachable, match="connection refused"):
            _query(f"http://127.0.0.1:{gone.getsockname()[1]}", DEMAND)


def _inference(url: str, **demand: Any) -> Inference:
    return Inference(
        committed_tokens_s=500.0,
        ttft_p95_s=0.5,
        itl_p95_s=0.05,
        demand=InferenceDemand(
            engine="promql", urls=(url,), query=DEMAND, poll_s=10, stale_s=25, **demand
        ),
    )


def test_the_feed_plans_on_the_query_and_an_empty_result_is_no_reading(
    prom: FakePrometheus,
) -> None:
    feed = DemandFeed(_inference(prom.url, ttft_p95_query=TTFT, itl_p95_query=ITL))
    clock = Clock()
    feed.clock = clock
    prom.answers[TTFT] = vector("0.3")
    prom.answers[ITL] = vector("NaN")  # histogram_quantile over a window without tokens

    async def go() -> None:
        prom.answers[DEMAND] = vector()  # the engines are not scraped yet
        assert not await feed.poll()
        st = feed.status()
        assert st["source"] == "site" and not st["up"] and "no series" in st["error"]
        assert feed.demand_now() is None  # not zero demand: no demand known

        prom.answers[DEMAND] = vector("900", "300")
        assert await feed.poll()  # a first figure: plan on it
        assert feed.demand_now() == 1200.0 and feed.source() == "serving" and feed.up
        st = feed.status()
        assert st["engine"] == "promql" and st["tokens_s"] == 1200.0
        assert st["served_tokens_s"] is None and st["running"] is None  # not observed
        feed.plan_demand(np.array([500.0]), np.array([0.0]))
        feed.planned()
        sla = feed.objectives()
        assert sla["ttft_p95"]["state"] == "met" and sla["ttft_p95"]["value_s"] == 0.3
        assert sla["itl_p95"]["state"] == "unverified" and "NaN" in sla["itl_p95"]["error"]

        clock.t += 10.0
        prom.answers[DEMAND] = error(503, "timeout", "query timed out")
        prom.answers[TTFT] = vector("0.9", "0.2")  # the worst series decides
        assert not await feed.poll()  # the last reading stands, 10 s old
        assert feed.demand_now() == 1200.0 and not feed.up and "timeout" in str(feed.error)
        clock.t += 10.0
        prom.answers[DEMAND] = scalar("1250")
        assert not await feed.poll()  # within the threshold
        assert feed.objectives()["ttft_p95"]["state"] == "missed"
        clock.t += 10.0
        prom.answers[DEMAND] = vector()
        await feed.poll()
        clock.t += 20.0
        assert await feed.poll()  # 30 s without a figure: back to the site file, re-plan
        assert feed.source() == "site" and feed.status()["age_s"] == 30.0
        assert {o["state"] for o in feed.objectives().values()} == {"unverified"}
        await feed.close()

    asyncio.run(go())


def test_an_objective_without_its_query_is_unverified_and_says_so(
    prom: FakePrometheus,
) -> None:
    feed = DemandFeed(_inference(prom.url, ttft_p95_query=TTFT))
    prom.answers[DEMAND] = vector("10")
    prom.answers[TTFT] = vector("0.1")

    async def go() -> None:
        await feed.poll()
        await feed.close()

    asyncio.run(go())
    sla = feed.objectives()
    assert sla["ttft_p95"]["state"] == "met"
    assert sla["itl_p95"] == {
        "state": "unverified",
        "value_s": None,
        "target_s": 0.05,
        "error": "no [inference.demand] itl_p95_query to observe it with",
    }
    assert {p for p, _ in prom.heard} == {"/api/v1/query"}
    assert {q["query"][0] for _, q in prom.heard} == {DEMAND, TTFT}


def test_with_promql_a_drain_reads_the_engines_own_page(prom: FakePrometheus) -> None:
    with served(FakeVllm()) as (fake, page):
        fake.running.labels("m").set(2)
        fake.waiting.labels("m").set(1)
        inference = _inference(prom.url, gpu_engines={"h100/gpu0": page}, drain_engine="vllm")
        feed = DemandFeed(inference)

        async def go() -> float:
            try:
                return await feed.in_flight(page)
            finally:
                await feed.close()

        assert asyncio.run(go()) == 3.0
    assert prom.heard == []  # not Prometheus's copy, a scrape behind


def _promql_site(url: str) -> str:
    """tests/test_demand_feed.py's site, its demand read through PromQL."""
    return (
        SITE.format(url=url, objectives="", demand_extra="", miners="")
        .replace('engine = "vllm"', 'engine = "promql"')
        .replace("stale_s = 25", f"stale_s = 25\nquery = '{DEMAND}'")
    )


def _daemon(tmp_path: Path, url: str) -> Daemon:
    """A flat 50 USD/MWh price around now (as tests/test_demand_feed.py's daemon)."""
    write_flat_prices(tmp_path / "prices.csv", time.time(), 50.0)
    site = parse_site(tomllib.loads(_promql_site(url)), "test", str(tmp_path))
    return Daemon(site, tmp_path / "g.db")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda t: t.replace('urls = ["http://p:9090"]', 'urls = ["http://a", "http://b"]'),
            "urls: engine = 'promql' takes one",
        ),
        (lambda t: t.replace(f"query = '{DEMAND}'", ""), "query: required"),
        (
            lambda t: t.replace("http://p:9090", "http://p:9090/metrics"),
            "not a Prometheus base URL",
        ),
        (lambda t: t.replace('"promql"', '"vllm"'), "query: only with engine = 'promql'"),
        (lambda t: t + 'ttft_p95_query = "x"\n', "ttft_p95_query is set but ttft_p95_s is not"),
        (lambda t: t.replace('"promql"', '"triton"'), "'promql', 'vllm' or 'tgi'"),
        (
            lambda t: t + 'gpu_engines = { "h100/gpu0" = "http://e/metrics" }\n',
            "drain_engine: required",
        ),
    ],
)
def test_bad_promql_keys_are_named(change: Callable[[str], str], words: str) -> None:
    text = _promql_site("http://p:9090")
    head, tail = text.split("[daemon]")
    with pytest.raises(ConfigError) as err:
        parse_site(tomllib.loads(change(head) + "[daemon]" + tail), "test", ".")
    msg = str(err.value)
    assert words in msg and "inference" in msg


def test_a_demand_change_seen_through_promql_replans_the_daemon(
    tmp_path: Path, prom: FakePrometheus
) -> None:
    prom.answers[DEMAND] = vector("600")
    d = _daemon(tmp_path, prom.url)

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()  # one query is a figure: no second reading needed
            await _settled(d)
            quiet = _serving(d)
            assert d.demand is not None and d.demand.planned_tok_s == 600.0
            plans = d.counters.solve_s.count
            prom.answers[DEMAND] = vector("650")  # within 20 %: no re-plan
            clock.t += 10.0
            await d.poll_demand()
            await _settled(d)
            assert d.counters.solve_s.count == plans
            prom.answers[DEMAND] = vector("1500", "600")  # the surge, two models
            clock.t += 10.0
            await d.poll_demand()
            await _settled(d)
            assert d.counters.solve_s.count > plans  # re-planned on the feed's request
            assert d.demand.planned_tok_s == 2100.0 and _serving(d) > quiet
            st = d.status()["inference_demand"]
            assert st["engine"] == "promql" and st["source"] == "serving" and st["up"]
            m = metrics_registry(d)
            v = m.get_sample_value(
                "gridsched_inference_demand_tokens_per_second", {"source": "serving"}
            )
            assert v == 2100.0 and m.get_sample_value("gridsched_serving_feed_up") == 1.0
            prom.answers[DEMAND] = vector()  # the series vanish: no figure, not zero
            clock.t += 10.0
            await d.poll_demand()
            await _settled(d)
            assert d.demand.planned_tok_s == 2100.0  # kept, and not re-planned to zero
            assert m.get_sample_value("gridsched_serving_feed_up") == 0.0

    asyncio.run(go())


# --- a real Prometheus, where one is installed --------------------------------------------


#: the line Prometheus logs once its web server listens, with the port it got
PROM_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def real_prometheus(tmp_path: Path) -> Iterator[tuple[FakeVllm, str, Callable[[], None]]]:
    """A real Prometheus scraping the fake vLLM page every second: the page, Prometheus's
    base URL and a call that takes the page down."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary installed")
    with contextlib.ExitStack() as page_up:
        fake, page = page_up.enter_context(served(FakeVllm()))
        target = urlsplit(page).netloc
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: vllm\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        # port 0: Prometheus says the port it got; its output is read by a thread
        prom = Child([binary, f"--config.file={config}",
                      f"--storage.tsdb.path={tmp_path / 'data'}",
                      "--web.listen-address=127.0.0.1:0"])  # fmt: skip
        try:
            port = int(prom.wait_line(PROM_LISTENING, 60).group(1))
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ready(base), 60, 0.1, "prometheus ready")
            yield fake, base, page_up.close
        finally:
            prom.stop()


async def _until(feed: DemandFeed, ok: Callable[[], bool], what: str) -> None:
    """Poll the feed until ``ok`` holds (Prometheus scrapes every second)."""
    deadline = time.monotonic() + 60
    while True:
        await feed.poll()
        if ok():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in 60 s ({feed.status()})")
        await asyncio.sleep(0.2)


def test_a_real_prometheus_scraping_vllm_gives_the_demand_and_the_ttft(
    real_prometheus: tuple[FakeVllm, str, Callable[[], None]],
) -> None:
    fake, base, take_page_down = real_prometheus
    # prometheus_client (0.26) answers Prometheus's OpenMetrics Accept header with
    # ``escaping=underscores``: the samples are stored as vllm_generation_tokens_total.
    # Queries that match either spelling (docs/daemon.md says so).
    # ``and on() (... up ...)``: no figure once the page stops answering (a rate alone
    # goes on giving one from the samples still in its window)
    rate = (
        'sum(rate({__name__=~"vllm[:_]generation_tokens_total"}[5s]))'
        ' and on() (sum(up{job="vllm"}) > 0)'
    )
    ttft = (
        "histogram_quantile(0.95, sum by (le) "
        '(rate({__name__=~"vllm[:_]time_to_first_token_seconds_bucket"}[5s])))'
    )
    inference = Inference(
        committed_tokens_s=0.0,
        ttft_p95_s=0.5,
        demand=InferenceDemand(engine="promql", urls=(base,), query=rate, ttft_p95_query=ttft),
    )
    feed = DemandFeed(inference)
    fake.gen.labels("llama").inc(0)  # the series exist, the counter still, no TTFT seen
    fake.ttft.labels("llama")
    moving = threading.Event()
    stop = threading.Event()

    def serve() -> None:  # ~1000 tokens/s while moving, each request's TTFT 0.2 s
        while not stop.wait(0.05):
            if moving.is_set():
                fake.gen.labels("llama").inc(50)
                fake.ttft.labels("llama").observe(0.2)

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()

    async def go() -> None:
        try:
            await _until(feed, lambda: feed.demand_now() == 0.0, "a still counter as 0 tokens/s")
            sla = feed.objectives()["ttft_p95"]
            assert sla["state"] == "unverified" and "NaN" in sla["error"]  # nothing observed
            feed.plan_demand(np.array([0.0]), np.array([0.0]))
            feed.planned()
            assert not feed.wants_replan()
            moving.set()
            await _until(feed, lambda: (feed.demand_now() or 0.0) > 100.0, "the demand rising")
            assert feed.wants_replan() and feed.source() == "serving"
            await _until(
                feed, lambda: feed.objectives()["ttft_p95"]["state"] == "met", "the TTFT met"
            )
            value = feed.objectives()["ttft_p95"]["value_s"]
            assert 0.1 <= value <= 0.25  # the 0.1-0.25 bucket holds every observation
            take_page_down()  # the engine's page goes away: its series go empty
            seen = [feed.demand_now()]

            def gone() -> bool:
                if feed.up:
                    seen.append(feed.demand_now())
                return not feed.up

            await _until(feed, gone, "the series gone")
            assert "no series" in str(feed.error)
            # the last reading is kept, not read as 0
            assert feed.demand_now() == seen[-1] and (seen[-1] or 0.0) > 100.0
        finally:
            stop.set()
            await feed.close()

    asyncio.run(go())
    worker.join(5)
