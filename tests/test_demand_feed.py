"""The daemon's inference demand feed, end to end: a vLLM-shaped metrics page served by
prometheus_client on loopback (the names and types vLLM documents, tests/test_serving.py),
the daemon on a simulated site in process (no HTTP server, no jobs: each poll is called
as the job would call it, with the feed's clock set by the test).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import ModeRequest
from adapters.fleet import Outcome
from models.errors import ConfigError
from models.signals import EventType, GridEvent
from models.site import parse_site
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.metrics import metrics_registry
from tests.support.daemon import free_loopback_base as _free_base
from tests.support.daemon import running
from tests.support.hook import capacity_hook
from tests.support.prices import write_flat_prices
from tests.support.wait import until
from tests.test_failsafe import _absurd_price, _get
from tests.test_serving import FakeVllm, served

SITE = """
[site]
name = "demand test"
interconnect_kw = 500
pue = 1.0
base_load_kw = 0

[prices]
format = "csv"
path = "prices.csv"
column = "price"

[mining]
hashprice_usd_per_ths_day = 0.08

[inference]
committed_tokens_s = 500
committed_usd_per_mtok = 0.6
spot_usd_per_mtok = 0.5
{objectives}

[inference.demand]
engine = "vllm"
urls = ["{url}"]
poll_s = 10
replan_threshold = 0.2
stale_s = 25
{demand_extra}

[daemon]
horizon = "2h"
step = "5min"
stage_ahead_s = 0
confirm_after_s = 0

