"""The fleet in one process against the fleet sharded over worker processes
(``[daemon] fleet_workers``, ``adapters/fleet_shards.py``): a telemetry sweep of every
miner, and a curtail of every miner (sleep and wake in turn) until commanded and until
confirmed by read-back, with the CPU each took.

Each setting of ``--workers`` is a fleet of its own over ``--miners`` simulated miners of
its own (``gridsched fleet simulate`` in its own processes serves them all: one LuxOS miner
takes one session, and two controllers on one miner would take it from each other):
``1`` is the one-process
:class:`~adapters.fleet.Fleet` (today's path, what ``fleet_workers = 1`` and ``"auto"`` on a
2-core host give); ``1s`` is a :class:`~adapters.fleet_shards.ShardedFleet` with one worker
(the sharding's overhead alone); ``2``, ``3``... that many workers. The settings take turns
round by round, so that the host's slow and quiet minutes fall on all of them (with
``--sequential``, one after the other over the same miners, each fleet closed before the
next connects: half the simulator, for the example site's size); each round
sweeps, then sleeps (odd rounds) or wakes (even rounds) every miner. Controller CPU is this
process's plus its workers' (``/proc``); the simulator's is given apart.

    .venv/bin/python benchmarks/fleet_shards.py --miners 1000 --workers 1,1s,2 --rounds 4
    .venv/bin/python benchmarks/fleet_shards.py --miners 7500 --workers 1,2 --rounds 2 \\
        --cache /tmp/ids.json   # discovery found once, reused by later runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.aio import run_async  # noqa: E402
from adapters.asic import PyasicMiner  # noqa: E402
from adapters.base import DeviceAdapter, ModeRequest  # noqa: E402
from adapters.discovery import IdentityBook, attach  # noqa: E402
from adapters.fds import raise_fd_limit  # noqa: E402
from adapters.fleet import Fleet, freeze_heap  # noqa: E402
from adapters.fleet_shards import ShardedFleet  # noqa: E402
from adapters.sim.fleet import loopback_hosts  # noqa: E402
from benchmarks.measure import cpu_sample, start_simulator, steal_pct  # noqa: E402

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 where it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S


def tree(pid: int) -> list[int]:
    """A process and its children (the simulator's workers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


class Setting:
    def __init__(self, name: str, fleet: Fleet) -> None:
        self.name, self.fleet = name, fleet
        self.connect_s = 0.0
        self.rows: dict[str, list[float]] = {
            k: [] for k in ("sweep_s", "sweep_cpu_s", "commanded_s", "confirmed_s", "cmd_cpu_s")
        }
        self.unconfirmed = 0

    def cpu_s(self) -> float:
        own = time.process_time()
        if isinstance(self.fleet, ShardedFleet):
            own += sum(proc_cpu_s(p) for p in self.fleet.worker_pids())
        return own


def build(name: str, miners: list[DeviceAdapter], concurrency: int, read_c: int) -> Fleet:
    groups = {m.device_id: "m" for m in miners}
    kw = {"concurrency": concurrency, "read_concurrency": read_c}
    if name == "1":
        return Fleet(miners, groups, **kw)  # type: ignore[arg-type]
    n = 1 if name == "1s" else int(name)
    return ShardedFleet(miners, groups, workers=n, **kw)  # type: ignore[arg-type]


async def confirm(fleet: Fleet, timeout_s: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    while fleet.pending and time.perf_counter() - t0 < timeout_s:
        await fleet.read_all(list(fleet.pending))
    return time.perf_counter() - t0, len(fleet.pending)


async def connect(
    name: str, hosts: list[str], args: argparse.Namespace, book: IdentityBook
) -> Setting:
    miners: list[DeviceAdapter] = [
        PyasicMiner(f"m/{h}", h, timeout_s=3.0, sessions=args.sessions) for h in hosts
    ]
    attach(miners, book)
    s = Setting(name, build(name, miners, args.concurrency, args.read_concurrency))
    t0 = time.perf_counter()
    errors = await s.fleet.connect_all()
    for _ in range(3):  # discovery's probes time out on a loaded host: read them again
        if not any(errors.values()):
            break
        readings = await s.fleet.read_all([i for i, e in errors.items() if e])
        errors = {i: e for i, e in errors.items() if e and i not in readings}
    s.connect_s = time.perf_counter() - t0
    bad = [e for e in errors.values() if e]
    print(f"workers {name}: connected {len(hosts) - len(bad)}/{len(hosts)} "
          f"in {s.connect_s:.1f} s", flush=True)  # fmt: skip
    if bad:
        raise SystemExit(f"{len(bad)} miners failed to connect, e.g. {bad[0]}")
    return s


async def one_round(s: Setting, r: int, args: argparse.Namespace, sim_pids: list[int]) -> None:
    """A sweep, then every miner told to sleep (odd rounds) or wake, read back."""
    load0, st0 = os.getloadavg()[0], cpu_sample()
    sim0 = sum(proc_cpu_s(p) for p in sim_pids)
    c0, t0 = s.cpu_s(), time.perf_counter()
    await s.fleet.read_all()
    s.rows["sweep_s"].append(time.perf_counter() - t0)
    s.rows["sweep_cpu_s"].append(s.cpu_s() - c0)
    sim_sweep = sum(proc_cpu_s(p) for p in sim_pids) - sim0
    req = ModeRequest("run") if r % 2 else ModeRequest("sleep")
    c0, t0 = s.cpu_s(), time.perf_counter()
    out = await s.fleet.apply({i: req for i in s.fleet.by_id})
    s.rows["commanded_s"].append(time.perf_counter() - t0)
    s.rows["cmd_cpu_s"].append(s.cpu_s() - c0)
    failed = [o for o in out if not o.ok]
    wait_s, left = await confirm(s.fleet, args.confirm_s)
    s.rows["confirmed_s"].append(s.rows["commanded_s"][-1] + wait_s)
    s.unconfirmed += left
    steal = steal_pct(st0, cpu_sample())
    print(
        f"round {r + 1} workers {s.name:>2}: sweep {s.rows['sweep_s'][-1]:6.2f} s "
        f"(CPU {s.rows['sweep_cpu_s'][-1]:5.2f} s, simulator {sim_sweep:5.2f} s), "
        f"{req.action} commanded {s.rows['commanded_s'][-1]:6.2f} s "
        f"(CPU {s.rows['cmd_cpu_s'][-1]:5.2f} s), confirmed "
        f"{s.rows['confirmed_s'][-1]:6.2f} s; failed {len(failed)}, unconfirmed {left}; "
        f"load {load0:.1f}-{os.getloadavg()[0]:.1f}, steal "
        f"{'-' if steal is None else f'{steal:.0f} %'}",
        flush=True,
    )


def report(args: argparse.Namespace, settings: list[Setting]) -> None:
    print(f"\n{args.miners} miners, {args.rounds} rounds, medians (max)")
    print(f"{'workers':>7} {'connect':>8} {'sweep':>15} {'sweep CPU':>10} {'commanded':>15} "
          f"{'cmd CPU':>8} {'confirmed':>15}")  # fmt: skip
    for s in settings:
        cells = [
            f"{statistics.median(s.rows[k]):6.2f} ({max(s.rows[k]):5.2f})"
            if k in ("sweep_s", "commanded_s", "confirmed_s")
            else f"{statistics.median(s.rows[k]):8.2f}"
            for k in ("sweep_s", "sweep_cpu_s", "commanded_s", "cmd_cpu_s", "confirmed_s")
        ]
        print(f"{s.name:>7} {s.connect_s:7.1f}s " + " ".join(cells))


async def bench(args: argparse.Namespace, sim_pids: list[int]) -> None:
    names = args.workers.split(",")
    raise_fd_limit(4 * args.miners * len(names) + 1024)
    every = loopback_hosts(args.miners * (1 if args.sequential else len(names)), args.base)
    cache = Path(args.cache) if args.cache else None
    docs = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    book = IdentityBook.from_docs(docs)
    settings: list[Setting] = []
    for j, name in enumerate(names):
        k = 0 if args.sequential else j
        s = await connect(name, every[k * args.miners : (k + 1) * args.miners], args, book)
        settings.append(s)
        if cache is not None:
            docs.update(book.changes())
            cache.write_text(json.dumps(docs))
        freeze_heap()
        if args.sequential:  # one fleet at a time over the same miners
            for r in range(args.rounds):
                await one_round(s, r, args, sim_pids)
            await s.fleet.close()
    if not args.sequential:
        for r in range(args.rounds):
            for s in settings:
                await one_round(s, r, args, sim_pids)
        for s in settings:
            await s.fleet.close()
    report(args, settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--miners", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="settings, comma-separated: 1, 1s, 2, 3...")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=256, help="commands in flight")
    ap.add_argument("--read-concurrency", type=int, default=64, help="readings in flight")
    ap.add_argument("--confirm-s", type=float, default=60.0, help="read-back limit")
    ap.add_argument("--base", default="127.160.0.0")
    ap.add_argument("--cache", help="identities found by discovery, kept between runs (JSON)")
    ap.add_argument(
        "--no-sessions",
        dest="sessions",
        action="store_false",
        help="LuxOS: no logon at connect nor renewal in readings (as `fleet status`); a sweep "
        "longer than the renewal period renews at every reading",
    )
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="the settings one after the other over the same miners (half the simulator)",
    )
    ap.add_argument("--firmware", default="luxos", help="the simulator's families")
    args = ap.parse_args()
    total = args.miners * (1 if args.sequential else len(args.workers.split(",")))
    sim = start_simulator(total, args.base, 0.3, 0.6, 0, "--firmware", args.firmware)
    try:
        run_async(bench(args, tree(sim.pid)))
    finally:
        sim.terminate()
        sim.wait(30)


if __name__ == "__main__":
    main()
