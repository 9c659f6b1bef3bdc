"""Auradine Teraflux (FluxOS) writes: the verdict from the firmware's own answer.

pyasic 0.79 (``miners/backends/auradine.py``) posts ``/mode`` on the web API (8080) and
answers True for any reply its client did not raise on: an empty ``{}`` or any JSON
without a ``STATUS`` passes its ``validate_command_output``, so a reply in no documented
shape read as done; and its client raises the same ``APIError`` for a refused connection
as for an error answer, so a miner gone from the network read as refusing. The simulator
(:mod:`adapters.sim.auradine`) serves what pyasic and asic-rs send and parse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import BadReply, ControlRejected, DeviceUnreachable, ModeRequest
from adapters.secrets import Secret
from adapters.sim.auradine import AuradineSim
from adapters.sim.server import FaultKind
from models.firmware import CAPABILITIES, Family, PowerTarget, family_of
from tests.support.simfleet import loopback_host
from tests.support.wait import until

Step = Callable[[AuradineSim, PyasicMiner], Awaitable[None]]


@pytest.fixture
def host() -> Iterator[str]:
    yield loopback_host(ports=(4028, 8080))


def _drive(host: str, step: Step, **kw: Any) -> AuradineSim:
    sim = AuradineSim(host, sleep_s=0.3, wake_s=0.6, retune_s=0.1, reboot_s=0.6)

    async def go() -> None:
        await sim.start()
        try:
            dev = PyasicMiner("aur/0", host, timeout_s=5.0, **kw)
            info = await dev.connect()
            assert (info.make, info.model, info.family) == ("Auradine", "AT1500", "auradine")
            await step(sim, dev)
        finally:
            await sim.stop()

    asyncio.run(go())
    return sim


async def _reads(dev: PyasicMiner, state: str) -> bool:
    return (await dev.read()).state == state


async def _sleep_raises(dev: PyasicMiner, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        await dev.apply(ModeRequest("sleep"))


def test_a_sleep_and_a_wake_at_a_target_are_sent_and_read_back(host: str) -> None:
    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        await dev.apply(ModeRequest("sleep"))
        await until(lambda: _reads(dev, "sleeping"), 5.0)
        applied = await dev.apply(ModeRequest("run", 2800.0))
        assert applied.target_w == 2800.0
        await until(lambda: _reads(dev, "running"), 5.0)
        t = await dev.read()
        assert t.target_w == 2800.0 and t.power_w is not None

    sim = _drive(host, step)
    assert sim.mode_posts == [
        {"command": "mode", "sleep": "on"},
        {"command": "mode", "mode": "custom", "tune": "power", "power": 2800},
        {"command": "mode", "sleep": "off"},
    ]


@pytest.mark.parametrize(
    "answer",
    [{}, {"mode": [{"sleep": "on"}]}, {"STATUS": "ok"}, ["mode", "on"]],
    ids=["empty", "no-status", "status-not-a-table", "a-list"],
)
def test_a_sleep_answered_in_no_documented_shape_is_unreadable_not_sent(
    host: str, answer: Any
) -> None:
    """Before: pyasic's True for every one of these (the list raised out of pyasic)."""

    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        sim.command_answer = (200, answer)
        await _sleep_raises(dev, BadReply, "STATUS")

    _drive(host, step)


def test_a_sleep_answered_garbled_is_unreadable(host: str) -> None:
    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        sim.inject(FaultKind.GARBLE)
        await _sleep_raises(dev, BadReply, "STATUS")
        sim.clear_faults()
        sim.inject(FaultKind.MALFORMED)
        await _sleep_raises(dev, BadReply, "JSON")

    _drive(host, step)


def test_a_sleep_to_a_miner_refusing_connections_is_unreachable_not_refused(host: str) -> None:
    """Before: pyasic's False (``APIError``), read as the firmware's refusal."""

    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        sim.inject(FaultKind.REFUSE)
        await _sleep_raises(dev, DeviceUnreachable, "connection refused.*ECONNREFUSED")

    _drive(host, step)


def test_a_sleep_the_firmware_refuses_is_rejected_in_its_words(host: str) -> None:
    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        busy = {"STATUS": [{"STATUS": "E", "Code": 541, "Msg": "Miner is upgrading"}], "id": 1}
        sim.command_answer = (200, busy)
        await _sleep_raises(dev, ControlRejected, "Miner is upgrading")
        sim.command_answer = None
        with pytest.raises(ControlRejected, match="out of range"):
            await dev.apply(ModeRequest("run", 99_000.0))

    _drive(host, step)


