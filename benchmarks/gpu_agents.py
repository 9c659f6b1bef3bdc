"""GPUs on other hosts: the daemon's CPU per sweep of GPUs read through GPU agents.

At the example site (2,048 GPUs, eight per server) each GPU server runs ``gridsched
gpu-agent``. This starts ``--agents`` agents, each serving ``--per-agent`` simulated GPUs
with a secret (HMAC authentication, a MAC on every line), all in one child process on
loopback (standing in for the servers), builds the adapters as the registry does (one
``AgentBackend`` per agent, four kept connections), connects them and times
``Fleet.read_all`` sweeps: wall time, this process's CPU (the daemon's side) and the
agents' (from ``/proc``), per sweep and per reading.

    .venv/bin/python benchmarks/gpu_agents.py --agents 256 --per-agent 8 --sweeps 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_readings import proc_cpu_s  # noqa: E402

SECRET = "benchmark-agents-secret-0123456789abcdef"
#: The child: start the agents, print their ports on one line, serve until stdin closes.
CHILD = """
import asyncio, sys
from adapters.gpu_agent import GpuAgent
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend

async def main(n, per):
    agents = [
        GpuAgent(LocalSimBackend([SimGpu(i) for i in range(per)]), "127.0.0.1", 0,
                 Secret(sys.argv[3]), max_clients=16)
        for _ in range(n)
    ]
    for a in agents:
        await a.start()
    print(" ".join(str(a.port) for a in agents), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


async def sweeps(ports: list[int], per: int, n: int, child: int) -> None:
    from adapters.fleet import Fleet
    from adapters.gpu import NvmlGpu
    from adapters.gpu_remote import AgentBackend
    from adapters.secrets import Secret

    devs = []
    for port in ports:
        backend = AgentBackend("127.0.0.1", port, Secret(SECRET), timeout_s=10.0)
        devs += [NvmlGpu(f"g/{port}/gpu{i}", str(i), backend, i, 10.0) for i in range(per)]
    fleet = Fleet(devs, concurrency=256)
    t0, c0, a0 = time.perf_counter(), time.process_time(), proc_cpu_s(child)
    errors = [e for e in (await fleet.connect_all()).values() if e]
    print(
        f"connect {len(devs)} GPUs through {len(ports)} agents: "
        f"{time.perf_counter() - t0:.2f} s wall, daemon CPU {time.process_time() - c0:.2f} s, "
        f"agents CPU {proc_cpu_s(child) - a0:.2f} s; errors {len(errors)}"
    )
    walls, cpus, agent_cpus = [], [], []
    for _ in range(n):
        t0, c0, a0 = time.perf_counter(), time.process_time(), proc_cpu_s(child)
        readings = await fleet.read_all()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        agent_cpus.append(proc_cpu_s(child) - a0)
        if len(readings) != len(devs):
            print(f"  only {len(readings)} of {len(devs)} read")
    med = statistics.median
    print(
        f"sweep (median of {n}): {med(walls):.2f} s wall; daemon CPU {med(cpus):.2f} s "
        f"({1e3 * med(cpus) / len(devs):.3f} ms per reading); agents CPU "
        f"{med(agent_cpus):.2f} s"
    )
    await fleet.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=256)
    p.add_argument("--per-agent", type=int, default=8)
    p.add_argument("--sweeps", type=int, default=5)
    args = p.parse_args()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(args.agents), str(args.per_agent), SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        ports = [int(x) for x in child.stdout.readline().split()]
        asyncio.run(sweeps(ports, args.per_agent, args.sweeps, child.pid))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
