"""Where a daemon's LuxOS telemetry sweep spends its CPU, against a ``fleet status`` sweep of
the same miners (issue 21: the daemon's sweeps cost three to four times as much).

The simulated miners run in a child process; this process reads them through
:class:`adapters.fleet.Fleet` as the daemon does (``sessions=True``) and as ``fleet status``
does (``sessions=False``), and times each sweep's CPU on both sides:

- ``status``: no sessions (``fleet status``);
- ``daemon, none due``: sessions held, no renewal due (a sweep far shorter than 30 s, between
  turns);
- ``daemon, all due``: every session past its turn (a sweep longer than ``SESSION_RENEW_S``:
  each reading asks for its session's renewal, a ``logoff`` and a ``logon``), the sweep
  right after the last one (no room between sweeps: the readings make the renewals,
  :mod:`adapters.fleet_upkeep`);
- ``daemon, all due, room``: the same after a pause as long as the last sweep (room: the
  fleet makes the renewals after the readings, off the sweep's path; ``upkeep s`` is how
  long they ran after the sweep ended, and the CPU columns count them).

``--profile`` prints cProfile's top functions of the controller for the first and last.

    .venv/bin/python benchmarks/daemon_sweep.py --miners 2000 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import multiprocessing as mp
import os
import pstats
import random
import time
from pathlib import Path

from adapters.aio import run_async
from adapters.asic import PyasicMiner
from adapters.base import ModeRequest
from adapters.fleet import Fleet
from adapters.sim.fleet import SimFleet, loopback_hosts


def _serve(n: int, base: str, ready: mp.synchronize.Event) -> None:
    async def go() -> None:
        fleet = SimFleet.build(n, 0, base=base, control_port=None)
        await fleet.start()
        ready.set()
        await asyncio.Event().wait()

    run_async(go())  # as ``gridsched fleet simulate`` runs it (uvloop where installed)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sweep(fleet: Fleet, sim_pid: int, prof: cProfile.Profile | None) -> tuple[float, ...]:
    """The sweep's wall (``read_all``), then the CPU of both sides until the session
    renewals its readings found due are done too (they run after it, off its path:
    :mod:`adapters.fleet_upkeep`), and that upkeep's own wall after the sweep."""
    w0, c0, s0 = time.perf_counter(), time.process_time(), _cpu_s(sim_pid)
    if prof is not None:
        prof.enable()
    readings = await fleet.read_all()
    w = time.perf_counter() - w0
    await fleet.upkeep.idle()
    if prof is not None:
        prof.disable()
    up = time.perf_counter() - w0 - w
    c, s = time.process_time() - c0, _cpu_s(sim_pid) - s0
    return w, c, s, float(len(readings)), up


async def _command(fleet: Fleet, request: ModeRequest, sim_pid: int) -> tuple[float, ...]:
    w0, c0, s0 = time.perf_counter(), time.process_time(), _cpu_s(sim_pid)
    out = await fleet.apply(dict.fromkeys(fleet.by_id, request))
    w, c, s = time.perf_counter() - w0, time.process_time() - c0, _cpu_s(sim_pid) - s0
    bad = [o for o in out if not o.ok or o.attempts != 1]
    if bad:
        print(f"  {len(bad)} not ok at the first attempt: {bad[0]}")
    return w, c, s, float(sum(o.ok for o in out)), 0.0


async def bench(hosts: list[str], sim_pid: int, profile: bool) -> None:
    async def fleet_of(sessions: bool) -> tuple[Fleet, list[PyasicMiner]]:
        devs = [PyasicMiner(f"lux/{h}", h, timeout_s=30.0, sessions=sessions) for h in hosts]
        # Discovery on a loaded host: fewer at once, more time each, then the stragglers.
        fleet = Fleet(devs, connect_concurrency=32, op_timeout_s=60.0)
        failed = await fleet.connect_all()
        for _ in range(3):
            if not any(failed.values()):
                break
            failed = await fleet.connect_all()
        bad = [k for k, v in failed.items() if v]
        if bad:
            raise SystemExit(f"{len(bad)} miners failed to connect: {failed[bad[0]]}")
        return fleet, devs

    n = len(hosts)
    print(f"{n} LuxOS miners; load average {os.getloadavg()}")
    print(
        f"{'sweep or command':24s} {'wall s':>7s} {'upkeep s':>8s}"
        f" {'ctl CPU s':>9s} {'ms/miner':>8s} {'sim CPU s':>9s}"
    )

    def row(name: str, r: tuple[float, ...]) -> None:
        w, c, s, k, up = r
        print(f"{name:24s} {w:7.2f} {up:8.2f} {c:9.2f} {c / n * 1e3:8.3f} {s:9.2f}  ({k:.0f} ok)")

    profs: dict[str, cProfile.Profile] = {}
    status, _ = await fleet_of(False)
    await status.read_all()  # warm
    profs["status"] = cProfile.Profile(time.process_time) if profile else None  # type: ignore[assignment]
    row("status", await _sweep(status, sim_pid, profs["status"]))
    await status.close()

    daemon, devs = await fleet_of(True)
    await daemon.read_all()  # warm (renews what is due after connect: the first turn)
    for d in devs:
        d._session_used = time.monotonic()
    row("daemon, none due", await _sweep(daemon, sim_pid, None))
    for d in devs:
        d._session_used = -math.inf
    profs["all due"] = cProfile.Profile(time.process_time) if profile else None  # type: ignore[assignment]
    row("daemon, all due", await _sweep(daemon, sim_pid, profs["all due"]))
    for d in devs:
        d._session_used = -math.inf
    t0 = time.perf_counter()
    await daemon.read_all()  # a sweep, then a pause as long (the poll's spacing gives room)
    await daemon.upkeep.idle()
    await asyncio.sleep(time.perf_counter() - t0)
    for d in devs:
        d._session_used = -math.inf
    row("daemon, all due, room", await _sweep(daemon, sim_pid, None))
    for d in devs:  # readings SESSION_SAFE_S apart: a due renewal is skipped
        d._session_used, d._read_mono = -math.inf, d._read_mono - 100.0
    row("daemon, all due, far", await _sweep(daemon, sim_pid, None))
    # The other side: a command on a fresh session, and on one a reading did not renew.
    for d in devs:
        d._session_used = time.monotonic()
    row("curtail, fresh session", await _command(daemon, ModeRequest("sleep"), sim_pid))
    for d in devs:
        d._session_used -= 100.0
    row("wake, stale session", await _command(daemon, ModeRequest("run"), sim_pid))
    await daemon.close()
    for name, p in profs.items():
        if p is None:
            continue
        out = io.StringIO()
        pstats.Stats(p, stream=out).sort_stats("tottime").print_stats(14)
        print(f"\n--- {name}: top functions by own time ---")
        print("\n".join(out.getvalue().splitlines()[4:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--miners", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    base = f"127.{random.randrange(100, 250)}.0.0"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    sim = ctx.Process(target=_serve, args=(args.miners, base, ready), daemon=True)
    sim.start()
    try:
        if not ready.wait(300):
            raise SystemExit("the simulator did not start within 300 s")
        assert sim.pid is not None
        # As the daemon runs (uvloop where installed).
        run_async(bench(loopback_hosts(args.miners, base), sim.pid, args.profile))
    finally:
        sim.terminate()
        sim.join(10)


if __name__ == "__main__":
    main()