def test_a_wrong_password_is_a_refusal_in_the_firmwares_words(host: str) -> None:
    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        await _sleep_raises(dev, ControlRejected, "Invalid user or password")
        assert sim.state.phase == "mining"

    _drive(host, step, password=Secret("not-admin"))


def test_a_token_the_firmware_forgot_costs_no_failed_write(host: str) -> None:
    """pyasic logs on again after a stale-token answer but does not resend within the
    call: the write failed once. Here the write logs on and is sent again."""

    async def step(sim: AuradineSim, dev: PyasicMiner) -> None:
        await dev.read()  # pyasic's reading logged on
        sim.restart_api()  # the web API server restarted: its tokens are gone
        await dev.apply(ModeRequest("sleep"))
        await until(lambda: _reads(dev, "sleeping"), 5.0)

    sim = _drive(host, step)
    assert [c for c in sim.web_calls if c[1] in ("token", "mode") and c[0] == "POST"][-3:] == [
        ("POST", "mode"),
        ("POST", "token"),
        ("POST", "mode"),
    ]


def test_pyasics_auradine_is_a_family_of_its_own() -> None:
    from pyasic.device.firmware import MinerFirmware
    from pyasic.device.makes import MinerMake

    fam = family_of(str(MinerFirmware.STOCK), str(MinerMake.AURADINE))
    assert fam is Family.AURADINE
    assert CAPABILITIES[fam].power_target is PowerTarget.EXACT and CAPABILITIES[fam].reads_power


SITE = """
[site]
name = "auradine-sim"
timezone = "UTC"
interconnect_kw = 100

[mining]
hashprice_usd_per_ths_day = 0.05

[[devices]]
name = "teraflux"
kind = "asic"
model = "Antminer S19j Pro"
count = 1
[devices.adapter]
kind = "sim"
sim_firmware = "auradine"
sim_base = "{base}"
sim_sleep_s = 0.3
sim_wake_s = 0.6
timeout_s = 10
"""


def test_a_site_file_runs_auradine_simulators_through_pyasic(tmp_path: Any) -> None:
    """``[devices.adapter] kind = "sim"`` with ``sim_firmware = "auradine"``."""
    from adapters import registry
    from adapters.sim.fleet import SimFleetThread
    from models.site import load_site
    from tests.support.simfleet import free_base

    site = tmp_path / "site.toml"
    site.write_text(SITE.format(base=free_base(1, (4028, 8080))))
    built = registry.build(load_site(site))
    assert [type(m) for m in built.simulators[0].miners] == [AuradineSim]
    dev = built.adapters[0]
    with SimFleetThread(built.simulators[0]):

        async def go() -> str:
            info = await dev.connect()
            return info.family

        assert asyncio.run(go()) == Family.AURADINE.value


def test_asic_rs_reads_and_drives_the_simulator_as_a_teraflux(host: str) -> None:
    """The simulator checked against the other client it was built from: asic-rs (whose
    test fixtures are the replies captured from a Teraflux) identifies it, reads power,
    mining state and target, and pauses, retunes and resumes it."""
    pyasic_rs = pytest.importorskip("pyasic_rs", reason="pyasic-rs is not installed")
    sim = AuradineSim(host, sleep_s=0.3, wake_s=0.6, retune_s=0.1, reboot_s=0.6)

    async def mining(m: Any) -> bool:
        return bool((await m.get_data()).is_mining)

    async def go() -> None:
        await sim.start()
        try:
            factory = pyasic_rs.MinerFactory().with_identification_timeout_secs(5)
            m = await factory.get_miner(host)
            assert (m.make, m.model) == ("Auradine", "AT1500")
            d = await m.get_data()
            assert d.wattage is not None and d.is_mining and d.firmware_version == "2023-12.27"
            assert await m.pause()
            await until(lambda: sim.state.phase == "sleeping", 5.0)
            assert not await mining(m)
            assert await m.set_power_limit(2800) and await m.resume()
            await until(lambda: mining(m), 5.0)
        finally:
            await sim.stop()

    asyncio.run(go())
    assert sim.mode_posts[-1] == {"command": "mode", "sleep": "off"}
    assert {"command": "mode", "mode": "custom", "tune": "power", "power": 2800} in sim.mode_posts
