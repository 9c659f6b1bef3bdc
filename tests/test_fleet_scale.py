"""The fleet at site scale: what grows with the device count stays linear, and a sweep
reports each device once."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import Applied, DeviceAdapter, DeviceInfo, ModeRequest, Telemetry
from adapters.fleet import Fleet


class Quiet(DeviceAdapter):
    """Connects and answers at once; nothing else is asked of it here."""

    async def connect(self) -> DeviceInfo:
        self.info = DeviceInfo(self.device_id, "asic", self.address)
        return self.info

    async def read(self) -> Telemetry:
        raise NotImplementedError

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
    from models.devices import expand_hosts

    with pytest.raises(ValueError, match=r"addresses listed twice: \['10.0.0.9'\]"):
        expand_hosts(("10.0.0.1-10.0.23.255", "10.0.0.9"))  # 6,143 addresses and one again
    assert len(expand_hosts(("10.0.0.1-10.0.23.255",))) == 6143
