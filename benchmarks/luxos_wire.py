"""CPU per LuxOS request on each side of the wire: pyasic's transport against
:mod:`adapters.luxos_wire`, on the same simulated miners (issue 21: the LuxOS wire cost).

The simulated LuxOS miners run in a child process (``gridsched fleet simulate``'s loop:
uvloop where installed); this process sends each command ``--requests`` times, 64 at once,
through pyasic's ``send_command`` and through ``luxos_wire.ask``, alternating, on the same
loop as the daemon's, and prints the CPU per request of this process and of the simulator
(from ``/proc``). ``--sim-tree`` runs the simulator from another checkout (its code before
a change, say) while the client stays this one.

    .venv/bin/python benchmarks/luxos_wire.py [--miners 200] [--requests 3000] \\
        [--commands power+summary+stats+config,curtail] [--sim-tree /path/to/checkout]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters import luxos_wire  # noqa: E402
from adapters.aio import run_async  # noqa: E402
from adapters.sim.fleet import loopback_hosts  # noqa: E402

SERVE = """
import asyncio, sys
from adapters.aio import run_async
from adapters.sim.fleet import SimFleet
async def go():
    fleet = SimFleet.build(int(sys.argv[1]), 0, base=sys.argv[2], control_port=None)
    await fleet.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
run_async(go())
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _round(hosts: list[str], how: str, command: str, n: int, sim_pid: int) -> str:
    from pyasic.rpc.luxminer import LUXMinerRPCAPI

    rpcs = [LUXMinerRPCAPI(h) for h in hosts]
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> Any:
        async with sem:
            try:
                if how == "pyasic":
                    return await rpcs[i % len(rpcs)].send_command(command)
                return await luxos_wire.ask(hosts[i % len(hosts)], 4028, command)
            except Exception:  # a refusal (curtail without a session) is a request too
                return None

    await asyncio.gather(*(one(i) for i in range(200)))  # warm
    c0, s0, w0 = time.process_time(), _cpu_s(sim_pid), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    c, s = time.process_time() - c0, _cpu_s(sim_pid) - s0
    w = time.perf_counter() - w0
    return f"{how:7s} {command:36s} {w:7.2f} {c / n * 1e3:9.3f} {s / n * 1e3:9.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--miners", type=int, default=200)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--commands", default="power+summary+stats+config,curtail")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sim-tree", default=str(ROOT))
    args = ap.parse_args()
    base = f"127.{random.randrange(100, 250)}.0.0"
    env = {**os.environ, "PYTHONPATH": args.sim_tree}
    sim = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(args.miners), base],
        cwd=args.sim_tree,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        if sim.stdout.readline().strip() != "ready":
            raise SystemExit("the simulator did not start")
        hosts = loopback_hosts(args.miners, base)
        print(f"{args.miners} LuxOS miners, load average {os.getloadavg()}")
        print(f"{'client':7s} {'command':36s} {'wall s':>7s} {'ctl ms/req':>9s} {'sim ms/req':>9s}")
        for _ in range(args.rounds):
            for command in args.commands.split(","):
                for how in ("pyasic", "wire"):
                    print(run_async(_round(hosts, how, command, args.requests, sim.pid)))
    finally:
        sim.terminate()
        sim.wait(10)


if __name__ == "__main__":
    main()
