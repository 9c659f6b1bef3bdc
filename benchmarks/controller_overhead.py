"""The controller's own CPU per command and per poll, apart from the wire (issue 21: a curtail
of the example site commanded within 1 s needs about 0.13 ms of CPU per command in one
process on a 2-core host; a sweep within 5 s).

The daemon runs in this process over devices in memory (``tests/support/memfleet.py``: each
answers a read or a command at once, no socket, no parsing), so what is timed is what the
daemon and :class:`adapters.fleet.Fleet` do around each adapter call: the fast path's choice,
the fleet's slots, locks, retries and outcomes, the read-back's bookkeeping, the power
account, the shed order, dispatch and the audit records (written by the store's own thread,
whose CPU counts too: ``time.process_time`` is the whole process's).

Per round, on a fresh daemon (the example site's size by default: 7,500 miners in two classes
and 2,048 GPUs, a plan that runs every miner):

- ``poll``: ``Daemon.poll`` with nothing changed (a reading, the account, the telemetry
  record, dispatch finding nothing to do); ``read`` is ``Fleet.read_all`` alone, so ``poll -
  read`` is the daemon's own work per poll;
- ``curtail``: a 0 kW curtail stored, then the fast path (every miner and GPU told to sleep),
  in CPU per command;
- ``read-back``: the poll after it, which confirms every command and records the verdicts.

``--profile`` prints cProfile's top functions for the first round's curtail and polls.

    .venv/bin/python benchmarks/controller_overhead.py --rounds 3 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.fleet import freeze_heap
from models.signals import EventType, GridEvent
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import mixed_devices, site_text


async def _cpu(fn: Callable[[], Awaitable[Any]], prof: cProfile.Profile | None) -> float:
    c0 = time.process_time()
    if prof is not None:
        prof.enable()
    await fn()
    if prof is not None:
        prof.disable()
    return time.process_time() - c0


def _top(name: str, prof: cProfile.Profile, n: int = 30) -> None:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(n)
    print(f"\n--- cProfile: {name} (by own time) ---")
    print(out.getvalue())


async def one_round(
    miners: int, gpus: int, polls: int, profile: bool, tmp: Path
) -> dict[str, float]:
    text = site_text(
        "controller-overhead",
        interconnect_kw=40000,
        site={"base_load_kw": 0},
        hashprice=5.0,
        inference={"committed_tokens_s": 0, "committed_usd_per_mtok": 0.6},
        devices=mixed_devices(miners // 2, miners - miners // 2, gpus),
    )
    clock = FakeClock()
    d, devices = memory_daemon(text, tmp, clock)
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]  # timed apart
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
    out: dict[str, float] = {}
    try:
        await d.open()
        await d.replan("bench")
        clock.advance(1.0)
        await d.poll()  # dispatch brings the plan's modes, if any change
        freeze_heap()  # as the daemon's start does once set-up is done
        running = sum(1 for dev in devices.values() if dev.state == "running")
        prof = cProfile.Profile() if profile else None
        reads, poll_s = [], []
        for _ in range(polls):
            clock.advance(15.0)
            reads.append(await _cpu(d.fleet.read_all, None))
            clock.advance(15.0)
            poll_s.append(await _cpu(d.poll, prof))
        if prof is not None:
            _top(f"{polls} polls, nothing changed", prof)
        out["read_s"] = statistics.median(reads)
        out["poll_s"] = statistics.median(poll_s)
        start = datetime.fromtimestamp(clock.time(), UTC)
        event = GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h", limit_kw=0.0)
        await d.accept([event], "bench", None, "{}")
        prof = cProfile.Profile() if profile else None
        told: list[int] = []

        async def shed() -> None:
            told.append(len(await d.fast_path("bench")))

        out["curtail_s"] = await _cpu(shed, prof)
        out["commands"] = float(told[0])
        out["running"] = float(running)
        if prof is not None:
            _top(f"curtail of {told[0]} devices", prof)
        prof = cProfile.Profile() if profile else None
        clock.advance(5.0)
        out["readback_s"] = await _cpu(d.poll, prof)
        out["confirmed"] = float(len(d.fleet.pending) == 0 and told[0])
        if prof is not None:
            _top("the poll that reads the curtail back", prof)
    finally:
        await d.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--miners", type=int, default=7500)
    ap.add_argument("--gpus", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--polls", type=int, default=3, help="quiet polls timed per round")
    ap.add_argument("--profile", action="store_true", help="cProfile the first round")
    args = ap.parse_args()
    print(f"load average at the start: {os.getloadavg()}")
    rows = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            row = asyncio.run(
                one_round(args.miners, args.gpus, args.polls, args.profile and r == 0, Path(tmp))
            )
        rows.append(row)
        n = row["commands"]
        print(
            f"round {r + 1}: read {row['read_s'] * 1e3:.0f} ms, poll {row['poll_s'] * 1e3:.0f} ms "
            f"(own {(row['poll_s'] - row['read_s']) * 1e3:.0f} ms), curtail "
            f"{row['curtail_s'] * 1e3:.0f} ms for {n:.0f} commands "
            f"({row['curtail_s'] / max(n, 1) * 1e3:.3f} ms each), read-back poll "
            f"{row['readback_s'] * 1e3:.0f} ms; all confirmed: {bool(row['confirmed'])}"
        )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    n = med("commands")
    print(
        f"median of {len(rows)}: CPU per poll {med('poll_s') * 1e3:.0f} ms (reading "
        f"{med('read_s') * 1e3:.0f} ms), per command {med('curtail_s') / max(n, 1) * 1e3:.3f} ms, "
        f"read-back poll {med('readback_s') * 1e3:.0f} ms"
    )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
