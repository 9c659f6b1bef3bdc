"""Latency objectives of committed inference: mapped to the GPU modes and tokens/s that
meet them (models/inference_objectives.py, scheduler/planner/objectives.py), and reported
met / missed / unverified from a vLLM-shaped metrics page over a window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from adapters.serving import Histogram as AHistogram
from models import catalog
from models import inference_objectives as io
from models.errors import ConfigError
from models.site import Inference, InferenceDemand, parse_site
from scheduler.service.daemon import Daemon
from scheduler.service.demand import SlaState
from scheduler.service.demand_feed import DemandFeed
from scheduler.service.metrics import metrics_registry
from scheduler.service.objectives import judge
from tests.conftest import DATA, make_site, solve
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon, run_open
from tests.support.prices import write_flat_prices
from tests.support.sitefile import device_classes, site_text

DECODE_H100 = {
    "name": "h100",
    "kind": "gpu",
    "model": "H100 SXM",
    "workload": "llama-3.1-70b",
    "phase": "decode",
    "power_caps_w": [700, 350, 200],
    "decode_clock_mhz": [1005, 1410],
    "count": 16,
}
ML_ENERGY = DATA / "mlenergy_llm_inference_a100_h100_v2.csv"


@pytest.mark.parametrize("key", sorted(io.ITL_CURVES))
def test_itl_curves_re_derived_from_ml_energy(key: tuple[str, str]) -> None:
    if not ML_ENERGY.exists():
        pytest.skip(f"{ML_ENERGY.name} not present in {DATA}")
    curve = io.ITL_CURVES[key]
    derived = io.derive_itl_curve(ML_ENERGY, curve)
    assert [p.batch_size for p in derived] == [p.batch_size for p in curve.points]
    for mine, theirs in zip(curve.points, derived, strict=True):
        assert mine.mean_itl_s == pytest.approx(theirs.mean_itl_s, abs=1e-6)
        assert mine.tokens_s == pytest.approx(theirs.tokens_s, abs=0.06)
    # the curve's best load is the catalog's full-power throughput per GPU
    best = max(p.tokens_s for p in curve.points) / curve.num_gpus
    gpu = catalog.find_gpu(key[0])
    assert best == pytest.approx(catalog.gpu_full_throughput(gpu, key[1]), rel=1e-3)


def test_tokens_within_an_itl_interpolate_between_measured_loads() -> None:
    curve = io.ITL_CURVES[("H100 SXM", "llama-3.1-70b")]  # 4 GPUs
    a, b = curve.points[0], curve.points[1]  # batch 64 and 128
    mid = (a.mean_itl_s + b.mean_itl_s) / 2
    assert io.tokens_s_within(curve, mid) == pytest.approx((a.tokens_s + b.tokens_s) / 2 / 4)
    assert io.tokens_s_within(curve, a.mean_itl_s) == pytest.approx(a.tokens_s / 4)
    assert io.tokens_s_within(curve, a.mean_itl_s - 1e-6) is None  # below the lowest load
    assert io.tokens_s_within(curve, 10.0) == pytest.approx(1923.3 / 4)


def test_the_h100_8b_curve_takes_the_best_load_not_the_last() -> None:
    """H100 8B peaks at batch 192 (2,475 tokens/s) and gives less at 256-1024: a looser
    objective never counts fewer tokens than a tighter one."""
    curve = io.ITL_CURVES[("H100 SXM", "llama-3.1-8b")]
    got = [io.tokens_s_within(curve, s) or 0.0 for s in (0.07, 0.1, 0.2, 0.3)]
    assert got == sorted(got) and got[-1] == pytest.approx(2474.6)


def test_a_tighter_objective_counts_fewer_tokens_and_drops_slow_modes() -> None:
    site = make_site(devices=[DECODE_H100])
    dc = site.devices[0]
    loose = {o.mode.name: o for o in io.mode_offers(dc, 0.6) or []}
    tight = {o.mode.name: o for o in io.mode_offers(dc, 0.3) or []}
    for name, o in loose.items():
        assert o.tokens_s is not None and o.tokens_s <= o.mode.throughput_tokens_s + 1e-9
        lower = tight[name].tokens_s
        assert lower is not None and lower < o.tokens_s
    # p95 = mean x 2.09: the 350 W mode (decode never reaches it, f = 1) at batch 64
    floor = io.lowest_itl_p95_s(io.ITL_CURVES[("H100 SXM", "llama-3.1-70b")], 1.0)
    assert floor == pytest.approx(0.076770 * 456.39 / 218.36)
    edge = {o.mode.name: o for o in io.mode_offers(dc, floor + 1e-6) or []}
    assert edge["infer@350W"].tokens_s == pytest.approx(811.5 / 4, rel=1e-4)
    assert edge["infer@200W"].tokens_s is None  # a binding cap slows every step
    assert "not offered" in edge["infer@200W"].reason


def test_custom_modes_have_no_latency_figures() -> None:
    site = make_site(
        devices=[
            {
                "name": "gpu",
                "kind": "gpu",
                "count": 2,
                "modes": [{"name": "full", "power_kw": 1.0, "throughput_tokens_s": 1000.0}],
            }
        ]
    )
    assert io.mode_offers(site.devices[0], 0.1) is None


COMMITTED = {"committed_tokens_s": 3000.0, "committed_usd_per_mtok": 1.0}


def test_the_plan_counts_the_tokens_that_meet_the_objective() -> None:
    """Committed 3,000 tokens/s of Llama-70B on H100s: without an objective 7 GPUs serve
    it at the clock lock (452 tokens/s each); with itl_p95_s = 0.3 s each is counted at
    the load that meets it (342 tokens/s), so 9 are woken, and the plan says why."""
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=COMMITTED), [60.0])
    assert sum(plan.classes[0].units_at(0).values()) == 7

    stated = {**COMMITTED, "itl_p95_s": 0.3}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    chosen = {m: n for m, n in plan.classes[0].units_at(0).items() if n}
    assert chosen == {"infer@1410MHz": 9}
    k = inp.mode_names.index("infer@1410MHz")
    assert inp.tput_tok_s[k] == pytest.approx(341.5, abs=0.1)
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)
    assert any("itl_p95_s = 0.3 s, class h100" in n for n in plan.notes)


def test_a_mode_that_cannot_meet_the_objective_is_not_offered() -> None:
    stated = {**COMMITTED, "itl_p95_s": 0.165}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert inp.mode_names == ["infer@350W"]  # the cap at 200 W and the clock lock: slower
    assert any("infer@200W not offered" in n for n in plan.notes)
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)


def test_the_fleet_s_own_p95_over_mean_replaces_the_published_one() -> None:
    """With the ratio the daemon measured (mean_s against value_s in status) stated as
    1.5, the 200 W cap meets 0.165 s at its lowest load (0.0768 x 1.5 / 0.894 = 0.129 s)
    and is offered again."""
    stated = {**COMMITTED, "itl_p95_s": 0.165, "itl_p95_over_mean": 1.5}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert inp.mode_names == ["infer@200W", "infer@350W", "infer@1410MHz"]
    assert "itl_p95_s mapped with p95 = 1.50 x mean ITL (the site's)" in plan.notes
    with pytest.raises(ConfigError, match=r"inference\.itl_p95_over_mean"):
        make_site(devices=[DECODE_H100], inference={**stated, "itl_p95_over_mean": 0.5})


def test_no_mode_meets_it_the_fastest_serves_at_its_lowest_load_and_says_so() -> None:
    """Rule 3: sleeping every GPU would harm committed inference more than the latency;
    the fastest mode serves at its lowest measured load, and the note says it misses."""
    stated = {**COMMITTED, "itl_p95_s": 0.05}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert inp.mode_names == ["infer@350W"]
    assert inp.tput_tok_s[0] == pytest.approx(811.5 / 4, rel=1e-4)
    assert any("no mode meets it" in n and "expected missed" in n for n in plan.notes)


def test_ttft_is_reported_not_mapped_and_the_plan_says_so() -> None:
    stated = {**COMMITTED, "ttft_p95_s": 0.5}
    _inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert sum(plan.classes[0].units_at(0).values()) == 7
    assert any(n.startswith("ttft_p95_s: not mapped") for n in plan.notes)


# --- reported from the serving metrics ------------------------------------------------

#: vLLM's own buckets (vllm/v1/metrics/loggers.py): TTFT and inter-token latency, seconds
VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip


class VllmPage:
    """A metrics page with vLLM's names, types, labels and buckets."""

    def __init__(self, legacy_itl: bool = False) -> None:
        self.reg = CollectorRegistry()
        lab = ["model_name", "engine"]
        Gauge("vllm:num_requests_running", "running", lab, registry=self.reg).labels("m", "0")
        Gauge("vllm:num_requests_waiting", "waiting", lab, registry=self.reg).labels("m", "0")
        self.gen = Counter("vllm:generation_tokens", "generated", lab, registry=self.reg)
        self.gen.labels("m", "0")
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            lab,
            buckets=VLLM_TTFT_BUCKETS,
            registry=self.reg,
        ).labels("m", "0")
        name = (
            "vllm:time_per_output_token_seconds"
            if legacy_itl
            else "vllm:inter_token_latency_seconds"
        )
        self.itl = Histogram(
            name,
            "Histogram of inter-token latency in seconds.",
            lab,
            buckets=VLLM_ITL_BUCKETS,
            registry=self.reg,
        ).labels("m", "0")


