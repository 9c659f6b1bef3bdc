"""Metrics that survive scale (issue 21): per class always, per device only when asked
or while the site is small, and /metrics rendered once per state of the daemon. Devices in
memory (no sockets), the real collector parsed with prometheus-client's parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from scheduler.service.daemon import Daemon
from scheduler.service.metrics import Snapshot
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import device_classes, site_text, stock_s19s

SITE = site_text(
    "metrics",
    pue=None,
    hashprice=None,
    daemon=None,
    devices=device_classes(
        stock_s19s(6),
        {
            "name": "h100",
            "kind": "gpu",
            "count": 2,
            "modes": [{"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000}],
        },
    ),
)


def _scrape(tmp_path: Path, metrics: str) -> tuple[dict[str, int], Snapshot, Daemon]:
    d, _ = memory_daemon(SITE + metrics, tmp_path)
    snap = Snapshot(d)
    series: dict[str, int] = {}

    async def go() -> None:
        await d.open()
        try:
            body, _ = snap.render()
            for family in text_string_to_metric_families(body.decode()):
                for s in family.samples:
                    series[s.name] = series.get(s.name, 0) + 1
        finally:
            await d.close()

    asyncio.run(go())
    return series, snap, d


def test_a_small_site_gets_a_series_per_device(tmp_path: Path) -> None:
    series, _, _ = _scrape(tmp_path, "")
    assert series["gridsched_device_power_watts"] == 8
    assert series["gridsched_device_up"] == 8
    assert series["gridsched_class_power_watts"] == 2  # and the classes, always


def test_per_device_series_only_when_asked_or_below_the_count(tmp_path: Path) -> None:
    off, _, _ = _scrape(tmp_path / "off", "\n[metrics]\nper_device = false\n")
    assert "gridsched_device_power_watts" not in off and "gridsched_gpu_power_watts" not in off
    assert off["gridsched_class_power_watts"] == 2
    big, _, _ = _scrape(tmp_path / "big", "\n[metrics]\nper_device_up_to = 5\n")
    assert "gridsched_device_power_watts" not in big  # 8 devices > 5
    on, _, _ = _scrape(tmp_path / "on", "\n[metrics]\nper_device = true\nper_device_up_to = 5\n")
    assert on["gridsched_device_power_watts"] == 8  # asked: whatever the count


def test_metrics_render_once_per_state_of_the_daemon(tmp_path: Path) -> None:
    clock = FakeClock()
    d, _ = memory_daemon(SITE, tmp_path, clock)
    snap = Snapshot(d)

    async def go() -> None:
        await d.open()
        try:
            first, _ = snap.render()
            again, _ = snap.render()  # a second scraper, nothing changed: the same bytes
            assert again is first and snap.renders == 1
            await d.poll(dispatch=False)
            assert snap.render()[0] is not first and snap.renders == 2
            clock.advance(1.0)  # ages move on: at most a second old
            snap.render()
            assert snap.renders == 3
        finally:
            await d.close()

    asyncio.run(go())


def test_gpu_series_carry_the_gpus_uuid_and_no_reading_is_not_zero_watts(
    tmp_path: Path,
) -> None:
    """The DCGM-style ``UUID`` label is the GPU's own (``DeviceInfo.serial``: NVML's UUID),
    not its driver version (a newcomer's scrape showed ``UUID="driver"``); and a GPU with
    no power in its reading has no sample rather than 0 W."""
    from dataclasses import replace

    from adapters.base import DeviceInfo

    d, _ = memory_daemon(SITE, tmp_path)
    snap = Snapshot(d)
    labels: dict[str, dict[str, str]] = {}
    values: dict[str, float] = {}

    async def go() -> None:
        await d.open()
        try:
            await d.poll(dispatch=False)
            gpus = [a for a in d.fleet.adapters if a.kind == "gpu"]
            assert len(gpus) == 2
            for i, a in enumerate(gpus):  # as adapters.gpu.NvmlGpu.connect fills it
                a.info = DeviceInfo(
                    a.device_id, "gpu", a.address, "NVIDIA", "NVIDIA H100", "driver 550.54",
                    serial=f"GPU-{i}abc",
                )  # fmt: skip
            first = gpus[1].device_id
            d.power.readings[first] = replace(d.power.readings[first], power_w=None)
            body, _ = snap.render()
            for family in text_string_to_metric_families(body.decode()):
                for s in family.samples:
                    if s.name == "gridsched_gpu_power_watts":
                        labels[s.labels["UUID"]] = s.labels
                        values[s.labels["UUID"]] = s.value
        finally:
            await d.close()

    asyncio.run(go())
    assert set(labels) == {"GPU-0abc"}  # GPU-1abc read no power: no sample, not 0 W
    assert labels["GPU-0abc"]["modelName"] == "NVIDIA H100"


def test_a_device_power_not_read_is_marked_estimated(tmp_path: Path) -> None:
    """A stock Antminer answers without a power figure: its series counts it at its mode's
    nameplate (as the site total does), and ``gridsched_device_power_measured`` says 0, so a
    dashboard does not show the nameplate as a reading."""
    d, _ = memory_daemon(SITE, tmp_path)
    snap = Snapshot(d)
    unmetered = {a.device_id for a in d.fleet.adapters if a.kind == "asic"}
    for a in d.fleet.adapters:
        if a.device_id in unmetered:
            a.metered = False  # type: ignore[attr-defined]
    got: dict[str, dict[str, float]] = {}

    async def go() -> None:
        await d.open()
        try:
            await d.poll()
            body, _ = snap.render()
            for family in text_string_to_metric_families(body.decode()):
                for s in family.samples:
                    if s.name.startswith("gridsched_device_power"):
                        got.setdefault(s.name, {})[s.labels["device"]] = s.value
        finally:
            await d.close()

    asyncio.run(go())
    measured = got["gridsched_device_power_measured"]
    assert measured and all(measured[i] == 0.0 for i in unmetered)
    assert all(v == 1.0 for i, v in measured.items() if i not in unmetered)
    assert all(got["gridsched_device_power_watts"][i] > 0 for i in unmetered)  # never 0 W