[[devices]]
name = "h100"
kind = "gpu"
model = "H100 SXM"
power_caps_w = [700, 350]
count = 4
[devices.adapter]
kind = "sim"
{miners}
"""

MINERS = """
[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 2
[devices.adapter]
kind = "sim"
sim_base = "{base}"
sim_sleep_s = 0.2
sim_wake_s = 0.4
timeout_s = 10
"""


@pytest.fixture
def engine() -> Iterator[tuple[FakeVllm, str]]:
    with served(FakeVllm()) as served_engine:
        yield served_engine


def _daemon(
    tmp_path: Path, url: str, objectives: str = "", extra: str = "", miners: str = ""
) -> Daemon:
    """A flat 50 USD/MWh price around now: serving pays, running idle capacity does not."""
    write_flat_prices(tmp_path / "prices.csv", time.time(), 50.0)
    text = SITE.format(url=url, objectives=objectives, demand_extra=extra, miners=miners)
    return Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "g.db")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@contextlib.asynccontextmanager
async def feeding(d: Daemon) -> AsyncIterator[Clock]:
    assert d.demand is not None
    clock = Clock()
    d.demand.clock = clock
    async with running(d):
        await d.feeds.refresh_prices()
        assert d.feeds.prices is not None and d.feeds.price_error is None
        try:
            yield clock
        finally:
            await d.demand.close()


async def _settled(d: Daemon) -> None:
    """The re-plans (and their dispatch) that polls asked for, done."""
    for _ in range(100):
        tasks = [t for t in d.tasks.running if not t.done()]
        if not tasks and not d.planning.pending:
            return
        await asyncio.wait(tasks, timeout=5)
    raise AssertionError("re-plans did not settle")


def _serving(d: Daemon) -> int:
    return sum(
        1 for i, m in d.devices.modes.items() if d.fleet.status[i].group == "h100" and m != SLEEP
    )


async def _poll(
    d: Daemon, clock: Clock, fake: FakeVllm, tokens_s: float, waiting: float = 0
) -> None:
    """One poll period: the engine generates ``tokens_s`` for 10 s, then the feed reads it."""
    fake.gen.labels("llama").inc(tokens_s * 10.0)
    fake.waiting.labels("llama").set(waiting)
    clock.t += 10.0
    await d.poll_demand()
    await _settled(d)


def test_a_demand_surge_in_the_serving_metrics_reaches_the_gpus_within_two_polls(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    fake, url = engine
    d = _daemon(tmp_path, url)

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()  # the first reading: no rate yet
            await _poll(d, clock, fake, 600.0)  # a quiet hour: 600 tokens/s asked
            await d.replan("test")
            quiet = _serving(d)
            st = d.status()["inference_demand"]
            assert st["source"] == "serving" and st["tokens_s"] == pytest.approx(600.0)
            assert st["planned_tokens_s"] == pytest.approx(600.0)
            assert quiet < 4
            plans = d.counters.solve_s.count
            # the surge: 1800 tokens/s served and a queue
            for _ in range(2):
                await _poll(d, clock, fake, 1800.0, waiting=8)
                if _serving(d) > quiet:
                    break
            assert d.counters.solve_s.count > plans  # re-planned on the feed's own request
            assert _serving(d) > quiet
            assert d.demand is not None and d.demand.planned_tok_s is not None
            assert d.demand.planned_tok_s > 1800.0  # served plus the queue's backlog
            m = metrics_registry(d)
            assert m.get_sample_value("gridsched_serving_feed_up") == 1.0
            v = m.get_sample_value(
                "gridsched_inference_demand_tokens_per_second", {"source": "serving"}
            )
            assert v is not None and v > 1800.0

    asyncio.run(go())


def test_a_small_change_does_not_replan(tmp_path: Path, engine: tuple[FakeVllm, str]) -> None:
    fake, url = engine
    d = _daemon(tmp_path, url)

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()
            await _poll(d, clock, fake, 600.0)
            plans = d.counters.solve_s.count
            await _poll(d, clock, fake, 650.0)  # within 20 %
            assert d.counters.solve_s.count == plans

    asyncio.run(go())


def test_an_engine_that_goes_silent_keeps_the_last_reading_then_the_site_file(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    fake, url = engine
    d = _daemon(tmp_path, url)

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()
            await _poll(d, clock, fake, 1500.0)
            assert d.demand is not None
            with socket.socket() as gone:  # bound, never listening: the engine is down
                gone.bind(("127.0.0.1", 0))
                d.demand.endpoints[0].url = f"http://127.0.0.1:{gone.getsockname()[1]}/metrics"
                clock.t += 10.0
                await d.poll_demand()
                await _settled(d)
                st = d.status()["inference_demand"]
                # kept: 10 s old, under stale_s (25 s)
                assert st["source"] == "serving" and st["tokens_s"] == pytest.approx(1500.0)
                assert st["up"] is False and "connection refused" in st["error"]
                m = metrics_registry(d)
                assert m.get_sample_value("gridsched_serving_feed_up") == 0.0
                clock.t += 20.0
                await d.poll_demand()
                await _settled(d)
            st = d.status()["inference_demand"]
            assert st["source"] == "site" and st["tokens_s"] == 500.0 and st["age_s"] == 30.0
            assert d.demand.planned_tok_s is None  # re-planned on the site file's figures
            served = (await _get(d, "/v1/status")).json()["inference_demand"]
            assert served["source"] == "site" and "connection refused" in served["error"]
            v = metrics_registry(d).get_sample_value(
                "gridsched_inference_demand_tokens_per_second", {"source": "site"}
            )
            assert v == 500.0

    asyncio.run(go())


def test_latency_objectives_are_met_missed_or_unverified(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    fake, url = engine
    objectives = "ttft_p95_s = 0.5\nitl_p95_s = 0.05"
    # each poll's own window (the default 300 s would still hold the first poll's tokens)
    d = _daemon(tmp_path, url, objectives=objectives, extra="objective_window_s = 0")

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()
            sla = d.status()["inference_sla"]
            assert {o["state"] for o in sla.values()} == {"unverified"}  # nothing observed yet
            for _ in range(19):
                fake.ttft.labels("llama").observe(0.2)
            fake.ttft.labels("llama").observe(0.3)
            for _ in range(10):
                fake.itl.labels("llama").observe(0.2)  # every token slow
            await _poll(d, clock, fake, 600.0)
            sla = d.status()["inference_sla"]
            assert sla["ttft_p95"]["state"] == "met" and sla["ttft_p95"]["value_s"] <= 0.5
            assert sla["itl_p95"]["state"] == "missed"
            m = metrics_registry(d)
            labels = {"objective": "itl_p95", "state": "missed"}
            assert m.get_sample_value("gridsched_inference_sla", labels) == 1.0
            # a window without observations claims nothing
            await _poll(d, clock, fake, 600.0)
            assert d.status()["inference_sla"]["itl_p95"]["state"] == "unverified"

    asyncio.run(go())


def test_a_gpu_engine_that_is_no_gpu_of_the_site_is_named(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    _, url = engine
    with pytest.raises(ConfigError, match="h100/gpu9"):
        _daemon(tmp_path, url, extra=f'gpu_engines = {{ "h100/gpu9" = "{url}" }}')


@pytest.fixture
def router() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The serving layer's capacity hook: a real HTTP server that records what it hears."""
    heard: list[dict[str, Any]] = []
    with capacity_hook(heard.append) as url:
        yield url, heard


def test_the_fast_path_sheds_miners_at_once_and_drained_gpus_after(
    tmp_path: Path,
    engine: tuple[FakeVllm, str],
    router: tuple[str, list[dict[str, Any]]],
) -> None:
    fake, url = engine
    hook_url, heard = router
    fake.running.labels("llama").set(1)  # a request that never finishes: the bound is waited
    engines = ", ".join(f'"h100/gpu{i}" = "{url}"' for i in range(4))
    d = _daemon(
        tmp_path,
        url,
        extra=f"drain_s = 0.3\ngpu_engines = {{ {engines} }}",
        miners=f'serving_hook_url = "{hook_url}"\n' + MINERS.format(base=_free_base(2)),
    )
    batches: list[set[str]] = []
    apply = d.fleet.apply

    async def recorded(requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        batches.append(set(requests))
        return await apply(requests)

    d.fleet.apply = recorded  # type: ignore[method-assign]
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # the shed alone

    async def go() -> None:
        async with feeding(d):
            ev = GridEvent(
                id="dr",
                type=EventType.CURTAIL,
                start=datetime.now(UTC),
                duration="1h",
                limit_kw=0.0,
            )
            await d.accept([ev], "test", None, "{}")
            await until(lambda: not d.shedder.running, what="the fast path done")
            miners = {i for i in d.fleet.status if i.startswith("s19/")}
            slept = {i for i, m in d.devices.modes.items() if i.startswith("h100/") and m == SLEEP}
            assert miners and slept  # committed 500 tokens/s keeps some GPUs serving
            first, later = batches[0], batches[1]
            assert miners <= first and not (slept & first)
            assert later == slept
            assert {h["device"] for h in heard if not h["serving"]} == slept
            m = metrics_registry(d)
            assert m.get_sample_value("gridsched_gpu_drain_seconds_count") == len(slept)

    asyncio.run(go())


def test_bad_demand_keys_are_named() -> None:
    text = SITE.format(url="ftp://x", objectives="", demand_extra="", miners="")
    text = text.replace('engine = "vllm"', 'engine = "triton"').replace("poll_s = 10", "poll_s = 0")
    with pytest.raises(ConfigError) as err:
        parse_site(tomllib.loads(text), "test", ".")
    msg = str(err.value)
    assert "inference.demand.engine" in msg and "'vllm' or 'tgi'" in msg
    assert "inference.demand.poll_s" in msg and "inference.demand.urls" in msg


def test_objectives_without_a_feed_are_unverified(tmp_path: Path) -> None:
    text = SITE.format(
        url="http://x/metrics", objectives="ttft_p95_s = 1.0", demand_extra="", miners=""
    )
    text = text.split("[inference.demand]")[0] + "[daemon]" + text.split("[daemon]")[1]
    d = Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "g.db")
    assert d.demand is None
    assert d.inference_sla() == {
        "ttft_p95": {"state": "unverified", "value_s": None, "target_s": 1.0}
    }
    m = metrics_registry(d)
    assert (
        m.get_sample_value(
            "gridsched_inference_sla", {"objective": "ttft_p95", "state": "unverified"}
        )
        == 1.0
    )
    assert m.get_sample_value("gridsched_serving_feed_up") is None
    d.store.close()


def test_a_failed_plan_leaves_the_demand_change_asking_for_a_replan(
    tmp_path: Path, engine: tuple[FakeVllm, str]
) -> None:
    fake, url = engine
    d = _daemon(tmp_path, url)

    async def go() -> None:
        async with feeding(d) as clock:
            await d.poll_demand()
            await _poll(d, clock, fake, 600.0)
            assert d.demand is not None and d.demand.planned_tok_s == pytest.approx(600.0)
            fake.gen.labels("llama").inc(18_000)
            clock.t += 10.0
            assert await d.demand.poll()  # 1800 tokens/s: beyond the threshold
            await _absurd_price(d)  # a real solve that ends in error
            assert await d.replan("demand") is None
            assert d.demand.planned_tok_s == pytest.approx(600.0)  # not what failed
            assert d.demand.wants_replan()
            cancel = GridEvent(id="absurd", type=EventType.CANCEL)
            await d.accept([cancel], "test", None, "{}")
            for t in list(d.tasks.running):  # the re-plan the cancel asks for: run here instead
                t.cancel()
            d.planning.pending = False
            assert await d.replan("demand") is not None
            assert d.demand.planned_tok_s == pytest.approx(1800.0)
            assert not d.demand.wants_replan()

    asyncio.run(go())
