"""The simulated fleet of ``benchmarks/fleet_control.py``: a mix of firmware families in a
process of its own, and what each simulated miner says it is doing (its control port), the
truth a command's read-back is checked against.

The miners are built by ``adapters.sim.fleet.SimFleet`` (each family's protocol simulator,
every miner on its own loopback address), as ``gridsched fleet simulate`` builds them, with
two things that command has no option for: any count per family, and an expiry for the
simulated LuxOS sessions (``LuxosSim.session_ttl_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from adapters.aio import run_async
from adapters.fleet import Outcome, freeze_heap
from adapters.sim.fleet import FIRMWARE, MinerSpec, SimFleet, ask_control, loopback_hosts
from adapters.sim.luxos import LuxosSim
from adapters.sim.physics import presets_for

DEFAULT_MIX = "luxos:250,antminer:250,braiins:250,whatsminer:250"


def parse_mix(text: str) -> list[tuple[str, int]]:
    """``"luxos:250,antminer:250"`` -> [("luxos", 250), ("antminer", 250)]."""
    out: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, count = part.partition(":")
        if name not in FIRMWARE:
            raise argparse.ArgumentTypeError(
                f"--mix: firmware {name!r}: valid are {', '.join(FIRMWARE)}"
            )
        try:
            n = int(count)
        except ValueError:
            n = -1
        if n < 1:
            raise argparse.ArgumentTypeError(f"--mix: {part!r}: give FIRMWARE:COUNT, COUNT >= 1")
        out.append((name, n))
    if not out:
        raise argparse.ArgumentTypeError("--mix: empty; e.g. " + DEFAULT_MIX)
    return out


def plan(mix: Sequence[tuple[str, int]], base: str) -> list[MinerSpec]:
    """The miners of the mix on consecutive loopback hosts, each family on its own hardware
    (the simulator class's default model: a Whatsminer runs on a Whatsminer)."""
    hosts = iter(loopback_hosts(sum(n for _, n in mix), base))
    specs = []
    for fw, n in mix:
        model = next(f.default for f in dataclasses.fields(FIRMWARE[fw]) if f.name == "model")
        specs += [MinerSpec(next(hosts), fw, str(model)) for _ in range(n)]
    return specs


# -- the simulator, in a process of its own ------------------------------------------------


def _sim_main(
    specs: list[MinerSpec], timings: dict[str, float], conn: Connection, profile: str | None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    prof = cProfile.Profile(time.process_time) if profile else None
    try:
        sys.exit(run_async(_serve(specs, timings, conn, prof)))
    finally:
        if prof is not None and profile:
            prof.disable()
            prof.dump_stats(profile)


async def _serve(
    specs: list[MinerSpec],
    timings: dict[str, float],
    conn: Connection,
    prof: cProfile.Profile | None = None,
) -> int:
    sim = SimFleet.from_specs(
        specs, sleep_s=timings["sleep_s"], wake_s=timings["wake_s"], control_port=0
    )
    if prof is not None:
        with_profiler(sim, prof)
    for m in sim.miners:
        if isinstance(m, LuxosSim):
            m.session_ttl_s = timings["session_ttl_s"]
    try:
        await sim.start()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return 2
    freeze_heap()
    conn.send(("ready", sim.control_port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # or the parent was killed outright
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await sim.stop()
    return 0


def start_sim(
    specs: list[MinerSpec], timings: dict[str, float], profile: str | None = None
) -> tuple[multiprocessing.process.BaseProcess, int]:
    """Fork the simulator (before this process runs an event loop); its control port.
    With ``profile``: the simulator is under cProfile while the control port's "profile"
    op says so (:func:`profile`), written to that path when it ends."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    args = (specs, timings, send, profile)
    proc = ctx.Process(target=_sim_main, args=args, name="fleet-sim")
    proc.start()
    send.close()
    if not recv.poll(120):
        proc.kill()
        raise SystemExit("the simulator did not start within 120 s")
    what, value = recv.recv()
    if what != "ready":
        proc.join(10)
        raise SystemExit(f"the simulator did not start: {value}")
    return proc, int(value)


def with_profiler(sim: SimFleet, prof: cProfile.Profile) -> None:
    """The simulator's control port turns ``prof`` on and off (``{"op": "profile", "on":
    true}``), answering once it is done, so that nothing it profiles races the request."""
    plain = sim.handle

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") != "profile":
            return plain(req)
        prof.enable() if req.get("on") else prof.disable()
        return {"ok": True}

    sim.handle = handle  # type: ignore[method-assign]


async def profile(port: int, on: bool) -> None:
    """The simulator's profiler on or off, done when this returns (``start_sim(profile=)``)."""
    raw = await ask_control("127.0.0.1", port, {"op": "profile", "on": on})
    if not json.loads(raw).get("ok"):
        raise RuntimeError(f"the simulator's profiler: {raw[:200]!r}")


async def truth(port: int) -> dict[str, dict[str, Any]]:
    """What each simulated miner is doing, by host, from the simulator itself."""
    raw = await ask_control("127.0.0.1", port, {"op": "list"}, limit=1 << 26)
    return {m["host"]: m for m in json.loads(raw)["miners"]}


def in_effect(out: Outcome, row: dict[str, Any]) -> bool:
    """Whether the simulated miner is in the mode ``out`` applied: asleep, or mining at the
    preset's watts (within 1 %, as the read-back checks) where a target was set."""
    assert out.applied is not None
    if out.request.action == "sleep":
        return bool(row["phase"] == "sleeping")
    if row["phase"] not in ("mining", "waking"):
        return False
    want = out.applied.target_w
    if want is None:
        return True
    name = str(row["profile"])
    known = {p.name: p.watts for p in presets_for(row["model"])}
    try:
        watts = known.get(name) or float(name.removesuffix("W"))
    except ValueError:
        return False  # a profile this check does not know: not shown to be in effect
    return abs(watts - want) <= max(1.0, 0.01 * want)