@contextlib.contextmanager
def page(legacy_itl: bool = False) -> Iterator[tuple[VllmPage, str]]:
    p = VllmPage(legacy_itl)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=p.reg)
    try:
        yield p, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _feed(url: str, window_s: float, **objectives: float) -> tuple[DemandFeed, Clock]:
    demand = InferenceDemand(
        engine="vllm", urls=(url,), poll_s=10, stale_s=25, objective_window_s=window_s
    )
    feed = DemandFeed(Inference(committed_tokens_s=100.0, demand=demand, **objectives))
    clock = Clock()
    feed.clock = clock
    return feed, clock


async def _poll_at(feed: DemandFeed, clock: Clock, t: float) -> None:
    clock.t = 1000.0 + t
    await feed.poll()


def _itl(feed: DemandFeed) -> dict[str, Any]:
    return feed.objectives()["itl_p95"]


@pytest.mark.parametrize("legacy", [False, True], ids=["inter_token_latency", "tpot"])
def test_the_percentile_is_over_the_window_and_a_slow_spell_leaves_it(legacy: bool) -> None:
    """ITL objective 0.1 s, window 60 s, polls every 10 s: 50 slow tokens (0.2 s) in the
    first 10 s miss it while they are in the window (even among 500 fast ones), and it
    is met once the window has moved past them."""
    with page(legacy) as (p, url):
        feed, clock = _feed(url, 60.0, itl_p95_s=0.1)

        async def go() -> None:
            await _poll_at(feed, clock, 0)
            assert _itl(feed)["state"] == "unverified"  # one reading: no window yet
            for _ in range(50):
                p.itl.observe(0.2)
            await _poll_at(feed, clock, 10)
            o = _itl(feed)
            assert o["state"] == "missed" and o["window_s"] == 10.0
            assert o["observations"] == 50 and 0.15 < o["value_s"] <= 0.2
            for t in range(20, 80, 10):
                for _ in range(100):
                    p.itl.observe(0.02)
                await _poll_at(feed, clock, t)
                o = _itl(feed)
                if t <= 60:  # the slow tokens are 50 of at most 550: above the 5 % tail
                    assert o["state"] == "missed", (t, o)
            assert o["state"] == "met" and o["window_s"] == 60.0
            assert o["observations"] == 600 and o["value_s"] <= 0.025
            assert o["mean_s"] == pytest.approx(0.02)  # the histogram's _sum / _count
            await feed.close()

        asyncio.run(go())


