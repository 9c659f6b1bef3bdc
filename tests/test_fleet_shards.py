"""A fleet sharded over worker processes (``[daemon] fleet_workers``): the same
conformance steps as tests/test_families.py, every firmware simulator, through two worker
processes, with the outcomes and read-back verdicts of a fleet in one process; a worker
killed outright; the setting's sizing and its errors."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import fleet_procs
from adapters.asic import PyasicMiner
from adapters.base import DeviceAdapter, Health, ModeRequest, Telemetry
from adapters.discovery import IdentityBook, attach
from adapters.fleet import Fleet, Outcome, OutcomeKind, RetryPolicy
from adapters.fleet_procs import resolve_workers
from adapters.fleet_shards import ShardedFleet, make_fleet, shard_of
from adapters.gpu import NvmlGpu
from adapters.sim.fleet import FIRMWARE as SIM_CLASSES
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from adapters.sim.miner import FaultKind
from models.errors import ConfigError
from models.firmware import CAPABILITIES, PowerTarget
from models.site import parse_site
from tests.support.simfleet import FAST, firmware_fleet, free_base
from tests.support.wait import until
from tests.test_families import CAN_80, FAMILY, FIRMWARE, MODEL

RETRY = RetryPolicy(attempts=2, base_s=0.01, max_s=0.02)
EXAMPLE = Path(__file__).resolve().parent.parent / "deploy/examples/west-texas-30mw.toml"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    """Two miners of each firmware family: one that follows, one that ignores commands."""
    firmware = FIRMWARE if CAN_80 else tuple(f for f in FIRMWARE if f not in ("antminer", "vnish"))
    ports = (4028, 4433, 50051, *((80,) if CAN_80 else ()))
    yield from firmware_fleet(2 * len(firmware), firmware, ports, ("Antminer S19j Pro",))


def _miners(sim: SimFleetThread) -> list[tuple[str, int, Any]]:
    """(firmware, k, simulator): k = 0 follows, k = 1 is told to ignore commands."""
    out = []
    for fw in FIRMWARE:
        found = [m for m in sim.fleet.miners if type(m) is SIM_CLASSES[fw]]
        out += [(fw, k, m) for k, m in enumerate(found[:2])]
    return out


async def _settle(fleet: Fleet, timeout_s: float = 20.0) -> None:
    async def done() -> bool:
        await fleet.read_all()
        return not fleet.pending

    await until(done, timeout_s, step_s=0.05, what="every command read back")


def test_every_family_through_two_worker_processes(sim: SimFleetThread) -> None:
    """Identify, read, sleep and wake confirmed by read-back, and a command accepted and
    ignored ends unconfirmed: the same outcomes as in one process, each handed once to the
    one on_outcome hook, with discovery's findings back in this process's identity book."""
    miners = _miners(sim)
    devs: list[DeviceAdapter] = [
        PyasicMiner(f"{fw}/{k}", m.host, timeout_s=10.0, confirm_within_s=0.8 if k else None)
        for fw, k, m in miners
    ]
    book = IdentityBook()
    attach(devs, book)
    seen: list[Outcome] = []
    fleet = ShardedFleet(devs, {d.device_id: "m" for d in devs}, workers=2, retry=RETRY,
                         on_outcome=seen.append)  # fmt: skip
    assert {shard_of(d.device_id, 2) for d in devs} == {0, 1}
    for _, k, m in miners:
        if k:
            sim.call(m.inject, FaultKind.IGNORE)
    progress: list[tuple[int, int]] = []

    async def go() -> None:
        errors = await fleet.connect_all(lambda done, total: progress.append((done, total)))
        assert not any(errors.values()), errors
        assert progress[-1] == (len(devs), len(devs))
        pids = fleet.worker_pids()
        assert len(set(pids)) == 2 and None not in pids and os.getpid() not in pids
        for fw, k, _ in miners:
            dev = fleet.by_id[f"{fw}/{k}"]
            assert dev.info is not None and dev.info.family == FAMILY[fw].value
            assert dev.info.firmware_version and MODEL.get(fw, "S19") in dev.info.model
            want_s = 0.8 if k else CAPABILITIES[FAMILY[fw]].confirm_within_s
            assert dev.confirm_deadline_s() == want_s
        assert {m.host for fw, _, m in miners if fw != "whatsminer3"} <= set(book.changes())
        readings = await fleet.read_all()
        assert set(readings) == set(fleet.by_id)
        assert all(t.state == "running" for t in readings.values())
        assert all(st.health is Health.OK for st in fleet.status.values())

        order = [d.device_id for d in reversed(devs)]
        out = await fleet.apply({i: ModeRequest("sleep") for i in order})
        assert [o.device_id for o in out] == order  # in the order asked, as in one process
        assert all(o.ok and o.kind is OutcomeKind.ACCEPTED for o in out), out
        await _settle(fleet)
        verdict = {o.device_id: o.kind for o in seen if o.kind is not OutcomeKind.ACCEPTED}
        for fw, k, _ in miners:
            i = f"{fw}/{k}"
            if k:
                assert verdict[i] is OutcomeKind.UNCONFIRMED
                assert fleet.status[i].health is Health.UNCONFIRMED
                assert i in fleet.unconfirmed_requests()
            else:
                assert verdict[i] is OutcomeKind.CONFIRMED
        # a sleeping LuxOS miner takes its next wake's profile ahead (Fleet.stage)
        staged = await fleet.stage({"luxos/0": ModeRequest("run", 2800.0)})
        assert [(o.device_id, o.ok) for o in staged] == [("luxos/0", True)], staged
        followers = [f"{fw}/0" for fw, k, _ in miners if not k]
        out = await fleet.apply({i: ModeRequest("run", 2800.0) for i in followers})
        for o in out:
            assert o.ok and o.applied is not None, o.error
            fam = FAMILY[o.device_id.split("/")[0]]
            if CAPABILITIES[fam].power_target is PowerTarget.NONE:
                assert o.applied.target_w is None
            else:
                assert o.applied.target_w is not None and o.applied.target_w <= 2800.0
        await _settle(fleet)
        assert {o.device_id for o in seen[-len(followers) :]} == set(followers)
        assert all(o.kind is OutcomeKind.CONFIRMED for o in seen[-len(followers) :])
        assert sum(1 for o in seen if o.kind is OutcomeKind.ACCEPTED) == len(devs) + len(
            followers
        )  # each command once on the hook, none lost or doubled on the way
        await fleet.close()
        assert fleet.worker_pids() == [None, None]

    try:
        asyncio.run(go())
    finally:
        for _, k, m in miners:
            if k:
                sim.call(m.clear_faults)


def test_a_killed_worker_leaves_its_miners_unreachable_and_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL to one worker with commands awaiting read-back: its miners read as
    unreachable with their last reading kept (not 0 kW), those commands end unconfirmed, a
    command to them fails with the reason; the other worker's miners go on; the worker is
    started again and its miners are read again. A worker that hangs (SIGSTOP) is killed
    once it leaves a ping unanswered, and started again."""
    # pings every 0.5 s, not 5: the hung worker's unanswered ping comes without waiting out
    # the interval (how often a ping goes is not what this test checks; its deadline is)
    monkeypatch.setattr(fleet_procs, "PING_S", 0.5)
    n = 6
    base = free_base(n)
    sim = SimFleet.build(n, base=base, firmware=("luxos",), control_port=None, **FAST)
    devs: list[DeviceAdapter] = [PyasicMiner(f"m/{m.host}", m.host, 10.0) for m in sim.miners]
    seen: list[Outcome] = []
    fleet = ShardedFleet(devs, {d.device_id: "m" for d in devs}, workers=2, retry=RETRY,
                         on_outcome=seen.append, worker_answer_s=30.0)  # fmt: skip
    dead = [d.device_id for d in devs if shard_of(d.device_id, 2) == 0]
    live = [d.device_id for d in devs if shard_of(d.device_id, 2) == 1]
    assert dead and live

    async def go() -> None:
        assert not any((await fleet.connect_all()).values())
        other = fleet.worker_pids()[1]
        assert other is not None
        os.kill(other, signal.SIGTERM)  # ignored: the daemon stops its workers itself
        before = await fleet.read_all()
        assert set(before) == set(fleet.by_id) and fleet.worker_pids()[1] == other
        await fleet.apply({i: ModeRequest("sleep") for i in fleet.by_id})
        pid = fleet.worker_pids()[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: fleet.status[dead[0]].health is Health.UNREACHABLE, 10.0)
        for i in dead:
            st = fleet.status[i]
            assert st.health is Health.UNREACHABLE and "killed by SIGKILL" in (st.last_error or "")
            assert st.telemetry == before[i]  # the last reading stands, not 0 kW
            assert i not in fleet.pending
        lost = {o.device_id: o for o in seen if o.kind is OutcomeKind.UNCONFIRMED}
        assert set(lost) == set(dead)
        assert "read-back cannot be made" in (lost[dead[0]].error or "")
        readings = await fleet.read_all()
        assert set(readings) == set(live)
        out = await fleet.apply({dead[0]: ModeRequest("run"), live[0]: ModeRequest("run")})
        assert (
            not out[0].ok and out[0].kind is OutcomeKind.FAILED and "worker 0" in str(out[0].error)
        )
        assert out[1].ok and all(o in seen for o in out)  # on the hook, failed or not
        await until(lambda: fleet.restarts == 1, 60.0, what="worker 0 started again")
        assert fleet.worker_pids()[0] not in (None, pid)
        readings = await fleet.read_all()
        assert set(readings) == set(fleet.by_id)
        assert all(fleet.status[i].health is not Health.UNREACHABLE for i in dead)

        hung = fleet.worker_pids()[1]
        assert hung is not None
        # 2 s for the worker about to hang only: a healthy one on a loaded host can take
        # longer than that to answer a ping, and must not be killed for it
        fleet._procs[1].answer_within_s = 2.0
        os.kill(hung, signal.SIGSTOP)
        await until(lambda: fleet.status[live[0]].health is Health.UNREACHABLE, 20.0)
        assert "stopped answering for 2 s" in (fleet.status[live[0]].last_error or "")
        await until(lambda: fleet.restarts == 2, 60.0, what="worker 1 started again")
        assert set(await fleet.read_all()) == set(fleet.by_id)
        await fleet.close()

    with SimFleetThread(sim):
        asyncio.run(go())


