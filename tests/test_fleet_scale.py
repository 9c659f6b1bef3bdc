"""The fleet at site scale: what grows with the device count stays linear, and a sweep
reports each device once."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from adapters.base import Applied, DeviceAdapter, DeviceInfo, ModeRequest, Telemetry
from adapters.fleet import Fleet, freeze_heap


class Quiet(DeviceAdapter):
    """Connects and answers at once; nothing else is asked of it here."""

    async def connect(self) -> DeviceInfo:
        self.info = DeviceInfo(self.device_id, "asic", self.address)
        return self.info

    async def read(self) -> Telemetry:
        await asyncio.sleep(0)  # an answer comes back on a later turn of the loop
        return Telemetry(self.device_id, 0.0, "running", 3000.0)

    async def apply(self, request: ModeRequest) -> Applied:
        raise NotImplementedError


def test_duplicate_device_ids_are_named_once_each() -> None:
    devs = [Quiet(f"c/{i}", "") for i in range(5000)]
    devs += [Quiet("c/7", ""), Quiet("c/3", ""), Quiet("c/7", "")]
    with pytest.raises(ValueError, match=r"duplicate device ids \['c/3', 'c/7'\]"):
        Fleet(devs)


def test_connect_progress_counts_every_device_once() -> None:
    devs = [Quiet(f"c/{i}", "") for i in range(300)]
    seen: list[tuple[int, int]] = []
    fleet = Fleet(devs, connect_concurrency=16)
    errors = asyncio.run(fleet.connect_all(lambda done, total: seen.append((done, total))))
    assert not any(errors.values())
    assert seen == [(k, 300) for k in range(1, 301)]


def test_an_address_listed_twice_is_found_in_a_long_host_list() -> None:
    """The check used to run only below 5,000 addresses (it was quadratic): a class of the
    example site's 4,000 miners took a second to check, and a longer list none."""
    from models.device_adapter import expand_hosts

    with pytest.raises(ValueError, match=r"addresses listed twice: \['10.0.0.9'\]"):
        expand_hosts(("10.0.0.1-10.0.23.255", "10.0.0.9"))  # 6,143 addresses and one again
    assert len(expand_hosts(("10.0.0.1-10.0.23.255",))) == 6143


def test_the_simulators_site_file_lists_its_miners_as_ranges() -> None:
    """``gridsched fleet simulate --write-site`` listed every address: 30,000 quoted
    addresses (about 500 KB of TOML) where about 120 ranges say the same."""
    import tomllib

    from adapters.sim.fleet import MinerSpec, loopback_hosts
    from models.device_adapter import compact_hosts, expand_hosts
    from scheduler.cli.simulate import site_for_simulator

    hosts = loopback_hosts(30000, "127.90.0.0")
    specs = [MinerSpec(h, "luxos", "Antminer S19j Pro") for h in hosts]
    text = site_for_simulator(specs, [], None)
    listed = tomllib.loads(text)["devices"][0]["adapter"]["hosts"]
    assert len(listed) <= 120 and len(text) < 10_000
    assert expand_hosts(tuple(listed)) == hosts  # the same addresses, in the same order
    # Order kept, anything but a run of IPv4 addresses as it is:
    odd = ["10.0.0.9", "10.0.0.5", "10.0.0.6", "10.0.0.7", "fd00::1", "10.0.0.8"]
    assert compact_hosts(odd) == ["10.0.0.9", "10.0.0.5-10.0.0.7", "fd00::1", "10.0.0.8"]
    assert expand_hosts(tuple(compact_hosts(odd))) == odd


def test_once_set_up_a_sweep_sets_off_few_collections() -> None:
    """After set-up (freeze_heap) the young generation is collected every 20,000
    allocations, not 700: a sweep of the example site set off about 385 collections."""
    fleet = Fleet([Quiet(f"c/{i}", "") for i in range(3000)])
    runs: list[int] = []

    def count(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(1)

    async def sweep() -> int:
        runs.clear()
        assert len(await fleet.read_all()) == 3000
        return len(runs)

    async def main() -> tuple[int, int]:
        await fleet.connect_all()
        before = await sweep()
        freeze_heap()
        return before, await sweep()

    threshold = gc.get_threshold()
    gc.set_threshold(700, *threshold[1:])  # CPython's default, whatever ran before here
    gc.callbacks.append(count)
    try:
        before, after = asyncio.run(main())
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        gc.unfreeze()
    assert after * 10 <= before, (before, after)