def test_no_observation_no_reading_or_a_stale_one_is_unverified_never_met() -> None:
    with page() as (p, url):
        feed, clock = _feed(url, 0.0, itl_p95_s=0.1, ttft_p95_s=0.5)

        async def go() -> None:
            await _poll_at(feed, clock, 0)
            p.itl.observe(0.02)
            p.ttft.observe(0.3)
            await _poll_at(feed, clock, 10)
            got = feed.objectives()
            assert got["itl_p95"]["state"] == "met" and got["ttft_p95"]["state"] == "met"
            await _poll_at(feed, clock, 20)  # window 0: the last poll's, which saw nothing
            got = feed.objectives()
            assert {o["state"] for o in got.values()} == {"unverified"}
            assert got["itl_p95"]["observations"] == 0 and got["itl_p95"]["value_s"] is None
            p.itl.observe(0.02)
            clock.t += 30  # past stale_s (25 s) with no poll: no young reading
            assert {o["state"] for o in feed.objectives().values()} == {"unverified"}
            await feed.close()

        asyncio.run(go())


def test_an_engine_that_cannot_be_read_leaves_the_objectives_unverified() -> None:
    with page() as (p, url):
        feed, clock = _feed(url, 300.0, itl_p95_s=0.1)

        async def go() -> None:
            await _poll_at(feed, clock, 0)
            p.itl.observe(0.02)
            await _poll_at(feed, clock, 10)
            assert _itl(feed)["state"] == "met"
            await feed.close()

        asyncio.run(go())
    # the page is gone: polls fail, and once the last reading is stale nothing is claimed

    async def after() -> None:
        await _poll_at(feed, clock, 20)
        assert not feed.up and _itl(feed)["state"] == "met"  # the last reading, still young
        await _poll_at(feed, clock, 40)
        assert not feed.up and _itl(feed)["state"] == "unverified"
        await feed.close()

    asyncio.run(after())


