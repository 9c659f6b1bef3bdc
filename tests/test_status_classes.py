"""Issue 21: ``/v1/status``'s per-class part is counted in one pass (at 32,000 devices the
per-device walk held the event loop ~170 ms a request). The answer must be the same, field
for field and in the same order, as the plain per-device walk kept here as the reference,
over a site with every kind of device state the part reports: devices ok, degraded and
never read, modes known and unknown (no reading; a reading that matches no mode), drifts
and a GPU whose clock locks NVML refuses. Devices in memory (tests/support/memfleet.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from adapters.base import AdapterError, Health, Telemetry
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.devices import UNKNOWN
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.sitefile import site_text

SITE = site_text("status classes")


def _reference(d: Daemon) -> dict[str, dict[str, Any]]:
    """The per-device walk ``/v1/status`` made before issue 21, unchanged."""
    by_class: dict[str, dict[str, Any]] = {}
    for device_id, st in d.fleet.status.items():
        c = by_class.setdefault(
            st.group,
            {"devices": 0, "health": {h.value: 0 for h in Health}, "modes": {}, "unknown": {}},
        )
        c["drifted"] = d.devices.drifts.get(st.group, {})
        refused = c.setdefault("clock_lock_refused", {})
        if (why := d.devices.lock_refused(device_id)) is not None:
            refused[device_id] = why
        c["devices"] += 1
        c["health"][st.health.value] += 1
        mode = d.devices.modes.get(device_id, UNKNOWN)
        c["modes"][mode] = c["modes"].get(mode, 0) + 1
        if mode == UNKNOWN:
            t = st.telemetry
            c["unknown"][device_id] = (
                "not read yet"
                if t is None
                else "; ".join(t.errors) or "its reading matches no mode of its class"
            )
    return by_class


def _failing(dev: MemoryDevice) -> None:
    async def read() -> Telemetry:
        raise AdapterError(dev.device_id, "connection refused")

    dev.read = read  # type: ignore[method-assign]


def _with_errors(dev: MemoryDevice) -> None:
    inner = dev.read

    async def read() -> Telemetry:
        t = await inner()
        return Telemetry(t.device_id, t.at, "unknown", errors=("fan 2 failed", "board 1 hot"))

    dev.read = read  # type: ignore[method-assign]


def test_the_class_counts_equal_the_per_device_walk(tmp_path: Path) -> None:
    d, devices = memory_daemon(SITE, tmp_path)
    _failing(devices["old/0"])  # never read: mode unknown, "not read yet"
    _with_errors(devices["old/1"])  # answers with errors
    devices["gpu/1"].target_w = 350.0  # the GPU class's low mode
    # NVML's refusal of a lock is set by the GPU adapter (covered in test_gpu_drift.py);
    # memory devices have none, so the daemon's look-up answers for one GPU here
    d.devices.lock_refused = lambda device_id: (  # type: ignore[method-assign]
        "NVML_ERROR_NO_PERMISSION" if device_id == "gpu/0" else None
    )

    async def go() -> None:
        await d.open()
        try:
            d.devices.drifts.setdefault("new", {})["power_limit"] = 2
            # modes not known from a reading (as after a read-back that showed none)
            d.devices.modes["old/1"] = UNKNOWN  # its reading has errors: they are the reason
            d.devices.modes["new/2"] = UNKNOWN  # its reading is plain: it matches no mode
            got = d.status()["classes"]
            want = _reference(d)
            assert got == want
            # field for field in the same order, as a client reads the JSON
            assert json.dumps(got) == json.dumps(want)
            # the site shows every state the part reports (else the equality says little)
            health = {h for c in got.values() for h, n in c["health"].items() if n}
            assert {"ok", "degraded"} <= health or {"ok", "unreachable"} <= health, health
            reasons = set(got["old"]["unknown"].values()) | set(got["new"]["unknown"].values())
            assert "not read yet" in reasons
            assert "fan 2 failed; board 1 hot" in reasons
            assert "its reading matches no mode of its class" in reasons
            assert len(got["gpu"]["modes"]) == 2, got["gpu"]["modes"]
            assert got["gpu"]["clock_lock_refused"] == {"gpu/0": "NVML_ERROR_NO_PERMISSION"}
            assert got["new"]["drifted"] == {"power_limit": 2}
        finally:
            await d.close()

    asyncio.run(go())


def test_a_price_event_in_force_is_shown_in_status(tmp_path: Path) -> None:
    """The aggregator's walk (session 24, DD1): /v1/status `active_events` lists the caps in
    force, and nothing showed which price override was: a utility's test of a price program
    (User Guide 8.3, the commonest OpenADR use) looked lost, though the plan priced at it.
    `price_events` lists the price signals in force now, the winning priority first."""
    from datetime import UTC, datetime, timedelta

    from models.signals import EventType, GridEvent

    d, _ = memory_daemon(SITE, tmp_path)
    now = datetime.fromtimestamp(d.clock.time(), UTC) - timedelta(minutes=1)  # its clock

    def price(i: str, usd: float, prio: int, start: datetime = now) -> GridEvent:
        return GridEvent(id=i, type=EventType.PRICE, start=start, duration="1h", price=usd,
                         priority=prio)  # fmt: skip

    async def go() -> dict[str, Any]:
        await d.open()
        try:
            later = now + timedelta(hours=2)
            events = [price("low", -50.0, 0), price("high", 170.0, 5), price("later", 9, 9, later)]
            await d.accept(events, "test", None, "{}")
            return d.status()
        finally:
            await d.close()

    st = asyncio.run(go())
    shown = [(e["id"], e["price"]) for e in st["price_events"]]
    assert shown == [("high", 170.0), ("low", -50.0)], st["price_events"]
    assert all(e["type"] != "price" for e in st["active_events"])


def test_a_device_awaiting_its_read_back_is_shown_in_the_mode_it_reads(tmp_path: Path) -> None:
    """The SRE's walk (session 24, D3c): two miners accepted a sleep and kept hashing; until
    each read-back deadline (and again after each re-send) /v1/status counted them under
    "sleep" and gridsched_class_power_watts{mode="sleep"} carried their 2 kW each, while the
    log said they read eco. A device whose command awaits its read-back is shown in the
    mode it reads (the commanded one is what the read-back will judge)."""
    from adapters.base import ModeRequest
    from scheduler.service.metrics_aggregates import class_aggregates

    d, devices = memory_daemon(SITE, tmp_path)
    stubborn = devices["old/0"]

    async def go() -> tuple[dict[str, Any], dict[tuple[str, str, str], list[float]]]:
        await d.open()
        try:
            await d.poll(dispatch=False)
            was = d.devices.modes["old/0"]
            assert was != "sleep"
            stubborn.follows = False  # answers done, keeps hashing
            out = await d.fleet.apply({"old/0": ModeRequest("sleep")})
            d.devices.commanded(out, {"old/0": "sleep"})
            assert "old/0" in d.fleet.pending
            await d.poll(dispatch=False)  # read running again; its read-back not yet due
            assert "old/0" in d.fleet.pending
            return d.status()["classes"], class_aggregates(d).power_units
        finally:
            await d.close()

    classes, power = asyncio.run(go())
    assert "sleep" not in classes["old"]["modes"], classes["old"]["modes"]
    assert not any(c == "old" and mode == "sleep" for c, _, mode in power), power
