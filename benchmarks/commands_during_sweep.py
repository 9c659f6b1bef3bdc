"""A curtail that arrives during a telemetry sweep: how long all 1,000 miners take to be
commanded, for several bounds on the readings in flight.

Readings not yet sent wait while commands are out (``adapters.fleet``), but those already
out are answered and parsed on the same event loop as the commands. Each round starts a
sweep of the whole fleet, waits a random 10-100 ms, then commands every miner (sleep and
wake in turn) and times the commands. The read bounds are tried in turn, round-robin, so
that the machine's slow and quiet minutes fall on all of them alike. Each bound is a fleet
of its own over the same connected miners; a warm-up round (``--warmup``) runs first.

    .venv/bin/python benchmarks/commands_during_sweep.py --miners 1000 --rounds 12
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.aio import run_async  # noqa: E402
from adapters.base import ModeRequest  # noqa: E402
from adapters.fleet import Fleet  # noqa: E402
from benchmarks.measure import connected_fleet, pct, start_simulator  # noqa: E402


async def bench(args: argparse.Namespace) -> None:
    first = await connected_fleet(args.miners, args.base, args.concurrency)
    rng = random.Random(args.seed)
    bounds = [int(b) for b in args.read_concurrency.split(",")]
    # one fleet per bound over the same connected miners: the bound is the fleet's own
    # (``Fleet(read_concurrency=...)``, the daemon's ``[daemon] read_concurrency``)
    miners = list(first.by_id.values())
    fleets = {b: Fleet(miners, concurrency=args.concurrency, read_concurrency=b) for b in bounds}
    commanded: dict[int, list[float]] = {b: [] for b in bounds}
    sweeps: dict[int, list[float]] = {b: [] for b in bounds}
    asleep = False
    for r in range(-args.warmup, args.rounds):  # warm-up rounds first, not counted
        for b in bounds:
            fleet = fleets[b]
            t0 = time.perf_counter()
            sweep = asyncio.create_task(fleet.read_all())
            await asyncio.sleep(rng.uniform(0.01, 0.1))
            req = ModeRequest("run") if asleep else ModeRequest("sleep")
            t = time.perf_counter()
            out = await fleet.apply({i: req for i in fleet.by_id})
            took = time.perf_counter() - t
            assert all(o.ok for o in out), next(o.error for o in out if not o.ok)
            await sweep
            if r >= 0:
                commanded[b].append(took)
                sweeps[b].append(time.perf_counter() - t0)
            asleep = not asleep
            await asyncio.sleep(args.settle_s)
        if r < 0:
            print(f"warm-up round {r + args.warmup + 1} done", flush=True)
            continue
        print(
            f"round {r + 1:2d}: "
            + ", ".join(f"reads {b}: {commanded[b][-1] * 1000:4.0f} ms" for b in bounds),
            flush=True,
        )
    print(f"\n{args.miners} miners, {args.rounds} rounds per bound, commands {args.concurrency}")
    print(
        f"{'readings in flight':>18s} {'commanded p50':>14s} {'p99':>7s} {'max':>7s} "
        f"{'sweep+commands p50':>19s}"
    )
    for b in bounds:
        xs = commanded[b]
        print(
            f"{b:18d} {pct(xs, 0.5) * 1000:12.0f}ms {pct(xs, 0.99) * 1000:5.0f}ms "
            f"{max(xs) * 1000:5.0f}ms {statistics.median(sweeps[b]) * 1000:17.0f}ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--miners", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument(
        "--concurrency", type=int, default=512, help="commands in flight (the daemon's default)"
    )
    ap.add_argument(
        "--read-concurrency", default="256,64", help="bounds to compare, comma-separated"
    )
    ap.add_argument("--settle-s", type=float, default=1.2, help="pause after each round")
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run first and not counted: each bound's fleet is a new one over the "
        "same miners, and its first curtail took 3-4 times as long as later ones",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base", default="127.22.0.0")
    args = ap.parse_args()
    sim = start_simulator(args.miners, args.base, 0.5, 0.5)
    try:
        run_async(bench(args))
    finally:
        sim.terminate()
        sim.wait(10)


if __name__ == "__main__":
    main()
