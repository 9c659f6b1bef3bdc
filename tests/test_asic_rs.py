"""``[devices.adapter] kind = "asic-rs"``: what the pyasic-rs back-end refuses, and how.

The families it drives are checked by the conformance suite (tests/test_families.py, the
``asic-rs`` parameter). Here: a family it cannot identify or drive is refused per device
with the reason (health ``rejected``, never retried), a miner whose answers asic-rs cannot
read is unreadable and not asleep at 0 kW, an address where nothing answers is
unreachable, and the site file names the field when the package is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic_rs import AsicRsMiner, FamilyRefused
from adapters.base import DeviceUnreachable, Health
from adapters.fleet import Fleet, RetryPolicy
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from models.errors import ConfigError
from models.site import parse_site
from tests.conftest import site_dict
from tests.support.simfleet import free_base

pytest.importorskip("pyasic_rs", reason="pyasic-rs is not installed")

FIRMWARE = ("luxos", "whatsminer3", "whatsminer")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    fleet = SimFleet.build(
        len(FIRMWARE),
        base=free_base(len(FIRMWARE), (4028, 4433)),
        firmware=FIRMWARE,
        models=("Antminer S19j Pro",),
        control_port=None,
        sleep_s=0.3,
        wake_s=0.6,
        retune_s=0.1,
        reboot_s=0.6,
    )
    th = SimFleetThread(fleet)
    with th:
        yield th


def _miner(sim: SimFleetThread, firmware: str) -> Any:
    return sim.fleet.miners[FIRMWARE.index(firmware)]


def _fleet(dev: AsicRsMiner) -> Fleet:
    return Fleet([dev], retry=RetryPolicy(attempts=3, base_s=0.01))


@pytest.mark.parametrize(
    ("firmware", "words"),
    [
        # asic-rs 0.8.6 does not identify the Whatsminer API v3 simulator
        ("whatsminer3", "did not identify the miner"),
        # it identifies a Whatsminer but its API v2 writes do not take
        ("whatsminer", "{'cmd': ...}"),
    ],
)
def test_a_family_it_cannot_drive_is_refused_per_device_with_the_reason(
    sim: SimFleetThread, firmware: str, words: str
) -> None:
    m = _miner(sim, firmware)
    dev = AsicRsMiner(f"{firmware}/0", m.host, timeout_s=10.0)

    async def go() -> None:
        fleet = _fleet(dev)
        error = (await fleet.connect_all())[dev.device_id]
        st = fleet.status[dev.device_id]
        assert error is not None and words in error
        assert "kind = 'pyasic'" in error
        assert st.health is Health.REJECTED
        assert st.failures == 1  # a refusal is not retried
        assert dev.info is None
        await fleet.close()

    asyncio.run(go())
    assert FamilyRefused.retryable is False


def test_answers_it_cannot_read_are_unreadable_not_asleep(sim: SimFleetThread) -> None:
    """asic-rs fills what it could not read with None and ``is_mining`` with False; that
    is no evidence of a sleeping miner."""
    m = _miner(sim, "luxos")
    dev = AsicRsMiner("luxos/0", m.host, timeout_s=10.0)

    async def go() -> None:
        fleet = _fleet(dev)
        assert (await fleet.connect_all())[dev.device_id] is None
        t = (await fleet.read_all())[dev.device_id]
        assert t.state == "running" and (t.power_w or 0) > 1000
        sim.call(m.inject, FaultKind.GARBLE)
        try:
            got = await fleet.read_all()
        finally:
            sim.call(m.clear_faults)
        st = fleet.status[dev.device_id]
        assert dev.device_id not in got
        assert st.health is Health.UNREADABLE, st.last_error
        assert "neither power nor hashrate" in (st.last_error or "")
        assert st.telemetry is not None and st.telemetry.state == "running"  # last good kept
        await fleet.close()

    asyncio.run(go())


def test_nothing_answering_is_unreachable() -> None:
    host = free_base(1, (4028, 80)).rsplit(".", 1)[0] + ".1"
    dev = AsicRsMiner("none/0", host, timeout_s=10.0)
    with pytest.raises(DeviceUnreachable, match="no miner answers"):
        asyncio.run(dev.connect())


def test_the_site_file_takes_kind_asic_rs() -> None:
    from adapters.registry import build

    d = site_dict()
    d["devices"][0]["adapter"] = {"kind": "asic-rs", "hosts": ["10.0.0.1-10.0.0.10"]}
    built = build(parse_site(d, "x.toml"))
    assert len(built.adapters) == 10
    assert all(isinstance(a, AsicRsMiner) for a in built.adapters)
    d["devices"][0]["adapter"] = {"kind": "asic-rs"}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert "needs `hosts`" in dict(exc.value.problems)["devices[0].adapter"]


def test_kind_asic_rs_without_the_package_names_the_field_and_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The package is installed here; the check asks importlib whether it is (a mock is
    # the only way to see the other case without uninstalling it).
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "pyasic_rs" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    d = site_dict()
    d["devices"][0]["adapter"] = {"kind": "asic-rs", "hosts": ["10.0.0.1-10.0.0.10"]}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    why = dict(exc.value.problems)["devices[0].adapter"]
    assert "kind = 'asic-rs' needs the pyasic-rs package" in why
    assert "pip install -c constraints.txt pyasic-rs" in why


def test_an_auradine_is_named_as_its_family_and_refused_as_unverified() -> None:
    """asic-rs names an Auradine Teraflux "Stock" firmware of make "Auradine"; gridsched has
    had a family for it since its writes were judged from the firmware's STATUS
    (adapters/auradine.py), so the refusal must say that asic-rs is unverified for it, not
    that gridsched has no family for it."""
    from adapters.asic_rs import family_of_rs, refusal
    from models.firmware import Family

    assert family_of_rs("Stock", "Auradine") is Family.AURADINE
    why = refusal(Family.AURADINE) or ""
    assert "not verified by the conformance suite" in why and "no family" not in why
