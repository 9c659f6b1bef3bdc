"""Command 1,000 simulated miners and read the fleet back; p50 and p99 over rounds.

The simulator runs in its own process (``gridsched fleet simulate``), the controller in
this one, both on loopback, the way the daemon and a real fleet sit on a site network.
Every round: one telemetry sweep; curtail (sleep) all miners and wait for read-back to
show each asleep; stage the coming wake's profile on the sleeping miners, as the daemon
does (``Fleet.stage``; ``--no-stage`` leaves it to the wake); wake all at a power target,
a different preset from the last round's, and wait for read-back again.

- commanded: from the first command sent to the last miner's acknowledgement (a wake at
  a new target not staged is two round trips per miner on LuxOS: profile, then wake);
- staged: the ``profileset`` of every sleeping miner, off the wake's path;
- confirmed beyond reaction: read-back time minus the simulated miner's own reaction
  time (``--sleep-s`` to sleep; to wake, the part of ``--wake-s`` until the hashrate
  reaches the share that counts as running, 0.94 of it);
- sweep: one telemetry reading of every miner.

    .venv/bin/python benchmarks/fleet_control.py --miners 1000 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.asic import RUNNING_SHARE  # noqa: E402
from adapters.base import ModeRequest  # noqa: E402
from adapters.sim.miner import wake_reaches_s  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    calm,
    connected_fleet,
    cpu_sample,
    pct,
    start_simulator,
    steal_pct,
)
from scheduler.cli.aio import run_async  # noqa: E402


async def bench(args: argparse.Namespace) -> dict[str, list[float]]:
    fleet = await connected_fleet(args.miners, args.base, args.concurrency)
    out: dict[str, list[float]] = {
        "sweep_s": [],
        "sleep_commanded_s": [],
        "wake_commanded_s": [],
        "stage_s": [],
        "sleep_confirm_beyond_s": [],
        "wake_confirm_beyond_s": [],
        "command_latency_s": [],
        "sleep_cpu_s": [],
        "sleep_steal_pct": [],
    }
    targets = (3000.0, 3500.0)  # presets 2592 and 3416 W on the simulated S19j Pro
    # A wake is confirmed once the hashrate reaches RUNNING_SHARE of the preset's, before
    # the simulated ramp ends: that moment, not --wake-s, is the device's own reaction.
    wake_reaction_s = wake_reaches_s(args.wake_s, RUNNING_SHARE)
    for r in range(args.rounds):
        t = time.perf_counter()
        readings = await fleet.read_all()
        out["sweep_s"].append(time.perf_counter() - t)
        assert len(readings) == args.miners, f"sweep read {len(readings)} miners"

        c0 = time.process_time()
        cpu0 = cpu_sample()
        t = time.perf_counter()
        outcomes = await fleet.apply({i: ModeRequest("sleep") for i in fleet.by_id})
        out["sleep_commanded_s"].append(time.perf_counter() - t)
        out["sleep_steal_pct"].append(steal_pct(cpu0, cpu_sample()))
        out["sleep_cpu_s"].append(time.process_time() - c0)
        out["command_latency_s"] += [o.latency_s for o in outcomes]
        failed = [o for o in outcomes if not o.ok]
        assert not failed, failed[0].error
        confirmed = await fleet.confirm(outcomes, timeout_s=args.sleep_s + 10, poll_s=0.1)
        worst = max(v for v in confirmed.values() if v is not None)
        assert all(v is not None for v in confirmed.values()), "a miner never showed asleep"
        out["sleep_confirm_beyond_s"].append(worst + out["sleep_commanded_s"][-1] - args.sleep_s)

        wake = {i: ModeRequest("run", targets[r % 2]) for i in fleet.by_id}
        if args.stage:
            t = time.perf_counter()
            staged = await fleet.stage(wake)
            out["stage_s"].append(time.perf_counter() - t)
            assert len(staged) == args.miners and all(o.ok for o in staged), "a stage failed"
        t = time.perf_counter()
        outcomes = await fleet.apply(wake)
        out["wake_commanded_s"].append(time.perf_counter() - t)
        assert all(o.ok for o in outcomes)
        confirmed = await fleet.confirm(outcomes, timeout_s=args.wake_s + 10, poll_s=0.1)
        assert all(v is not None for v in confirmed.values()), "a miner never came back"
        worst = max(v for v in confirmed.values() if v is not None)
        out["wake_confirm_beyond_s"].append(worst + out["wake_commanded_s"][-1] - wake_reaction_s)
        print(
            f"round {r + 1:2d}: sweep {out['sweep_s'][-1] * 1000:6.0f} ms, "
            f"sleep commanded {out['sleep_commanded_s'][-1] * 1000:6.0f} ms, "
            f"confirmed +{out['sleep_confirm_beyond_s'][-1]:.2f} s; "
            + (f"staged in {out['stage_s'][-1] * 1000:.0f} ms; " if args.stage else "")
            + f"wake commanded {out['wake_commanded_s'][-1] * 1000:6.0f} ms, "
            f"confirmed +{out['wake_confirm_beyond_s'][-1]:.2f} s"
            + ("" if (st := out["sleep_steal_pct"][-1]) is None else f"; host steal {st:.0f} %"),
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--miners", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--sleep-s", type=float, default=1.0, help="simulated time to sleep")
    ap.add_argument("--wake-s", type=float, default=2.0, help="simulated time to wake")
    ap.add_argument("--base", default="127.20.0.0")
    ap.add_argument(
        "--no-stage",
        dest="stage",
        action="store_false",
        help="do not set the wake's profile ahead: each wake sends the profile, then the wake",
    )
    args = ap.parse_args()
    sim = start_simulator(args.miners, args.base, args.sleep_s, args.wake_s)
    try:
        res = run_async(bench(args))
    finally:
        sim.terminate()
        sim.wait(10)
    n = len(res["sweep_s"])
    print(f"\n{args.miners} miners, {n} rounds (simulator in its own process)")
    print(f"{'figure':34s} {'p50':>9s} {'p99':>9s} {'max':>9s}")
    for key, label, unit in (
        ("sleep_commanded_s", "all commanded: sleep", 1000),
        ("wake_commanded_s", "all commanded: wake, new target", 1000),
        ("stage_s", "staging the wake's profile ahead", 1000),
        ("command_latency_s", "one command (all rounds)", 1000),
        ("sleep_cpu_s", "controller CPU per sleep round", 1000),
        ("sweep_s", "telemetry sweep", 1000),
        ("sleep_confirm_beyond_s", "sleep read-back beyond reaction", 1000),
        ("wake_confirm_beyond_s", "wake read-back beyond reaction", 1000),
    ):
        xs = res[key]
        if not xs:
            continue
        p50, p99, top = (pct(xs, 0.5) * unit, pct(xs, 0.99) * unit, max(xs) * unit)
        print(f"{label:34s} {p50:7.0f}ms {p99:7.0f}ms {top:7.0f}ms")
    quiet = calm(res["sleep_commanded_s"], res["sleep_steal_pct"])
    if quiet:
        print(
            f"{'  sleep, rounds with steal < 10 %':34s} {pct(quiet, 0.5) * 1000:7.0f}ms "
            f"{pct(quiet, 0.99) * 1000:7.0f}ms {max(quiet) * 1000:7.0f}ms ({len(quiet)} of {n})"
        )
    print(f"mean sweep {statistics.fmean(res['sweep_s']) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
