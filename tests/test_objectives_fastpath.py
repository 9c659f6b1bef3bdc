"""Latency objectives held in operation, not only in the plan: the fast path, the fail-safe
posture and the serving hook use the modes and tokens/s the planner offers under
``[inference] itl_p95_s`` (models/inference_objectives.py ``class_offer``).

The class is the decode-phase H100 of tests/test_inference_objectives.py: caps 200 W and
350 W (decode never reaches 700 W) and the SM clock locked at 1,005-1,410 MHz, the lowest
power of the three (190 W). At itl_p95_s = 0.165 s only the 350 W mode meets the
objective (counted at 210.8 tokens/s, its batch-64 load); at 0.4 s all three do, the
clock lock counted at 390.2 tokens/s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters import registry
from adapters.base import ModeRequest
from adapters.gpu import NvmlGpu
from models import inference_objectives as io
from models.signals import EventType, GridEvent
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.fastpath import shed_order
from tests.conftest import make_site
from tests.support.clock import FakeClock
from tests.support.hook import capacity_hook
from tests.support.memfleet import memory_daemon, run_open
from tests.support.sitefile import device_classes, site_text
from tests.support.wait import until
from tests.test_inference_objectives import DECODE_H100


def _site(itl_p95_s: float | None) -> str:
    """Two miners and 16 H100s decoding, 3,000 tokens/s committed; ``itl_p95_s``: the
    inter-token latency objective (None: none)."""
    return site_text(
        "objective fast path",
        site={"base_load_kw": 0},
        hashprice=None,
        inference={
            "committed_tokens_s": 3000,
            "committed_usd_per_mtok": 1.0,
            "itl_p95_s": itl_p95_s,
        },
        devices=device_classes(
            {
                "name": "miner",
                "kind": "asic",
                "count": 2,
                "idle_power_kw": 0.1,
                "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100}],
            },
            DECODE_H100,
        ),
    )


COUNTED_350W = 210.8  # tokens/s per GPU at 0.165 s (see test_counted_rates_used_here)


def test_counted_rates_used_here() -> None:
    dc = make_site(devices=[DECODE_H100]).devices[0]
    offer, _ = io.class_offer(dc, 0.165)
    assert [(m.name, round(t, 1)) for m, t in offer] == [("infer@350W", COUNTED_350W)]
    offer, _ = io.class_offer(dc, 0.4)
    assert round(dict((m.name, t) for m, t in offer)["infer@1410MHz"], 1) == 390.2
    offer, note = io.class_offer(dc, None)  # no objective: every mode as stated
    assert [t for _, t in offer] == [m.throughput_tokens_s for m in dc.modes] and note is None


def _gpus_at_350w(d: Daemon) -> None:
    d.devices.modes.update({f"h100/{i}": "infer@350W" for i in range(16)})
    d.devices.modes.update({"miner/0": "stock", "miner/1": "stock"})


def test_the_shed_order_steps_gpus_only_into_offered_modes(tmp_path: Path) -> None:
    """The clock lock (190 W) is the class's lowest-power mode, but at 0.165 s it is not
    offered: no GPU is capped down into it; each may only sleep, losing its counted
    tokens/s."""
    d, _ = memory_daemon(_site(0.165), tmp_path)
    _gpus_at_350w(d)
    order = shed_order(d.devices)
    gpu_steps = [s for s in order if s.device_id.startswith("h100/")]
    assert {s.mode for s in gpu_steps} == {SLEEP}
    assert all(s.tokens_lost == pytest.approx(COUNTED_350W, abs=0.05) for s in gpu_steps)
    assert [s.device_id for s in order[:2]] == ["miner/0", "miner/1"]  # miners first


def test_without_an_objective_the_lowest_power_mode_is_still_the_step_down(
    tmp_path: Path,
) -> None:
    """...and the step carries the mode's clock lock, not its power limit alone (350 W,
    the limit the GPU already runs at, would save nothing)."""
    d, _ = memory_daemon(_site(None), tmp_path)
    _gpus_at_350w(d)
    downs = {s.request for s in shed_order(d.devices) if s.request.action == "run"}
    assert downs == {ModeRequest("run", 350.0, (1005, 1410))}


def _curtail(clock: FakeClock, limit_kw: float) -> GridEvent:
    start = datetime.fromtimestamp(clock.time(), UTC)
    return GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h", limit_kw=limit_kw)


def test_a_dr_shed_keeps_committed_gpus_in_modes_that_meet_the_objective(
    tmp_path: Path,
) -> None:
    """16 GPUs at 350 W (0.35 kW read each) and 2 miners: 11.6 kW against a 5 kW cap. The
    miners sleep; the GPUs serve 16 x 210.8 = 3,373 counted tokens/s for 3,000
    committed, so one GPU may sleep and no more, and none is capped down or clock-locked
    into a mode that misses the objective (the cap stays exceeded: committed inference
    is protected)."""
    clock = FakeClock()
    d, devices = memory_daemon(_site(0.165), tmp_path, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # the shed alone

    async def body() -> None:
        assert {d.devices.modes[f"h100/{i}"] for i in range(16)} == {"infer@350W"}
        await d.accept([_curtail(clock, 5.0)], "test", None, "{}")
        await until(lambda: not d.shedder.running, what="the fast path to finish")
        assert devices["miner/0"].state == devices["miner/1"].state == "sleeping"
        gpus = [v for i, v in devices.items() if i.startswith("h100/")]
        told = [r for v in gpus for r in v.told]
        assert all(r.action == "sleep" for r in told), told  # no cap down, no clock lock
        assert sum(v.state == "sleeping" for v in gpus) == 1
        assert d.devices.serving_tokens() == pytest.approx(15 * COUNTED_350W, abs=1.0)

    run_open(d, body)


def test_the_fail_safe_posture_wakes_gpus_for_the_counted_tokens(tmp_path: Path) -> None:
    """No good plan: committed inference is raised first. Counted at 210.8 tokens/s each
    under the objective, 3,000 committed tokens/s need 15 GPUs, not the 7 that the
    350 W mode's stated 481 tokens/s would suggest."""
    clock = FakeClock()
    d, devices = memory_daemon(_site(0.165), tmp_path, clock, asleep=True)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]  # posture alone

    async def body() -> None:
        await d.shedder.safe_posture("test")
        woken = [v for i, v in devices.items() if i.startswith("h100/") and v.state == "running"]
        assert len(woken) == 15
        assert {(v.told[-1].power_w, v.told[-1].clocks_mhz) for v in woken} == {(350.0, None)}

    run_open(d, body)