def test_a_read_back_that_does_not_confirm_reaches_this_process_within_flush_s() -> None:
    """A worker's read-back whose reading does not show the command (the miner ignores
    it; the deadline is far) gives no verdict, so no outcome carries it: its reading must
    still reach this process at once (within ``FLUSH_S`` of the worker reading it), not with
    the worker's next answer. Nothing is asked of the workers after the command."""
    sim = SimFleet.build(2, base=free_base(2), firmware=("luxos",), control_port=None, **FAST)
    devs: list[DeviceAdapter] = [
        PyasicMiner(f"m/{m.host}", m.host, 10.0, confirm_within_s=60.0) for m in sim.miners
    ]
    heard: list[Telemetry] = []
    fleet = ShardedFleet(devs, {d.device_id: "m" for d in devs}, workers=2, retry=RETRY,
                         on_reading=heard.append)  # fmt: skip
    target, miner = devs[0].device_id, sim.miners[0]

    async def go() -> None:
        try:
            assert not any((await fleet.connect_all()).values())
            await fleet.read_all()
            th.call(miner.inject, FaultKind.IGNORE)
            sent_at = time.time()
            (out,) = await fleet.apply({target: ModeRequest("sleep")})
            assert out.ok and out.kind is OutcomeKind.ACCEPTED, out.error
            # LuxOS is read back 5 s after a command (its settle time, models/firmware.py)
            await until(
                lambda: any(t.device_id == target and t.at >= sent_at for t in heard),
                20.0,
                what="the worker's read-back reading in this process",
            )
            t = fleet.status[target].telemetry
            assert t is not None and t.at >= sent_at and t.state == "running"
            assert target in fleet.pending  # no verdict yet: it was the reading alone
        finally:
            await fleet.close()

    th = SimFleetThread(sim)
    with th:
        asyncio.run(go())


