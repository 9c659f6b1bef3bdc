"""A simulated fleet on its own event-loop thread, for the adapter tests that drive it over
TCP: eight fast LuxOS miners (S19j Pro and S21) and four GPUs on a loopback /24 chosen at
random (``free_loopback_base``), so that two runs on one host never share addresses."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from adapters.base import DeviceAdapter, ModeRequest, Telemetry
from adapters.fleet import Fleet, Outcome, OutcomeKind, RetryPolicy
from adapters.sim.fleet import SimFleet, SimFleetThread
from tests.support.daemon import free_loopback_base

#: Simulated miners that sleep, wake, retune and reboot in well under a second.
FAST = {"sleep_s": 0.3, "wake_s": 0.6, "retune_s": 0.1, "reboot_s": 0.6}

M = TypeVar("M")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def one_device_fleet(dev: DeviceAdapter, seen: list[Outcome]) -> Fleet:
    """A fleet of one device with quick retries, its outcomes appended to ``seen``."""
    return Fleet(
        [dev],
        retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.02),
        unreachable_after=2,
        on_outcome=seen.append,
    )


async def settle(fleet: Fleet, device_id: str, timeout_s: float = 10.0) -> None:
    """Read the fleet until ``device_id`` has no command awaiting its read-back."""
    async with asyncio.timeout(timeout_s):
        while device_id in fleet.pending:
            await fleet.read_all()
            await asyncio.sleep(0.05)


def confirmed_run(dev: DeviceAdapter, watts: float) -> Telemetry:
    """Connect ``dev`` alone, read it, wake it at ``watts`` and wait for the read-back: the
    command accepted, then confirmed (asserted); the reading after it."""
    seen: list[Outcome] = []

    async def go() -> Telemetry:
        fleet = one_device_fleet(dev, seen)
        assert (await fleet.connect_all())[dev.device_id] is None
        await fleet.read_all()
        out = await fleet.apply({dev.device_id: ModeRequest("run", watts)})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED, out[0].error
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
        return (await fleet.read_all())[dev.device_id]

    return run(go())


def free_base(n: int, ports: tuple[int, ...] = (4028,)) -> str:
    """A random loopback /24 whose first ``n`` addresses have every one of ``ports`` free
    (a stock Antminer listens on 4028 and 80, a Braiins OS+ miner on 4028 and 50051)."""
    for _ in range(20):
        base = free_loopback_base(n, ports[0])
        prefix = base.rsplit(".", 1)[0]
        try:
            for i in range(1, n + 1):
                for port in ports[1:]:
                    with socket.socket() as s:
                        s.bind((f"{prefix}.{i}", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no loopback /24 with ports {ports} free on {n} addresses")


def loopback_host(ports: tuple[int, ...] = (4028,)) -> str:
    """One loopback address with ``ports`` free (nothing listens there), in a random /24."""
    return free_base(1, ports).rsplit(".", 1)[0] + ".1"


def can_bind_80() -> bool:
    """Whether this process may listen on port 80 (root or CAP_NET_BIND_SERVICE): the web
    APIs of stock Antminer and VNish firmware listen there, and their tests skip without."""
    try:
        loopback_host(ports=(80,))
    except RuntimeError:  # no address took it
        return False
    return True


def firmware_fleet(
    n: int,
    firmware: str | tuple[str, ...],
    ports: tuple[int, ...] = (4028,),
    models: tuple[str, ...] = (),
) -> Iterator[SimFleetThread]:
    """``n`` fast miners of one firmware (or of several, in contiguous blocks), each
    listening on ``ports``, on their own event loop thread: a module fixture's body.
    ``models``: the simulator's default mix when none are given."""
    fleet = SimFleet.build(
        n,
        base=free_base(n, ports),
        firmware=(firmware,) if isinstance(firmware, str) else firmware,
        models=models or ("Antminer S19j Pro", "Antminer S21"),
        control_port=None,
        sleep_s=FAST["sleep_s"],
        wake_s=FAST["wake_s"],
        retune_s=FAST["retune_s"],
        reboot_s=FAST["reboot_s"],
    )
    th = SimFleetThread(fleet)
    with th:
        yield th


def web_fleet(n: int, firmware: str, *models: str) -> Iterator[SimFleetThread]:
    """``n`` fast miners of one firmware whose web API listens on port 80 as well as 4028
    (stock Antminer, VNish), as ``firmware_fleet`` makes them."""
    yield from firmware_fleet(n, firmware, (4028, 80), models)


def skip_without_port_80() -> pytest.MarkDecorator:
    """The mark of a module whose miners' web API listens on port 80 (``web_fleet``):
    skipped where this process may not bind it."""
    return pytest.mark.skipif(not can_bind_80(), reason="cannot bind port 80 on loopback")


def miner_of(sim: SimFleetThread, i: int, kind: type[M]) -> M:
    """Miner ``i`` of the fleet, as the simulator class the test drives."""
    m = sim.fleet.miners[i]
    assert isinstance(m, kind)
    return m


def reset_each(sim: SimFleetThread, kind: type[M], reset: Callable[[M], object]) -> None:
    """``reset`` every miner of the fleet (each a ``kind``), on the fleet's own thread: what
    a module's autouse fixture does after each test."""

    def each() -> None:
        for m in sim.fleet.miners:
            assert isinstance(m, kind)
            reset(m)

    sim.call(each)


def sim_fleet() -> Iterator[SimFleetThread]:
    """Eight fast miners and four GPUs on their own event loop thread."""
    fleet = SimFleet.build(
        8,
        4,
        base=free_loopback_base(8),
        models=("Antminer S19j Pro", "Antminer S21"),
        control_port=0,
        **FAST,
    )
    th = SimFleetThread(fleet)
    with th:
        yield th


def clean(sim: SimFleetThread) -> None:
    """Clear every fault a test left, and let the listeners come back."""
    sim.call(lambda: [m.clear_faults() for m in sim.fleet.miners])
    sim.call(lambda: [setattr(g, "fault", None) for g in sim.fleet.gpus])
    for i in range(len(sim.fleet.miners)):
        wait_listening(sim, i)


def miner_host(sim: SimFleetThread, i: int) -> str:
    return sim.fleet.miners[i].host


def wait_listening(sim: SimFleetThread, i: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sim.call(lambda: sim.fleet.miners[i].listening):
            return
        time.sleep(0.05)
    raise AssertionError("simulated miner did not come back")
