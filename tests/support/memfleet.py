"""Devices in memory, for testing the daemon's decisions without sockets: each takes a
command at once (or, told not to follow, accepts it and carries on) and reads back its
state at the test's clock. Not a simulator of any firmware: the firmware simulators
(adapters/sim/) and the tests that drive them over TCP cover how devices behave."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adapters.base import Applied, DeviceAdapter, DeviceInfo, ModeRequest, Telemetry
from adapters.registry import Built
from models.devices import DeviceClass, DeviceKind
from tests.support.clock import FakeClock

# re-exported: tests/test_site_scale_bench.py imports it from here

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon


@dataclass
class MemoryDevice(DeviceAdapter):
    clock: FakeClock = field(default_factory=FakeClock)
    dc: DeviceClass | None = None
    state: Literal["running", "sleeping"] = "running"
    target_w: float = 0.0
    clocks_mhz: tuple[int, int] | None = None  # a GPU's SM clock lock, as told
    follows: bool = True  # False: accepts commands and keeps doing what it did
    metered: bool = True  # False: answers without a power figure (stock Antminer firmware)
    told: list[ModeRequest] = field(default_factory=list)
    staged: list[ModeRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.dc is not None
        self.kind = "gpu" if self.dc.kind is DeviceKind.GPU else "asic"

    async def connect(self) -> DeviceInfo:
        return DeviceInfo(self.device_id, self.kind, self.address)

    async def read(self) -> Telemetry:
        assert self.dc is not None
        running = self.state == "running"
        power_w = self.target_w if running else self.dc.idle_kw * 1000.0
        return Telemetry(
            self.device_id,
            self.clock.time(),
            self.state,
            power_w=power_w if self.metered else None,
            target_w=self.target_w,
            sm_clock_lock_mhz=self.clocks_mhz,
        )

    async def apply(self, request: ModeRequest) -> Applied:
        self.told.append(request)
        if self.follows:
            self.state = "sleeping" if request.action == "sleep" else "running"
            if request.power_w is not None:
                self.target_w = request.power_w
            self.clocks_mhz = request.clocks_mhz if request.action == "run" else None
        return Applied(request, request.power_w)

    async def stage(self, request: ModeRequest) -> Applied | None:
        """Sets up the wake's target while asleep (as a LuxOS profile would)."""
        if self.state != "sleeping" or request.action != "run":
            return None
        self.staged.append(request)
        return Applied(request, request.power_w)

    @property
    def mode_w(self) -> float:
        """What it draws now (W)."""
        assert self.dc is not None
        return self.target_w if self.state == "running" else self.dc.idle_kw * 1000.0


def memory_fleet(
    classes: tuple[DeviceClass, ...], clock: FakeClock, asleep: bool = False
) -> tuple[Built, dict[str, MemoryDevice]]:
    """One device per unit of each class, running its top mode (or asleep)."""
    built = Built()
    devices: dict[str, MemoryDevice] = {}
    for dc in classes:
        top = max(dc.modes, key=lambda m: m.power_kw)
        for i in range(dc.count):
            dev = MemoryDevice(
                f"{dc.name}/{i}",
                "memory",
                clock=clock,
                dc=dc,
                state="sleeping" if asleep else "running",
                target_w=dc.device_target_w(top.name),
            )
            built.adapters.append(dev)
            built.groups[dev.device_id] = dc.name
            devices[dev.device_id] = dev
    return built, devices


def run_open(d: Daemon, body: Callable[[], Coroutine[Any, Any, None]], start: bool = False) -> None:
    """Open the daemon (store, fleet, one poll; no jobs), run ``body``, close it. With
    ``start``: start it as `gridsched run` does (connect, read, shed, plan, jobs)."""

    async def go() -> None:
        try:
            await (d.start() if start else d.open())
            await body()
        finally:
            await d.close()

    asyncio.run(go())


def memory_daemon(
    text: str, tmp_path: Path, clock: FakeClock | None = None, asleep: bool = False
) -> tuple[Daemon, dict[str, MemoryDevice]]:
    """A daemon over this site file's text, its devices in memory (one per unit, running
    their top mode or asleep), its state in ``tmp_path``, on ``clock``."""
    from models.site import parse_site
    from scheduler.service.daemon import Daemon

    config = parse_site(tomllib.loads(text), "site.toml", str(tmp_path))
    clock = clock or FakeClock()
    built, devices = memory_fleet(config.devices, clock, asleep)
    return Daemon(config, tmp_path / "state.db", clock=clock, built=built), devices
