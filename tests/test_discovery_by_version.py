"""A first discovery, with no identity on record, identifies a miner whose answer to
``version`` names its firmware from that answer and pyasic's own model steps, without
pyasic's web probe; every other miner goes through pyasic's whole discovery. Either way the
class is the one ``pyasic.get_miner`` chooses (issue 21: discovery at scale)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from adapters import discovery
from adapters.sim.fleet import FIRMWARE, SimFleetThread
from tests.support.simfleet import can_bind_80, firmware_fleet

FAMILIES = ("luxos", "antminer", "braiins", "whatsminer", "vnish", "whatsminer3")
NAMED = {"luxos", "braiins", "whatsminer", "vnish"}  # their `version` answer names them


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    """One miner of each firmware family (the web-on-80 ones only where port 80 binds)."""
    firmware = tuple(f for f in FAMILIES if can_bind_80() or f not in ("antminer", "vnish"))
    ports = (4028, 4433, 50051, *((80,) if can_bind_80() else ()))
    yield from firmware_fleet(len(firmware), firmware, ports, ("Antminer S19j Pro",))


def _kind(m: Any) -> str:
    return next(k for k, cls in FIRMWARE.items() if type(m) is cls)


def test_every_family_is_identified_as_pyasics_whole_discovery_identifies_it(
    sim: SimFleetThread,
) -> None:
    import pyasic

    for m in sim.fleet.miners:
        found = asyncio.run(discovery.discover("m/0", m.host, 5.0, discovery.IdentityBook()))
        theirs = asyncio.run(pyasic.get_miner(m.host))
        # pyasic makes a class per Whatsminer (API v2 or v3 by firmware): compared by name
        assert type(found.miner).__name__ == type(theirs).__name__, _kind(m)
        assert discovery.class_name(found.miner) == discovery.class_name(theirs), _kind(m)
        assert found.miner.ip == theirs.ip
        # The fingerprint is the one a later start re-checks (empty only for Whatsminer
        # API v3, whose 4028 answers no `version`).
        assert bool(found.check) == (_kind(m) != "whatsminer3"), _kind(m)
        if found.check:
            check = asyncio.run(discovery.version_fingerprint(m.host))
            assert found.check == check, _kind(m)


def test_a_miner_named_by_its_version_answer_is_asked_nothing_else_to_be_found(
    sim: SimFleetThread,
) -> None:
    """pyasic's discovery asks 4028 ``version`` and ``devdetails`` and HTTP 80 and 443 at
    once (a new HTTP client with TLS per miner), then the model; the fingerprint was one
    more ``version``. Now a miner whose ``version`` names its firmware answers that, and
    only what pyasic's own model step asks (LuxOS, Whatsminer: ``version`` again), and no
    web request; the fingerprint comes from the first answer."""
    luxos = next(m for m in sim.fleet.miners if _kind(m) == "luxos")
    before = sim.call(lambda: luxos.commands_seen)
    found = asyncio.run(discovery.discover("luxos/0", luxos.host, 5.0, discovery.IdentityBook()))
    assert "LUXMiner" in type(found.miner).__name__
    assert sim.call(lambda: luxos.commands_seen) - before == 2  # version, version (model)


def test_an_answer_that_does_not_name_the_firmware_leaves_it_to_pyasic(
    sim: SimFleetThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``version`` answer pyasic cannot classify (here: none at all, as from firmware
    that answers only on HTTP) is not guessed from: pyasic's whole discovery runs."""
    calls: list[str] = []

    async def whole(address: str) -> Any:
        calls.append(address)
        return "the whole discovery's miner"

    async def silent(address: str, cmd: str) -> None:
        return None

    from pyasic.miners.factory import MinerFactory

    monkeypatch.setattr("pyasic.get_miner", whole)
    monkeypatch.setattr(MinerFactory, "_socket_ping", staticmethod(silent))
    luxos = next(m for m in sim.fleet.miners if _kind(m) == "luxos")
    found = asyncio.run(discovery.discover("luxos/0", luxos.host, 5.0, None))
    assert found.miner == "the whole discovery's miner" and calls == [luxos.host]
