"""benchmarks/site_scale.py on a small fleet (the simulator and the daemon in their own
processes, as at the example site's size): the report has every figure, and every miner the
curtail needed asleep was commanded; and the daemon's own measure of its telemetry sweeps,
which the benchmark reads from ``/metrics``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from scheduler.service.api import create_app
from tests.support.daemon import running
from tests.support.memfleet import MIXED_DEVICES, memory_daemon

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
