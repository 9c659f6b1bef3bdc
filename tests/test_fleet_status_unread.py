"""``gridsched fleet status``'s class table never shows units it could not read as 0 kW:
a device that cannot be read is not at 0 kW (rule 2), so the kW column says how many units
of the class it could not read, and a class read not at all has no figure."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from adapters.base import Applied, DeviceAdapter, DeviceInfo, ModeRequest, Telemetry
from adapters.fleet import Fleet
from scheduler.cli.fleet_report import _summary

#: the kW cell of a class row (class, units, ok, degraded, unreachable, unreadable,
#: rejected, unconfirmed, running, sleeping, kW, ...)
KW = 10


@dataclass
class Dead(DeviceAdapter):
    """A device whose every reading fails (no connection)."""

    async def connect(self) -> DeviceInfo:
        raise ConnectionRefusedError(111, "Connection refused")

    async def read(self) -> Telemetry:
        raise ConnectionRefusedError(111, "Connection refused")

    async def apply(self, request: ModeRequest) -> Applied:
        raise ConnectionRefusedError(111, "Connection refused")


@dataclass
class Live(DeviceAdapter):
    async def connect(self) -> DeviceInfo:
        return DeviceInfo(self.device_id, "asic", self.address)

    async def read(self) -> Telemetry:
        return Telemetry(self.device_id, time.time(), "running", power_w=3250.0)

    async def apply(self, request: ModeRequest) -> Applied:
        raise NotImplementedError


def _rows() -> dict[str, list[str]]:
    adapters: list[DeviceAdapter] = [
        *(Dead(f"dead/{i}", "test") for i in range(3)),
        Dead("mixed/0", "test"),
        Live("mixed/1", "test"),
        Live("ok/0", "test"),
    ]
    groups = {a.device_id: a.device_id.split("/")[0] for a in adapters}

    async def go() -> dict[str, list[str]]:
        fleet = Fleet(adapters, groups, op_timeout_s=2.0)
        await fleet.connect_all()
        readings = await fleet.read_all()
        return {row[0]: row for row in _summary(fleet, readings)}

    return asyncio.run(go())


def test_a_class_read_not_at_all_shows_no_kw_figure_and_says_how_many_are_unread() -> None:
    kw = _rows()["dead"][KW]
    assert not kw.startswith("0.0"), kw
    assert "3 unread" in kw, kw


def test_a_class_partly_read_shows_its_read_power_and_its_unread_units() -> None:
    rows = _rows()
    assert rows["mixed"][KW].startswith("3.2") and "+1 unread" in rows["mixed"][KW], rows["mixed"]
    assert rows["ok"][KW] == "3.2", rows["ok"]


def test_a_devices_last_error_keeps_its_cause_not_its_name() -> None:
    """Field audit (session 20), no. 6: the row cut the error at 80 characters, most of it
    the device's name the row already shows, and a GPU agent's error lost its cause."""
    from scheduler.cli.fleet_report import error_text

    cause = "connection refused by 127.0.0.1:9400 (ECONNREFUSED): is gridsched-gpu-agent running?"
    err = f"gpu-rack-07/slot-3: GPU agent at http://127.0.0.1:9400/v1/gpus/3: {cause}"
    assert error_text("gpu-rack-07/slot-3", err).endswith(cause)
    assert not error_text("gpu-rack-07/slot-3", err).startswith("gpu-rack-07")
    long = error_text("m/0", "m/0: " + "x" * 300)
    assert len(long) == 160 and long.endswith("…")
    assert error_text("m/0", None) == ""