def test_the_workers_upkeep_is_counted_in_this_process() -> None:
    """Found by review: with the miners in worker processes, each worker's upkeep (LuxOS
    session renewals) was counted there only, so ``gridsched_fleet_upkeeps_total`` and the
    backlog gauge, read from this process, stayed at 0 on any host with fleet workers."""
    sim = SimFleet.build(4, base=free_base(4), firmware=("luxos",), control_port=None, **FAST)
    devs: list[DeviceAdapter] = [
        PyasicMiner(f"m/{m.host}", m.host, 10.0, session_renew_s=0.0) for m in sim.miners
    ]
    fleet = ShardedFleet(devs, {d.device_id: "m" for d in devs}, workers=2, retry=RETRY)

    async def go() -> tuple[int, int, int]:
        try:
            assert not any((await fleet.connect_all()).values())
            for _ in range(3):  # renew_s 0: every reading after the first asks for one
                await fleet.read_all()
            return fleet.upkeep.done, fleet.upkeep.failed, len(fleet.upkeep.elsewhere)
        finally:
            await fleet.close()

    th = SimFleetThread(sim)
    with th:
        done, failed, workers = asyncio.run(go())
    assert done >= 4 and failed == 0  # each miner renewed at least once, in its worker
    assert workers == 2  # each worker's backlog is known here


