"""What the fleet and signal benchmarks share: percentiles, the CPU time stolen from this
machine by the hypervisor (/proc/stat, Linux), the simulator, a request to its control port
and a fleet connected to it.

Timings on a shared virtual machine move with other tenants' load; the benchmarks print the
steal over each round beside it, and the figures of the calm rounds apart, so that a slow
round can be told from a slow program.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.fleet import Fleet

ROOT = Path(__file__).resolve().parent.parent
STAT = Path("/proc/stat")
#: Rounds with less host CPU steal than this (percent) count as calm.
CALM_STEAL_PCT = 10.0


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def calm(xs: list[float], steal: list[float | None]) -> list[float]:
    """The figures of the rounds whose host CPU steal is known and below CALM_STEAL_PCT."""
    return [x for x, st in zip(xs, steal, strict=True) if st is not None and st < CALM_STEAL_PCT]


def cpu_sample() -> tuple[int, int] | None:
    """(steal, total) jiffies over all CPUs since boot; None where /proc/stat is missing."""
    try:
        fields = STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    ticks = [int(v) for v in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of CPU time stolen between two samples, in percent."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def start_simulator(
    miners: int, base: str, sleep_s: float, wake_s: float, control_port: int = 0, *extra: str
) -> subprocess.Popen[str]:
    """``gridsched fleet simulate`` in its own process, as a real fleet sits apart from the
    controller; returns once it is listening (its first line printed)."""
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "scheduler.cli", "fleet", "simulate",
            "--miners", str(miners), "--base", base, "--control-port", str(control_port),
            "--sleep-s", str(sleep_s), "--wake-s", str(wake_s), *extra,
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    if not line:  # it exited before listening
        raise SystemExit(
            f"the simulator did not start (exit {sim.wait(10)}; its error is above): "
            f"is another simulator still bound to {base.rsplit('.', 2)[0]}.x.x?"
        )
    print(line)
    return sim


def control(port: int, req: dict[str, Any]) -> dict[str, Any]:
    """One request to the simulator's control port (JSON lines)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    out: dict[str, Any] = json.loads(buf)
    return out


async def connected_fleet(miners: int, base: str, concurrency: int) -> Fleet:
    """A ``Fleet`` of pyasic adapters over the simulator's loopback miners, every one
    connected (or SystemExit), its heap frozen as the daemon's is once it is set up."""
    from adapters.asic import PyasicMiner
    from adapters.fds import raise_fd_limit
    from adapters.fleet import Fleet, freeze_heap
    from adapters.sim.fleet import loopback_hosts

    raise_fd_limit(4 * miners + 1024)
    hosts = loopback_hosts(miners, base)
    fleet = Fleet([PyasicMiner(f"m/{h}", h, timeout_s=3.0) for h in hosts], concurrency=concurrency)
    t0 = time.perf_counter()
    errors = await fleet.connect_all()
    freeze_heap()
    bad = [e for e in errors.values() if e]
    print(f"connected {miners - len(bad)}/{miners} in {time.perf_counter() - t0:.1f} s")
    if bad:
        raise SystemExit(f"{len(bad)} miners failed to connect, e.g. {bad[0]}")
    return fleet
