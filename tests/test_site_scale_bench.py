"""benchmarks/site_scale.py on a small fleet (the simulator and the daemon in their own
processes, as at the example site's size): the report has every figure, and every miner the
curtail needed asleep was commanded; and the daemon's own measure of its telemetry sweeps,
which the benchmark reads from ``/metrics``."""

from __future__ import annotations

import asyncio
import pstats
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.base import Applied, ModeRequest, Telemetry  # noqa: E402
from adapters.fleet import Outcome  # noqa: E402
from adapters.outcomes import OutcomeKind  # noqa: E402
from benchmarks import site_scale  # noqa: E402
from models.signals import EventType, GridEvent  # noqa: E402
from scheduler.service.api import create_app  # noqa: E402
from tests.support.clock import FakeClock  # noqa: E402
from tests.support.daemon import running  # noqa: E402
from tests.support.memfleet import MemoryDevice, memory_daemon, run_open  # noqa: E402
from tests.support.sitefile import MIXED_DEVICES  # noqa: E402
from tests.support.wait import until  # noqa: E402

SITE = (
    """
[site]
name = "sweep test"
interconnect_kw = 100
pue = 1.0

[prices]
format = "demo"

[mining]
hashprice_usd_per_ths_day = 0.08

[daemon]
horizon = "2h"
step = "5min"
stage_ahead_s = 0
confirm_after_s = 0
"""
    + MIXED_DEVICES
)


def test_the_daemon_exposes_its_sweep_durations(tmp_path: Path) -> None:
    d, _ = memory_daemon(SITE, tmp_path)

    async def go() -> str:
        async with running(d):  # opening reads the fleet once
            await d.poll(dispatch=False)
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
                r = await c.get("/metrics")
            assert r.status_code == 200
            return r.text

    text = asyncio.run(go())
    assert d.counters.sweep_s.count == 2
    lines = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith("gridsched_fleet_sweep_duration_seconds_")
    )
    assert float(lines["gridsched_fleet_sweep_duration_seconds_count"]) == 2.0
    assert 'gridsched_fleet_sweep_duration_seconds_bucket{le="+Inf"}' in lines
    # the goals' bounds are buckets: 5 s at the example site, 20 s at 30,000 miners
    bucket = "gridsched_fleet_sweep_duration_seconds_bucket"
    assert {f'{bucket}{{le="5.0"}}', f'{bucket}{{le="20.0"}}'} <= set(lines)


def test_a_small_site_under_the_daemon(tmp_path: Path) -> None:
    profile = tmp_path / "loop.pstats"  # GRIDSCHED_PROFILE, marked by the benchmark's signals
    r = site_scale.main(
        ["--miners", "40", "--gpus", "8", "--poll-s", "1", "--scrapes", "3", "--sweeps", "2",
         "--sleep-s", "0.3", "--wake-s", "0.5", "--curtail-timeout-s", "60",
         "--profile", str(profile)]
    )  # fmt: skip
    # the daemon's loop thread, profiled over the sweeps and scrapes only: their readings
    names = {fn[2] for fn in pstats.Stats(str(profile)).stats}  # type: ignore[attr-defined]
    assert "read_all" in names and Path(f"{profile}.gc.json").exists()
    assert r.sweep_threads_cpu_s and max(r.sweep_threads_cpu_s.values()) > 0
    assert not r.aborted and r.scrapes_timed_out == 0
    # the plan runs what pays at this hour's demo price: 95 % of the miners at least, the
    # share the benchmark waits for
    assert r.devices_ok == 48 and 38 <= r.running <= 40
    # every miner mining was commanded, and its sleep read back by the daemon
    assert len(r.commanded_s) == r.running and all(v >= 0 for v in r.commanded_s.values())
    assert len(r.confirmed_s) + r.unconfirmed >= r.running
    assert all(r.confirmed_s[h] >= r.commanded_s[h] for h in r.confirmed_s)
    assert len(r.scrape_s) >= 3 and r.metrics_series > 0 and r.metrics_bytes > 0
    # and [metrics] listen, scraped beside it, said the age of what it answered
    assert len(r.listener_s) == len(r.scrape_s) == len(r.listener_age_s)
    assert len(r.sweep_s) >= 2 and all(s > 0 for s in r.sweep_s)
    assert r.rss_mb > 0 and r.hwm_mb >= r.rss_mb and r.fast_path_s is not None
    assert [p.name for p in r.phases][-2:] == ["curtail: commanded", "curtail: read-back"]
    assert r.errors == []  # nothing the daemon logged as an error before it was stopped


def test_a_plan_adopted_while_the_fast_path_commands_does_not_command_them_again(
    tmp_path: Path,
) -> None:
    """At 7,500 miners on a loaded host the fast path's commands took 114 s; the re-plan
    the signal asks for came 3 s in, and its dispatch, reading the modes from before the
    shed (they change when the whole batch is answered), sent every miner its sleep a
    second time, doubling the commands in flight while the curtail was still going out."""
    clock = FakeClock()
    d, devices = memory_daemon(SITE.replace("0.08", "0.5"), tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
    gate = asyncio.Event()

    def slowed(dev: MemoryDevice) -> None:
        real = dev.apply

        async def apply(request: ModeRequest) -> Applied:
            await gate.wait()
            return await real(request)

        dev.apply = apply  # type: ignore[method-assign]

    sent: list[set[str]] = []  # the devices of each batch of commands, as decided
    real_apply = d.fleet.apply

    async def apply(requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        sent.append(set(requests))
        return await real_apply(requests)

    async def body() -> None:
        await d.replan("start")
        await d.dispatch()
        assert all(dev.state == "running" for dev in devices.values())
        for dev in devices.values():
            dev.told.clear()
            slowed(dev)
        d.fleet.apply = apply  # type: ignore[method-assign]
        start = datetime.fromtimestamp(clock.time(), UTC)
        event = GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h", limit_kw=0)
        await d.accept([event], "test", None, "{}")
        shed = asyncio.create_task(d.fast_path("signal"))
        await until(lambda: len(sent) == 1, what="the fast path's commands in flight")
        replan = asyncio.create_task(d.replan("signal"))
        # the re-plan's dispatch has decided (its batch) or found nothing to send
        await until(lambda: len(sent) > 1 or replan.done(), what="the re-plan's dispatch")
        gate.set()
        await asyncio.gather(shed, replan)

    run_open(d, body)
    miners = {i for i in devices if not i.startswith("gpu")}
    assert miners <= sent[0]  # the fast path slept every miner
    again = [sorted(batch & miners) for batch in sent[1:]]
    assert not any(again), again
    told = {i: [r.describe() for r in devices[i].told] for i in miners}
    assert all(t == ["sleep"] for t in told.values()), told


def test_an_unconfirmed_command_not_read_since_does_not_say_what_it_reads() -> None:
    """At 30,000 miners a sweep outlasts the 60 s deadline: 1,874 sleeps went unconfirmed
    "(it reads running)" though their only reading was from before the command."""
    from tests.test_fleet_parts import _readback

    rb, _, _, seen = _readback()
    sleep = ModeRequest("sleep")
    rb.accepted(Outcome("m1", sleep, True, 1, 0.0, Applied(sleep, None), at=100.0))
    rb.settle("m1", Telemetry("m1", 99.0, "running"), now=111.0)  # read before the command
    assert [o.kind for o in seen] == [OutcomeKind.UNCONFIRMED]
    assert "not read since the command; it last read running" in (seen[0].error or "")