def test_a_read_back_that_fails_reaches_this_process_within_flush_s() -> None:
    """A worker's read-back whose read fails (the miner took the sleep, then refuses
    connections) gives no reading and no verdict yet: the device's health and error must
    still reach this process at once (within ``FLUSH_S`` of the worker's failed read), not
    with the worker's next answer or the verdict at the deadline (60 s here). Nothing is
    asked of the workers after the command."""
    sim = SimFleet.build(2, base=free_base(2), firmware=("luxos",), control_port=None, **FAST)
    devs: list[DeviceAdapter] = [
        PyasicMiner(f"m/{m.host}", m.host, 10.0, confirm_within_s=60.0) for m in sim.miners
    ]
    told: list[tuple[str, Health]] = []
    fleet = ShardedFleet(devs, {d.device_id: "m" for d in devs}, workers=2, retry=RETRY,
                         on_health=lambda st: told.append((st.device_id, st.health)))  # fmt: skip
    target, miner = devs[0].device_id, sim.miners[0]

    async def go() -> None:
        try:
            assert not any((await fleet.connect_all()).values())
            await fleet.read_all()
            told.clear()
            (out,) = await fleet.apply({target: ModeRequest("sleep")})
            assert out.ok and out.kind is OutcomeKind.ACCEPTED, out.error
            th.call(miner.inject, FaultKind.REFUSE)
            st = fleet.status[target]
            # LuxOS is read back 5 s after a command (its settle time, models/firmware.py)
            await until(
                lambda: st.health is not Health.OK and st.last_error is not None,
                20.0,
                what="the worker's failed read-back in this process",
            )
            assert st.health in (Health.DEGRADED, Health.UNREACHABLE), st.health
            assert "refused" in (st.last_error or ""), st.last_error
            assert target in fleet.pending  # no verdict yet: it was the failed read alone
            assert told and told[-1] == (target, st.health), told  # this process's on_health
        finally:
            await fleet.close()

    th = SimFleetThread(sim)
    with th:
        asyncio.run(go())


def test_fleet_workers_sizing_and_the_factory() -> None:
    """``auto`` is one worker per core beyond the first, at most 8: none on a 2-core host,
    where the fleet is the one-process Fleet as before; GPUs never go to a worker."""
    assert [resolve_workers("auto", c) for c in (1, 2, 3, 4, 16, 64)] == [1, 1, 2, 3, 8, 8]
    assert resolve_workers(3) == 3
    with pytest.raises(ValueError, match="valid are a number >= 1 and 'auto'"):
        resolve_workers(0)
    miners = [PyasicMiner(f"m/127.0.0.{k}", f"127.0.0.{k}") for k in range(1, 5)]
    groups = {m.device_id: "m" for m in miners}
    assert type(make_fleet(miners, groups, 1)) is Fleet
    assert type(make_fleet(miners, groups, resolve_workers("auto", 2))) is Fleet
    sharded = make_fleet(miners, groups, 2)
    assert isinstance(sharded, ShardedFleet) and set(sharded.status) == set(groups)
    gpus = [NvmlGpu(f"g/gpu{k}", str(k), LocalSimBackend([SimGpu(k)]), k) for k in range(2)]
    assert type(make_fleet(gpus, {g.device_id: "g" for g in gpus}, 4)) is Fleet


@pytest.mark.parametrize("value", ["0", "65", '"many"', "true", "1.5"])
def test_a_bad_fleet_workers_is_named(value: str) -> None:
    text = EXAMPLE.read_text() + f"\n[daemon]\nfleet_workers = {value}\n"
    with pytest.raises(ConfigError) as exc:
        parse_site(tomllib.loads(text), "site.toml")
    why = dict(exc.value.problems)["daemon.fleet_workers"]
    assert "from 1 to 64" in why and "'auto'" in why