def test_status_and_metrics_report_each_objective(tmp_path: Path) -> None:
    with page() as (p, url):
        text = SITE.format(url=url)
        d = Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "g.db")
        assert d.demand is not None
        clock = Clock()
        d.demand.clock = clock

        async def go() -> None:
            assert d.demand is not None
            await _poll_at(d.demand, clock, 0)
            for _ in range(20):
                p.itl.observe(0.3)  # every token slower than 0.1 s
                p.ttft.observe(0.2)
            await _poll_at(d.demand, clock, 10)
            await d.demand.close()

        asyncio.run(go())
        sla = d.inference_sla()
        assert sla["itl_p95"]["state"] == "missed" and sla["ttft_p95"]["state"] == "met"
        m = metrics_registry(d)
        for objective, state in (("itl_p95", "missed"), ("ttft_p95", "met")):
            labels = {"objective": objective, "state": state}
            assert m.get_sample_value("gridsched_inference_sla", labels) == 1.0
        seconds = "gridsched_inference_objective_seconds"
        assert m.get_sample_value(seconds, {"objective": "itl_p95", "kind": "target"}) == 0.1
        observed = m.get_sample_value(seconds, {"objective": "itl_p95", "kind": "observed"})
        assert observed is not None and 0.2 < observed <= 0.3
        d.store.close()


SITE = """
[site]
name = "objectives"
interconnect_kw = 100
[prices]
format = "demo"
[inference]
committed_tokens_s = 100
ttft_p95_s = 0.5
itl_p95_s = 0.1
[inference.demand]
engine = "vllm"
urls = ["{url}"]
poll_s = 10
[[devices]]
name = "gpu"
kind = "gpu"
count = 2
modes = [{{ name = "full", power_kw = 1.0, throughput_tokens_s = 1000.0 }}]
[devices.adapter]
kind = "sim"
"""


