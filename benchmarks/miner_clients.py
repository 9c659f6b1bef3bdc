"""pyasic against pyasic-rs (Python bindings of asic-rs, by pyasic's author) on the same
simulated miners: what each client can do per firmware family, and what it costs.

    .venv/bin/python benchmarks/miner_clients.py --miners 300 --rounds 5
    .venv/bin/python benchmarks/miner_clients.py --firmware antminer --miners 300

The simulator runs in its own process (``gridsched fleet simulate``), so the CPU time this
process spends (``time.process_time``: every thread, asic-rs's Rust runtime included) is
the client's alone. Per client and firmware it prints:

- correctness: identified (make, model, firmware), power read, hashrate read, a pause read
  back as not mining, a resume read back as mining (the client's own reading, 1.5 x the
  simulator's sleep/wake time after the command);
- speed: discovery, and per round a read of every miner (power, hashrate, mining state
  only), a pause of every miner and a resume of every miner: wall time (median over
  rounds) and CPU milliseconds per command.

By default only the clients are compared: no gridsched adapter code runs. With
``--through adapters`` the same steps go through gridsched's adapters instead
(``adapters.asic.PyasicMiner`` and ``adapters.asic_rs.AsicRsMiner``, ``kind = "pyasic"``
and ``"asic-rs"``): what a controller pays per command, checks and read-back parsing
included. pyasic-rs is optional (``pip install pyasic-rs``); without it only pyasic is
measured.

    .venv/bin/python benchmarks/miner_clients.py --through adapters --firmware luxos,antminer
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import start_simulator

SLEEP_S = 0.4
#: The simulators' web passwords (VNish's is "admin"; the others' "root").
SIM_PASSWORDS = {"vnish": "admin"}
WAKE_S = 0.4


class PyasicClient:
    name = "pyasic"

    def __init__(self) -> None:
        from pyasic.miners.data import DataOptions

        self.want = [DataOptions.WATTAGE, DataOptions.HASHRATE, DataOptions.IS_MINING]

    async def discover(self, host: str) -> Any:
        import pyasic

        return await pyasic.get_miner(host)

    @staticmethod
    def identity(m: Any) -> str:
        return f"{m.make} {m.model}"  # pyasic's model names the firmware in brackets

    async def read(self, m: Any) -> tuple[float | None, float | None, bool | None]:
        d = await m.get_data(include=self.want)
        hashrate = float(d.hashrate) if d.hashrate is not None else None
        return d.wattage, hashrate, d.is_mining

    async def pause(self, m: Any) -> bool:
        return bool(await m.stop_mining())

    async def resume(self, m: Any) -> bool:
        return bool(await m.resume_mining())


class PyasicRsClient:
    name = "pyasic-rs"
    password = "root"  # set per firmware by main()

    def __init__(self) -> None:
        import pyasic_rs
        from pyasic_rs.asic_rs import DataField

        keep = {"Wattage", "Hashrate", "IsMining"}
        self.exclude = [
            getattr(DataField, n) for n in dir(DataField) if n[0].isupper() and n not in keep
        ]
        self.factory = pyasic_rs.MinerFactory()

    async def discover(self, host: str) -> Any:
        m = await self.factory.get_miner(host)
        if m is not None:
            m.set_auth("root", self.password)  # asic-rs's defaults are not the firmware's
        return m

    @staticmethod
    def identity(m: Any) -> str:
        return f"{m.make} {m.model} ({m.firmware})"

    async def read(self, m: Any) -> tuple[float | None, float | None, bool | None]:
        d = await m.get_data(exclude=self.exclude)
        hashrate = None
        if d.hashrate is not None:
            hashrate = float(str(d.hashrate).split()[0])  # "199.8 TH/s"
        return d.wattage, hashrate, d.is_mining

    async def pause(self, m: Any) -> bool:
        return bool(await m.pause())

    async def resume(self, m: Any) -> bool:
        return bool(await m.resume())


class AdapterClient:
    """A gridsched adapter kind behind the same steps: discovery is ``connect``, a read is
    ``read`` (mining: the reading's state), a pause and a resume are ``apply``."""

    def __init__(self, kind: str) -> None:
        from adapters.asic import PyasicMiner

        self.name = f"{kind} adapter"
        self.password = "root"  # set per firmware by main()
        self.cls: Any = PyasicMiner
        if kind == "asic-rs":
            import pyasic_rs  # noqa: F401 - ImportError here when it is not installed

            from adapters.asic_rs import AsicRsMiner

            self.cls = AsicRsMiner

    async def discover(self, host: str) -> Any:
        from adapters.secrets import Secret

        password = Secret(self.password) if self.name.startswith("asic-rs") else None
        dev = self.cls(f"bench/{host}", host, timeout_s=10.0, password=password)
        await dev.connect()
        return dev

    @staticmethod
    def identity(dev: Any) -> str:
        return f"{dev.info.make} {dev.info.model} ({dev.info.family})"

    async def read(self, dev: Any) -> tuple[float | None, float | None, bool | None]:
        t = await dev.read()
        mining = {"running": True, "sleeping": False}.get(t.state)
        return t.power_w, t.hashrate_ths, mining

    async def pause(self, dev: Any) -> bool:
        from adapters.base import ModeRequest

        await dev.apply(ModeRequest("sleep"))
        return True

    async def resume(self, dev: Any) -> bool:
        from adapters.base import ModeRequest

        await dev.apply(ModeRequest("run"))
        return True


async def _all(
    miners: list[Any], call: Callable[[Any], Awaitable[Any]], limit: int
) -> tuple[float, float, list[Any]]:
    """Wall seconds, process CPU seconds and results of ``call`` over every miner."""
    sem = asyncio.Semaphore(limit)

    async def one(m: Any) -> Any:
        async with sem:
            try:
                return await call(m)
            except Exception as exc:  # a client's failure is a result here, not a crash
                return exc

    w0, c0 = time.perf_counter(), time.process_time()
    out = await asyncio.gather(*(one(m) for m in miners))
    return time.perf_counter() - w0, time.process_time() - c0, list(out)


def _ok(results: list[Any], test: Callable[[Any], bool]) -> str:
    good = sum(1 for r in results if not isinstance(r, BaseException) and test(r))
    return f"{good}/{len(results)}"


async def measure(
    client: Any, hosts: list[str], rounds: int, limit: int, discover_limit: int
) -> dict[str, Any]:
    # pyasic's get_miner answers None when identification outlasts its own timeouts, as
    # hundreds at once do on two cores: discovery runs at a lower concurrency
    wall, _, found = await _all([*hosts], client.discover, discover_limit)
    miners = [m for m in found if m is not None and not isinstance(m, BaseException)]
    failed = [f for f in found if isinstance(f, BaseException)]
    row: dict[str, Any] = {
        "client": client.name,
        "identified": f"{len(miners)}/{len(hosts)}",
        "as": client.identity(miners[0]) if miners else "-",
        "discover_s": wall,
    }
    if failed:
        row["first error"] = f"{type(failed[0]).__name__}: {failed[0]}"[:120]
    if not miners:
        return row
    _, _, reads = await _all(miners, client.read, limit)
    row["power"] = _ok(reads, lambda r: r[0] is not None and r[0] > 0)
    row["hashrate"] = _ok(reads, lambda r: r[1] is not None and r[1] > 0)
    timings: dict[str, list[tuple[float, float]]] = {"read": [], "pause": [], "resume": []}
    paused_ok = resumed_ok = ""
    for _ in range(rounds):
        w, c, _ = await _all(miners, client.read, limit)
        timings["read"].append((w, c))
        w, c, _ = await _all(miners, client.pause, limit)
        timings["pause"].append((w, c))
        await asyncio.sleep(1.5 * SLEEP_S)
        _, _, after = await _all(miners, client.read, limit)
        paused_ok = _ok(after, lambda r: r[2] is False)
        w, c, _ = await _all(miners, client.resume, limit)
        timings["resume"].append((w, c))
        await asyncio.sleep(1.5 * WAKE_S)
        _, _, after = await _all(miners, client.read, limit)
        resumed_ok = _ok(after, lambda r: r[2] is True)
    row["pause read back"] = paused_ok
    row["resume read back"] = resumed_ok
    for what, xs in timings.items():
        row[f"{what} s"] = statistics.median(w for w, _ in xs)
        row[f"{what} CPU ms/cmd"] = 1000 * statistics.median(c for _, c in xs) / len(miners)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--miners", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--firmware", default="luxos,antminer,braiins")
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--discover-concurrency", type=int, default=32)
    ap.add_argument("--base", default="127.44.0.0")
    ap.add_argument("--through", choices=("clients", "adapters"), default="clients")
    args = ap.parse_args()

    from adapters.fds import raise_fd_limit
    from adapters.sim.fleet import loopback_hosts

    raise_fd_limit(4 * args.miners + 1024)
    clients: list[Any] = [PyasicClient() if args.through == "clients" else AdapterClient("pyasic")]
    try:
        clients.append(PyasicRsClient() if args.through == "clients" else AdapterClient("asic-rs"))
    except ImportError:
        print("pyasic-rs is not installed (pip install pyasic-rs): pyasic only")
    rows = []
    for fw in args.firmware.split(","):
        sim = start_simulator(args.miners, args.base, SLEEP_S, WAKE_S, 0, "--firmware", fw.strip())
        try:
            hosts = loopback_hosts(args.miners, args.base)
            for client in clients:
                client.password = SIM_PASSWORDS.get(fw.strip(), "root")
                row = asyncio.run(
                    measure(client, hosts, args.rounds, args.concurrency, args.discover_concurrency)
                )
                rows.append({"firmware": fw, **row})
        finally:
            sim.terminate()
            sim.wait(30)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(f"python {sys.version.split()[0]}, {args.miners} miners, {args.rounds} rounds")
    for r in rows:
        print(
            "  ".join(
                f"{k}={r[k]:.3f}" if isinstance(r.get(k), float) else f"{k}={r.get(k, '-')}"
                for k in keys
            )
        )


if __name__ == "__main__":
    main()
