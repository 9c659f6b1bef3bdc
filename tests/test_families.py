"""One conformance suite, every firmware simulator, through the real pyasic adapter and the
asic-rs one (``kind = "asic-rs"``, pyasic-rs; the families it does not drive are skipped,
with the reason in the skip message).

Each family's simulator serves what pyasic sends and parses for that firmware (LuxOS RPC;
stock Antminer cgminer API and web CGI with digest auth; Braiins OS+ BOSminer API and
gRPC; Whatsminer btminer API with token-encrypted writes, and API v3 on 4433 with token-signed
writes; VNish cgminer API and web API with an unlock token; Auradine GCMiner API and
FluxOS web API with a token). The same steps run on each:
identify, read, sleep confirmed by read-back, wake at a target (honoured where the family
has a power target, skipped where it has none) and confirmed, and a command the firmware
accepts and ignores ends unconfirmed, not done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import DeviceAdapter, Health, ModeRequest
from adapters.fleet import Fleet, Outcome, OutcomeKind, RetryPolicy
from adapters.sim.fleet import SimFleetThread
from adapters.sim.miner import FaultKind
from models.firmware import CAPABILITIES, Capabilities, Family, PowerTarget, Reading
from tests.support.cli import run_main
from tests.support.simfleet import can_bind_80, firmware_fleet, free_base, settle
from tests.support.wait import readline

FIRMWARE = ("luxos", "antminer", "braiins", "whatsminer", "vnish", "whatsminer3", "auradine")
FAMILY = {
    "luxos": Family.LUXOS,
    "antminer": Family.ANTMINER_STOCK,
    "braiins": Family.BRAIINS,
    "whatsminer": Family.WHATSMINER,
    "vnish": Family.VNISH,
    "whatsminer3": Family.WHATSMINER_V3,  # API v3 on 4433 (firmware after 2024-11)
    "auradine": Family.AURADINE,  # GCMiner API on 4028, FluxOS web API on 8080
}
MODEL = {"whatsminer": "M50", "whatsminer3": "M60", "auradine": "AT1500"}
PER = 4  # miners per firmware: two for each adapter kind
KINDS = ("pyasic", "asic-rs")


CAN_80 = can_bind_80()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    on_80 = ("antminer", "vnish")  # their web APIs listen on port 80
    firmware = FIRMWARE if CAN_80 else tuple(f for f in FIRMWARE if f not in on_80)
    ports = (4028, 4433, 8080, 50051, *((80,) if CAN_80 else ()))
    yield from firmware_fleet(PER * len(firmware), firmware, ports, ("Antminer S19j Pro",))


def _host(sim: SimFleetThread, firmware: str, k: int) -> tuple[str, Any]:
    from adapters.sim.fleet import FIRMWARE as KINDS

    miners = [m for m in sim.fleet.miners if type(m) is KINDS[firmware]]
    if not miners:
        pytest.skip(f"no {firmware} simulator here (port 80 needs root)")
    return miners[k].host, miners[k]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _miner(kind: str, firmware: str, k: int, host: str, m: Any, **kw: Any) -> DeviceAdapter:
    if kind == "pyasic":
        return PyasicMiner(f"{firmware}/{k}", host, timeout_s=10.0, **kw)
    pytest.importorskip("pyasic_rs", reason="pyasic-rs is not installed")
    from adapters import asic_rs
    from adapters.secrets import Secret

    if firmware == "braiins" and getattr(m, "web_port", None) is None:
        pytest.skip("asic-rs reads Braiins OS+ over GraphQL on port 80 (needs root here)")
    if firmware in ("braiins", "vnish"):
        kw["password"] = Secret(m.password)  # asic-rs's defaults are not the firmware's

    if firmware == "whatsminer3":
        pytest.skip(
            "asic-rs 0.8.6 identifies a Whatsminer by its web page or a successful version/"
            "devdetails on 4028; the API v3 simulator serves neither (4028: get_version only)"
        )
    why = asic_rs.refusal(FAMILY.get(firmware, Family.OTHER))
    if why is not None:
        pytest.skip(f"asic-rs does not drive {firmware}: {why}")
    return asic_rs.AsicRsMiner(f"{firmware}/{k}", host, timeout_s=10.0, **kw)


def _caps(kind: str, fam: Family) -> Capabilities:
    """The family's capabilities as the adapter kind drives them."""
    if kind == "pyasic":
        return CAPABILITIES[fam]
    from adapters import asic_rs

    return asic_rs.capabilities(fam)


def _squash(name: str) -> str:
    return name.replace(" ", "").lower()  # asic-rs names models "S19jPro"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("firmware", FIRMWARE)