# --- the router hears the counted rate ------------------------------------------------


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []
    with capacity_hook(got.append) as url:
        yield url, got


def _hooked_gpus(url: str, inference: dict[str, Any]) -> tuple[Any, list[NvmlGpu]]:
    site = make_site(
        devices=[{**DECODE_H100, "count": 1, "adapter": {"kind": "sim", "serving_hook_url": url}}],
        inference=inference,
    )
    built = registry.build(site)
    gpus = [a for a in built.adapters if isinstance(a, NvmlGpu)]
    return site.devices[0], gpus


@pytest.mark.parametrize(
    ("inference", "expected"),
    [
        ({"itl_p95_s": 0.4}, {"infer@1410MHz": 390.2, "infer@350W": 416.8, "infer@200W": 363.6}),
        ({}, {"infer@1410MHz": 451.9, "infer@350W": 480.8, "infer@200W": 429.7}),
    ],
    ids=["itl", "none"],
)
def test_the_serving_hook_hears_the_rate_counted_for_the_mode(
    hook: tuple[str, list[dict[str, Any]]], inference: dict[str, Any], expected: dict[str, float]
) -> None:
    """The router is told what the plan counts for the mode the GPU runs: under the
    objective, the tokens/s that meet it (the clock lock and the 350 W cap share a 350 W
    power limit, so the limit alone cannot say which); without one, the mode's own."""
    url, got = hook
    dc, (gpu,) = _hooked_gpus(url, inference)

    async def go() -> None:
        await gpu.connect()
        for mode in expected:
            await gpu.apply(registry.mode_request(dc, mode))
        await gpu.close()

    asyncio.run(go())
    heard = [g["capacity_tokens_s"] for g in got]
    assert heard == pytest.approx(list(expected.values()), abs=0.1)


def test_a_mode_the_objective_does_not_offer_is_told_its_lowest_measured_load(
    hook: tuple[str, list[dict[str, Any]]],
) -> None:
    """Not a mode the daemon commands under the objective; an operator's command to it is
    told the least it serves (its batch-64 load), never the cap curve's full figure."""
    url, got = hook
    dc, (gpu,) = _hooked_gpus(url, {"itl_p95_s": 0.165})
    floor = {o.mode.name: o.floor_tokens_s for o in io.mode_offers(dc, 0.165) or []}

    async def go() -> None:
        await gpu.connect()
        await gpu.apply(registry.mode_request(dc, "infer@1410MHz"))
        await gpu.close()

    asyncio.run(go())
    assert got[0]["capacity_tokens_s"] == pytest.approx(floor["infer@1410MHz"], abs=0.1)