@pytest.mark.parametrize(
    ("inference", "where", "words"),
    [
        ({"itl_p95_s": -0.1}, "inference.itl_p95_s", "greater than 0"),
        ({"ttft_p95_s": "fast"}, "inference.ttft_p95_s", "valid number"),
        (
            {"demand": {"urls": ["http://e/metrics"], "objective_window_s": -5}},
            "inference.demand.objective_window_s",
            "greater than or equal to 0",
        ),
    ],
)
def test_a_bad_objective_is_named_with_what_is_valid(
    inference: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_site(devices=[DECODE_H100], inference=inference)
    msg = str(err.value)
    assert where in msg and words in msg, msg


def _hist(bounds: tuple[float, ...], per_bucket: tuple[float, ...]) -> AHistogram:
    """A cumulative histogram from counts per bucket (the last bucket +Inf)."""
    cum = tuple(float(sum(per_bucket[: i + 1])) for i in range(len(per_bucket)))
    return AHistogram((*bounds, math.inf), cum, 0.0, cum[-1])


@pytest.mark.parametrize(
    ("per_bucket", "target_s", "state", "bucket"),
    [
        ((0, 0, 96, 4, 0), 0.05, SlaState.MET, (0.025, 0.05)),  # p95 in (0.025, 0.05]
        ((0, 0, 96, 4, 0), 0.025, SlaState.MISSED, (0.025, 0.05)),  # above 0.025 for sure
        ((0, 0, 96, 4, 0), 0.04, SlaState.UNVERIFIED, (0.025, 0.05)),  # inside: cannot tell
        ((90, 0, 0, 0, 10), 0.5, SlaState.UNVERIFIED, (0.075, math.inf)),  # beyond the last
        ((90, 0, 0, 0, 10), 0.075, SlaState.MISSED, (0.075, math.inf)),
        ((100, 0, 0, 0, 0), 0.01, SlaState.MET, (0.0, 0.01)),
    ],
)
def test_the_buckets_decide_what_can_be_claimed(
    per_bucket: tuple[float, ...],
    target_s: float,
    state: SlaState,
    bucket: tuple[float, float],
) -> None:
    h = _hist((0.01, 0.025, 0.05, 0.075), per_bucket)
    j = judge(h, 0.95, target_s)
    assert j.state is state and j.bucket_s == bucket
    assert (j.reason is not None) == (state is SlaState.UNVERIFIED)
    assert judge(AHistogram(), 0.95, target_s).state is SlaState.UNVERIFIED


def test_a_target_inside_a_vllm_bucket_is_unverified_and_names_the_bucket() -> None:
    with page() as (p, url):
        feed, clock = _feed(url, 300.0, itl_p95_s=0.06)

        async def go() -> None:
            await _poll_at(feed, clock, 0)
            for _ in range(100):
                p.itl.observe(0.055)  # vLLM's bucket (0.05, 0.075]: below 0.06 or not?
            await _poll_at(feed, clock, 10)
            o = _itl(feed)
            assert o["state"] == "unverified" and o["bucket_s"] == [0.05, 0.075]
            assert "(0.05, 0.075]" in o["error"]
            await feed.close()

        asyncio.run(go())


def test_a_percentile_beyond_the_last_bucket_is_json_in_status(tmp_path: Path) -> None:
    """vLLM's last finite ITL bound is 80 s: a p95 above it is in the +Inf bucket, whose
    top is null in /v1/status (JSON has no infinity)."""
    with page() as (p, url):
        feed, clock = _feed(url, 300.0, itl_p95_s=0.1)

        async def go() -> None:
            await _poll_at(feed, clock, 0)
            for _ in range(10):
                p.itl.observe(100.0)
            await _poll_at(feed, clock, 10)
            await feed.close()

        asyncio.run(go())
    o = _itl(feed)
    assert o["state"] == "missed" and o["bucket_s"] == [80.0, None]
    assert json.loads(json.dumps(feed.objectives(), allow_nan=False)) == feed.objectives()


def daemon_site(objective: dict[str, Any], **gpu: Any) -> str:
    """16 H100s decoding (``gpu``: further fields of their class), 3,000 tokens/s committed,
    the prices from prices.csv; ``objective``: the objective's fields in [inference]."""
    return site_text(
        "objective modes",
        site={"base_load_kw": 0},
        prices={"format": "csv", "path": "prices.csv", "column": "price"},
        hashprice=None,
        inference={"committed_tokens_s": 3000, "committed_usd_per_mtok": 1.0, **objective},
        devices=device_classes(DECODE_H100 | gpu),
    )


@pytest.mark.parametrize(
    ("objective", "clocks", "awake"),
    [({}, (1005, 1410), 7), ({"itl_p95_s": 0.165}, None, 15)],
    ids=["none", "itl"],
)
def test_the_daemon_commands_only_the_modes_offered_for_the_objective(
    tmp_path: Path, objective: dict[str, Any], clocks: tuple[int, int] | None, awake: int
) -> None:
    """Without an objective the daemon locks 7 GPUs' clocks; with itl_p95_s = 0.165 s
    only the 350 W cap is offered, counted at 203 tokens/s (batch 64): 15 GPUs run it,
    none clock-locked."""
    clock = FakeClock()
    write_flat_prices(tmp_path / "prices.csv", clock.time(), 60.0)
    d, devices = memory_daemon(daemon_site(objective), tmp_path, clock, asleep=True)

    async def body() -> None:
        await d.feeds.refresh_prices()
        plan = await d.replan("test")
        assert plan is not None
        await d.dispatch()
        running = [v for v in devices.values() if v.state == "running"]
        assert len(running) == awake
        assert {(v.told[-1].power_w, v.told[-1].clocks_mhz) for v in running} == {(350.0, clocks)}
        if objective:
            assert any("infer@200W not offered" in n for n in plan.notes)

    run_open(d, body)