def test_every_family_sleeps_and_wakes_confirmed(
    sim: SimFleetThread, firmware: str, kind: str
) -> None:
    k = 0 if kind == "pyasic" else 2
    host, m = _host(sim, firmware, k)
    dev = _miner(kind, firmware, k, host, m)
    seen: list[Outcome] = []
    fam = FAMILY[firmware]
    caps = _caps(kind, fam)

    async def go() -> None:
        fleet = Fleet([dev], retry=RetryPolicy(attempts=2, base_s=0.01), on_outcome=seen.append)
        assert (await fleet.connect_all())[dev.device_id] is None
        info = dev.info
        assert info is not None and info.family == fam.value
        assert _squash(MODEL.get(firmware, "S19j Pro")) in _squash(info.model)
        assert info.firmware_version
        assert dev.confirm_deadline_s() == CAPABILITIES[fam].confirm_within_s
        t = (await fleet.read_all())[dev.device_id]
        assert t.state == "running"
        assert (t.hashrate_ths or 0) > 80 or Reading.HASHRATE not in caps.readings
        assert (t.power_w is not None) == caps.reads_power
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
        target = 2800.0
        out = await fleet.apply({dev.device_id: ModeRequest("run", target)})
        applied = out[0].applied
        assert out[0].ok and applied is not None, out[0].error
        if caps.power_target is PowerTarget.NONE:
            assert applied.target_w is None and "no power target" in applied.note
        else:
            assert applied.target_w is not None and applied.target_w <= target
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
        t = (await fleet.read_all())[dev.device_id]
        assert t.state == "running"
        if applied.target_w is not None:
            assert t.target_w == pytest.approx(applied.target_w, abs=1.0)
        assert fleet.status[dev.device_id].health is Health.OK
        await fleet.close()

    run(go())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("firmware", FIRMWARE)
def test_every_family_accepting_and_ignoring_is_unconfirmed(
    sim: SimFleetThread, firmware: str, kind: str
) -> None:
    k = 1 if kind == "pyasic" else 3
    host, m = _host(sim, firmware, k)
    dev = _miner(kind, firmware, k, host, m, confirm_within_s=0.8)
    sim.call(m.inject, FaultKind.IGNORE)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = Fleet([dev], retry=RetryPolicy(attempts=2, base_s=0.01), on_outcome=seen.append)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        if kind == "asic-rs" and firmware == "antminer":
            # asic-rs reads the configuration back after its write and answers False: the
            # command is refused on the spot, never done
            assert not out[0].ok and out[0].kind is OutcomeKind.REJECTED, out[0]
            assert fleet.status[dev.device_id].health is Health.REJECTED
            await fleet.close()
            return
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED and not seen[-1].ok
        assert fleet.status[dev.device_id].health is Health.UNCONFIRMED
        assert dev.device_id in fleet.unconfirmed_requests()
        await fleet.close()

    try:
        run(go())
    finally:
        sim.call(m.clear_faults)


def test_fleet_status_shows_what_discovery_found(tmp_path: Any) -> None:
    """`gridsched fleet simulate --firmware ...` starts a mix; `fleet status` shows each
    device's make, model, firmware, its version and family."""
    import json
    import subprocess
    import sys

    site = tmp_path / "mix.toml"
    base = free_base(4, (4028, 50051))  # LuxOS on 4028, Braiins OS+ also on gRPC's 50051
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "fleet", "simulate", "--miners", "4",
         "--base", base, "--control-port", "0", "--firmware", "luxos,braiins",
         "--duration", "60", "--write-site", str(site)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "LuxOS and Braiins OS+ miners" in readline(proc.stdout)
        assert "wrote" in readline(proc.stdout)
        # the commands in this process (tests/support/cli.py): no interpreter to start each
        res = run_main("fleet", "status", "--json", "--config", str(site))
        assert res.returncode == 0, res.stderr[-2000:]
        devices = json.loads(res.stdout)["devices"]
        seen = {(d["family"], d["firmware"], d["make"]) for d in devices}
        assert seen == {("luxos", "LuxOS", "AntMiner"), ("braiins-os", "BOS+", "AntMiner")}
        assert all(d["firmware_version"] and d["model"] for d in devices)
        res = run_main("fleet", "status", "--all", "--config", str(site))
        assert "BOS+ 24.09" in res.stdout and "LuxOS 2024.11.14" in res.stdout
    finally:
        proc.terminate()
        proc.wait(10)
    bad = run_main("fleet", "simulate", "--firmware", "hiveon")
    assert bad.returncode == 2 and "firmware hiveon: valid are luxos" in bad.stderr
