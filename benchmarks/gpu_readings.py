"""CPU per GPU reading at the example site's size: the controller's and the simulator's.

At the example site the daemon reads 2,048 simulated GPUs through the NVML adapter and the
simulator's control port (``adapters.sim.gpu_backend.RemoteSimBackend``), as
``gridsched fleet simulate --gpus N`` writes the site. This starts that simulator in its own
process (one miner, ``--gpus``), builds the adapters as the registry does (one backend, 16
kept connections), connects them as the daemon does (controller: the clock reset), and
times ``Fleet.read_all`` sweeps of the GPUs alone: wall time, this process's CPU and the
simulator's (from ``/proc``), each per sweep and per reading. ``--in-process`` reads the
same number of simulated GPUs in this process instead (``LocalSimBackend``: the adapter's
own cost, no wire). ``--per-call`` makes each reading six backend calls, as the adapter did
before one ``reading`` call answered them together (the comparison of docs/performance.md).

    .venv/bin/python benchmarks/gpu_readings.py --gpus 2048 --sweeps 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User and system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _host_port(control: str) -> tuple[str, int]:
    host, _, port = control.rpartition(":")
    return host, int(port)


class PerCall:
    """A backend whose ``reading`` is the six calls one by one (the adapter before)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.label = inner, inner.label

    async def count(self) -> int:
        return int(await self.inner.count())

    async def call(self, index: int, call: str, *args: float) -> Any:
        from adapters.nvml import READING

        if call != "reading":
            return await self.inner.call(index, call, *args)
        return tuple([await self.inner.call(index, c) for c in READING])


async def sweeps(args: argparse.Namespace, sim_pid: int | None, control: str | None) -> None:
    from adapters.fleet import Fleet, freeze_heap
    from adapters.gpu import NvmlGpu
    from adapters.nvml import GpuBackend
    from adapters.sim.gpu import SimGpu
    from adapters.sim.gpu_backend import LocalSimBackend, RemoteSimBackend

    backend: GpuBackend
    if args.per_call:
        inner: GpuBackend = (
            LocalSimBackend([SimGpu(i) for i in range(args.gpus)])
            if control is None
            else RemoteSimBackend(*_host_port(control), 5.0)
        )
        backend = PerCall(inner)
    elif control is None:
        backend = LocalSimBackend([SimGpu(i) for i in range(args.gpus)])
    else:
        backend = RemoteSimBackend(*_host_port(control), 5.0)
    gpus = [
        NvmlGpu(f"h100/gpu{i}", str(i), backend=backend, index=i, timeout_s=5.0)
        for i in range(args.gpus)
    ]
    for g in gpus:
        g.controller = True  # as the daemon: the connect resets the clocks
    fleet = Fleet(list(gpus), concurrency=args.concurrency)
    errors = await fleet.connect_all()
    bad = [e for e in errors.values() if e]
    if bad:
        raise SystemExit(f"{len(bad)} GPUs failed to connect, e.g. {bad[0]}")
    freeze_heap()
    await fleet.read_all()  # warm: connections opened, first readings
    walls, ctl, simc = [], [], []
    for _ in range(args.sweeps):
        c0 = time.process_time()
        s0 = proc_cpu_s(sim_pid) if sim_pid else 0.0
        t0 = time.perf_counter()
        readings = await fleet.read_all()
        walls.append(time.perf_counter() - t0)
        ctl.append(time.process_time() - c0)
        simc.append(proc_cpu_s(sim_pid) - s0 if sim_pid else 0.0)
        if len(readings) != args.gpus:
            raise SystemExit(f"only {len(readings)} of {args.gpus} GPUs read")
    n = args.gpus
    where = "in process" if control is None else "remote"
    how = "six calls per reading" if args.per_call else "one call per reading"
    print(f"{n} GPUs, {args.sweeps} sweeps, {where}, {how}")
    print(f"sweep wall s: {' '.join(f'{w:.2f}' for w in walls)}")
    print(f"controller CPU s: {' '.join(f'{c:.2f}' for c in ctl)}")
    print(
        f"controller CPU s per sweep: median {statistics.median(ctl):.3f} (per reading "
        f"{statistics.median(ctl) / n * 1e3:.3f} ms)"
    )
    if sim_pid:
        print(
            f"simulator CPU s per sweep: median {statistics.median(simc):.3f} (per reading "
            f"{statistics.median(simc) / n * 1e3:.3f} ms)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    await fleet.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=2048)
    ap.add_argument("--sweeps", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--base", default="127.77.0.0", help="the one simulated miner's address")
    ap.add_argument("--in-process", action="store_true", help="LocalSimBackend, no wire")
    ap.add_argument("--per-call", action="store_true", help="six backend calls per reading")
    args = ap.parse_args()
    if args.in_process:
        asyncio.run(sweeps(args, None, None))
        return
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "scheduler.cli", "fleet", "simulate", "--miners", "1",
            "--gpus", str(args.gpus), "--base", args.base, "--control-port", "0",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline().strip()
        print(line)
        found = re.search(r"control (\S+:\d+)", line)
        if found is None:
            raise SystemExit(f"the simulator did not say its control port: {line!r}")
        asyncio.run(sweeps(args, sim.pid, found.group(1)))
    finally:
        sim.terminate()
        sim.wait(10)


if __name__ == "__main__":
    main()