def test_the_example_site_takes_fleet_workers() -> None:
    text = EXAMPLE.read_text()
    for value, want in (('"auto"', "auto"), ("4", 4)):
        cfg = parse_site(tomllib.loads(text + f"\n[daemon]\nfleet_workers = {value}\n"), "s")
        assert cfg.daemon.fleet_workers == want
    assert parse_site(tomllib.loads(text), "s").daemon.fleet_workers == 1


def test_a_daemon_with_two_fleet_workers_is_one_controller(tmp_path: Path) -> None:
    """``[daemon] fleet_workers = 2`` on a simulated site: the daemon's fleet is sharded;
    a curtail to 0 kW sleeps every miner, its commands and their read-back verdicts are
    recorded in the one audit log of the daemon's process."""
    from scheduler.service.daemon.devices import SLEEP
    from tests.support.daemon import daemon_of, free_loopback_base, running
    from tests.test_dispatch import curtail
    from tests.test_power_truth import miners_site

    n = 6
    text = miners_site(n, free_loopback_base(n), fleet_workers=2)
    d = daemon_of(tmp_path, text)
    assert isinstance(d.fleet, ShardedFleet)

    def recorded() -> dict[str, set[str]]:
        kinds: dict[str, set[str]] = {}
        for *_, body, _h in d.store.records(0, time.time() + 1, ("commands",)):
            for row in body["outcomes"]:
                kinds.setdefault(row["kind"], set()).add(row["device"])
        return kinds

    async def go() -> None:
        async with running(d):
            assert len(set(d.fleet.worker_pids())) == 2  # type: ignore[attr-defined]
            assert all(st.health is Health.OK for st in d.fleet.status.values())
            assert len(d.power.answered) == n
            await curtail(d, 0.0)
            assert set(d.devices.modes.values()) == {SLEEP}

            async def confirmed() -> bool:
                await d.poll(dispatch=False)
                return recorded().get("confirmed", set()) == set(d.fleet.status)

            await until(confirmed, 30.0, step_s=0.2, what="every sleep read back")
            assert recorded()["accepted"] == set(d.fleet.status)

            # the workers' health in /v1/status and /metrics: a worker killed is down (its
            # miners unreachable) until it is started again, and the restart is counted
            assert _workers(d) == (2, 0, 0)
            assert d.status()["fleet_workers"] == {
                "workers": 2, "running": 2, "down": 0, "down_workers": [], "restarts": 0
            }  # fmt: skip
            pid = d.fleet.worker_pids()[0]  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
            await until(lambda: _workers(d)[1] == 1, 10.0, what="worker 0 seen down")
            assert _workers(d) == (1, 1, 0)
            assert d.status()["fleet_workers"]["down_workers"] == [0]
            await until(lambda: _workers(d) == (2, 0, 1), 60.0, what="worker 0 started again")
            assert d.status()["fleet_workers"]["restarts"] == 1

    asyncio.run(go())


def _workers(d: Any) -> tuple[float, float, float]:
    """/metrics' fleet workers running, down, and restarts."""
    from scheduler.service.metrics import metrics_registry

    reg = metrics_registry(d)

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        v = reg.get_sample_value(name, labels or {})
        assert v is not None, name
        return v

    return (
        value("gridsched_fleet_workers", {"state": "running"}),
        value("gridsched_fleet_workers", {"state": "down"}),
        value("gridsched_fleet_worker_restarts_total"),
    )


def test_a_one_process_fleet_reports_no_workers(tmp_path: Path) -> None:
    """``fleet_workers = 1``: the series are there (the alert needs no special case) and
    say no worker runs, none is down, none was started again."""
    from tests.support.memfleet import memory_daemon
    from tests.test_daemon import MEMORY_SITE

    d, _ = memory_daemon(MEMORY_SITE, tmp_path)
    assert type(d.fleet) is Fleet
    assert _workers(d) == (0, 0, 0)
    assert d.status()["fleet_workers"] == {
        "workers": 0, "running": 0, "down": 0, "down_workers": [], "restarts": 0
    }  # fmt: skip
