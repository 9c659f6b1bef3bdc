"""The per-class aggregates of ``/metrics``: a render reuses the last render's sums while
nothing they are summed from changed, and counts health afresh every time (issue 21: the
walk was most of a render, once a second under scrapes, at the example site's size)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.base import Health, ModeRequest
from scheduler.service.daemon import Daemon
from scheduler.service.metrics_aggregates import ClassAggregates, class_aggregates
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import site_text

SITE = site_text("aggregates", daemon=None)


def _same(a: ClassAggregates, b: ClassAggregates) -> None:
    assert a.power_units == b.power_units
    assert a.hashrate_hs == b.hashrate_hs
    assert a.tokens_s == b.tokens_s
    assert a.health == b.health


def _run(tmp_path: Path, body: object) -> None:
    d, devices = memory_daemon(SITE, tmp_path)

    async def go() -> None:
        await d.open()
        try:
            await body(d, devices)  # type: ignore[operator]
        finally:
            await d.close()

    asyncio.run(go())


def test_a_render_with_nothing_changed_reuses_the_sums_and_counts_health_again(
    tmp_path: Path,
) -> None:
    async def body(d: Daemon, devices: object) -> None:
        await d.poll(dispatch=False)
        first = class_aggregates(d)
        again = class_aggregates(d, first)
        assert again.power_units is first.power_units  # reused, not walked again
        _same(again, class_aggregates(d))
        # a reading fails mid-sweep: health changes with no poll ended and no mode changed
        st = d.fleet.status["old/1"]
        st.health = Health.DEGRADED
        later = class_aggregates(d, again)
        assert later.power_units is first.power_units
        assert later.health[("old", "degraded")] == 1
        assert later.health[("old", "ok")] == 3
        _same(later, class_aggregates(d))

    _run(tmp_path, body)


def test_new_readings_or_a_mode_change_are_summed_again(tmp_path: Path) -> None:
    async def body(d: Daemon, devices: dict[str, object]) -> None:
        await d.poll(dispatch=False)
        first = class_aggregates(d)
        # a command changes a device's mode (and, once read, its power)
        out = await d.fleet.apply({"gpu/0": ModeRequest("run", power_w=350.0)})
        d.devices.commanded(out, {"gpu/0": "low"})
        moved = class_aggregates(d, first)
        assert moved.power_units is not first.power_units
        _same(moved, class_aggregates(d))
        # awaiting its read-back, it is counted in the mode it reads, not the one told
        # (the SRE's walk, session 24)
        assert ("gpu", "gpu", "low") not in moved.power_units
        # the next poll's readings: summed again, and the GPU reads low now
        await d.poll(dispatch=False)
        read = class_aggregates(d, moved)
        assert read.power_units is not moved.power_units
        _same(read, class_aggregates(d))
        assert read.power_units[("gpu", "gpu", "low")][1] == 1
        # a reading dropped from the poll's (an unreachable device): summed again, the
        # device at its last known power, as the site's total counts it (the SRE's walk,
        # session 24, D3: it was 0 W here, the class 41 % under the site's miners)
        d.power.readings.pop("old/0")
        d.power.invalidate()
        dropped = class_aggregates(d, read)
        _same(dropped, class_aggregates(d))
        assert dropped.power_units[("old", "asic", "stock")][0] == 4 * 3000.0
        site_w = d.measured()["asic_kw"] * 1000.0
        classes_w = sum(w for (_, k, _), (w, _) in dropped.power_units.items() if k == "asic")
        assert classes_w == site_w

    _run(tmp_path, body)
