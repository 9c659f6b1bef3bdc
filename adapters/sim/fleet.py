"""A simulated fleet on loopback: miners on 127.x.y.z and simulated GPUs.

Each miner listens on its own loopback address (Linux routes all of 127.0.0.0/8 to lo),
so a thousand of them run in one process and pyasic discovers each like a real one.
A miner runs LuxOS (:class:`~adapters.sim.miner.SimMiner`, API on 4028), stock Bitmain
firmware (:class:`~adapters.sim.antminer.AntminerSim`, API on 4028 and web CGI on 80) or
Braiins OS+ (:class:`~adapters.sim.braiins.BraiinsSim`, API on 4028, gRPC on 50051, web on 80)
or Whatsminer (:class:`~adapters.sim.whatsminer.WhatsminerSim`, btminer API on 4028)
or VNish (:class:`~adapters.sim.vnish.VnishSim`, API on 4028 and its web API on 80)
or a Whatsminer on API v3 (:class:`~adapters.sim.whatsminer3.WhatsminerV3Sim`, 4433 and 4028)
or Auradine (:class:`~adapters.sim.auradine.AuradineSim`, GCMiner API on 4028, web API on 8080).
A control port on 127.0.0.1 speaks JSON lines: list the fleet, inject or clear faults,
and make NVML calls on the simulated GPUs (what the ``sim`` GPU backend uses).

    {"op": "list"}
    {"op": "fault", "hosts": ["127.1.0.1"], "kind": "hang", "duration_s": 30}
    {"op": "clear", "hosts": "all"}
    {"op": "gpu", "index": 3, "call": "set_limit_w", "args": [350]}
    {"op": "variant", "firmware": "antminer", "name": "sleep_applies_on_reboot", "value": true}

(a build variant, on the miners of that firmware among ``hosts``, all by default:
:mod:`adapters.sim.variants`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adapters.fds import fd_limit, raise_fd_limit
from adapters.sim import variants
from adapters.sim.antminer import AntminerSim
from adapters.sim.auradine import AuradineSim
from adapters.sim.braiins import BraiinsSim
from adapters.sim.gpu import SimGpu, SimNvmlError
from adapters.sim.miner import SimMiner
from adapters.sim.server import FaultKind, MinerServer
from adapters.sim.vnish import VnishSim
from adapters.sim.whatsminer import WhatsminerSim
from adapters.sim.whatsminer3 import WhatsminerV3Sim
from models.errors import GridschedError

DEFAULT_BASE = "127.1.0.0"
CONTROL_PORT = 4029
#: Firmware a simulated miner can run: LuxOS, stock Bitmain (Antminer), Braiins OS+,
#: Whatsminer (MicroBT's own firmware and hardware), VNish (third-party Antminer firmware).
FIRMWARE: dict[str, type[MinerServer]] = {
    "luxos": SimMiner,
    "antminer": AntminerSim,
    "braiins": BraiinsSim,
    "whatsminer": WhatsminerSim,
    "vnish": VnishSim,
    "whatsminer3": WhatsminerV3Sim,  # firmware after 2024-11: API v3 on 4433
    "auradine": AuradineSim,  # Auradine Teraflux (FluxOS): GCMiner API and web API on 8080
}
#: Ports each firmware's simulator listens on (one socket each): the API on 4028, plus the
#: stock Antminer's web CGI (80), Braiins OS+'s gRPC (50051) and GraphQL (80), and VNish's
#: web API (80).
LISTEN_PORTS = {"luxos": 1, "antminer": 2, "braiins": 3, "whatsminer": 1, "vnish": 2}
LISTEN_PORTS["whatsminer3"] = 2  # API v3 on 4433, get_version on 4028
LISTEN_PORTS["auradine"] = 2  # GCMiner API on 4028, web API on 8080
#: Open files kept free beyond listeners and connections: the control server and its
#: clients, the event loop's own descriptors, the interpreter's files.
SPARE_FDS = 64
#: Connections served at once are bounded by the client's concurrency, not the fleet's size.
MAX_CONNECTIONS = 1024
GPU_CALLS = (
    "power_w",
    "limit_w",
    "set_limit_w",
    "limit_constraints_w",
    "energy_j",
    "utilisation_pct",
    "sm_clock_mhz",
    "set_locked_clocks",
    "reset_locked_clocks",
    "temperature_c",
    "reading",  # the six figures of one reading at once (adapters.nvml.READING)
)


def loopback_hosts(n: int, base: str = DEFAULT_BASE) -> list[str]:
    """``n`` loopback addresses after ``base``, skipping .0 and .255 in the last octet."""
    start = int(ipaddress.IPv4Address(base))
    if not ipaddress.IPv4Address(base).is_loopback:
        raise ValueError(f"base {base!r} is not a loopback address (127.0.0.0/8)")
    out: list[str] = []
    k = start
    while len(out) < n:
        k += 1
        a = ipaddress.IPv4Address(k)
        if not a.is_loopback:
            raise ValueError(f"{n} miners do not fit in 127.0.0.0/8 after {base}")
        if k & 0xFF not in (0, 255):
            out.append(str(a))
    return out


class FleetTooLarge(GridschedError):
    """More simulated miners than one process may open sockets for."""


class MinerSpec(NamedTuple):
    """Where and what one simulated miner is, before it is built (cheap to hold 30,000)."""

    host: str
    firmware: str
    model: str


def plan_miners(
    n_miners: int,
    base: str = DEFAULT_BASE,
    models: Sequence[str] = ("Antminer S19j Pro", "Antminer S21"),
    firmware: Sequence[str] = ("luxos",),
) -> list[MinerSpec]:
    """``models`` and ``firmware`` spread over ``n_miners`` loopback hosts in contiguous blocks."""
    unknown = sorted(set(firmware) - set(FIRMWARE))
    if unknown or not firmware:
        raise ValueError(f"firmware {unknown}: valid are {', '.join(FIRMWARE)}")
    out = []
    for i, h in enumerate(loopback_hosts(n_miners, base)):
        fw = firmware[i * len(firmware) // max(n_miners, 1)]
        model = models[i * len(models) // max(n_miners, 1)]  # contiguous blocks
        if fw in ("whatsminer", "whatsminer3") and not model.startswith("Whatsminer"):
            model = FIRMWARE[fw].model  # Whatsminer firmware runs on its own hardware
        out.append(MinerSpec(h, fw, model))
    return out


def fds_needed(firmware: Sequence[str]) -> int:
    """Open files a process serving miners of these firmware families needs: a listening
    socket per port, one accepted connection per port up to ``MAX_CONNECTIONS``, and spare."""
    listeners = sum(LISTEN_PORTS[f] for f in firmware)
    return listeners + min(listeners, MAX_CONNECTIONS) + SPARE_FDS


def too_large_message(n_miners: int, need: int, hard: int) -> str:
    return (
        f"{n_miners} miners in one process need {need} open files (a socket per listening "
        f"port, the connections to them, {SPARE_FDS} spare); this process may open {hard} "
        "(hard limit, `ulimit -Hn`): run fewer miners per process (`gridsched fleet simulate "
        "--per-process N` splits the fleet over worker processes) or raise the limit"
    )


async def ask_control(host: str, port: int, req: dict[str, Any], limit: int = 1 << 16) -> bytes:
    """One request to a simulator's control port: a JSON line out, the answer's line back
    (empty when the server closed without answering). Callers bound it in time."""
    reader, writer = await asyncio.open_connection(host, port, limit=limit)
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@dataclass
class SimFleet:
    miners: list[MinerServer]
    gpus: list[SimGpu] = field(default_factory=list)
    control_host: str = "127.0.0.1"
    control_port: int | None = CONTROL_PORT  # None: no control server

    @classmethod
    def build(
        cls,
        n_miners: int,
        n_gpus: int = 0,
        *,
        base: str = DEFAULT_BASE,
        models: Sequence[str] = ("Antminer S19j Pro", "Antminer S21"),
        gpu_model: str = "H100 SXM",
        sleep_s: float = 5.0,
        wake_s: float = 12.0,
        retune_s: float = 3.0,
        reboot_s: float = 30.0,
        control_port: int | None = CONTROL_PORT,
        firmware: Sequence[str] = ("luxos",),
    ) -> SimFleet:
        """``models`` and ``firmware`` are spread over the miners in contiguous blocks."""
        return cls.from_specs(
            plan_miners(n_miners, base, models, firmware),
            [SimGpu(i, model=gpu_model) for i in range(n_gpus)],
            sleep_s=sleep_s,
            wake_s=wake_s,
            retune_s=retune_s,
            reboot_s=reboot_s,
            control_port=control_port,
        )

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[MinerSpec],
        gpus: Sequence[SimGpu] = (),
        *,
        sleep_s: float = 5.0,
        wake_s: float = 12.0,
        retune_s: float = 3.0,
        reboot_s: float = 30.0,
        control_port: int | None = CONTROL_PORT,
    ) -> SimFleet:
        miners = [
            FIRMWARE[s.firmware](
                s.host,
                model=s.model,
                sleep_s=sleep_s,
                wake_s=wake_s,
                retune_s=retune_s,
                reboot_s=reboot_s,
            )
            for s in specs
        ]
        return cls(miners, list(gpus), control_port=control_port)

    def firmware_of(self, m: MinerServer) -> str:
        return next(k for k, v in FIRMWARE.items() if type(m) is v)

    async def start(self) -> None:
        """Bind every miner, then the control port; FleetTooLarge before binding anything
        when the open-files limit cannot hold them (asyncio skips a socket it cannot open
        without a word, so binding first would leave miners silently unserved)."""
        self._control: asyncio.AbstractServer | None = None
        #: the control connections open now (a GPU backend keeps some), closed by stop()
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        need = fds_needed([self.firmware_of(m) for m in self.miners])
        raise_fd_limit(max(need, 4 * len(self.miners) + 1024))
        soft, _hard = fd_limit()
        if need > soft:
            raise FleetTooLarge(too_large_message(len(self.miners), need, soft))
        await asyncio.gather(*(m.start() for m in self.miners))
        if self.control_port is not None:
            self._control = await asyncio.start_server(
                self._serve_control, self.control_host, self.control_port, reuse_address=True
            )
            if not self._control.sockets:  # out of descriptors after all (other files open)
                await self.stop()
                raise FleetTooLarge(too_large_message(len(self.miners), need, soft))
            self.control_port = self._control.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self.miners))
        if getattr(self, "_control", None) is not None:
            assert self._control is not None
            self._control.close()
            self._control = None
            # A kept client connection's handler would otherwise still be waiting on its
            # read when the loop closes, and say "Event loop is closed" as it is collected.
            handlers = list(self._clients.values())
            for writer in list(self._clients):
                writer.close()
            if handlers:
                await asyncio.wait(handlers, timeout=2.0)

    def by_host(self) -> dict[str, MinerServer]:
        return {m.host: m for m in self.miners}

    # -- control ----------------------------------------------------------------------------

    def _targets(self, hosts: Any) -> list[MinerServer]:
        if hosts == "all":
            return list(self.miners)
        table = self.by_host()
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ValueError('"hosts" must be a list of addresses or "all"')
        unknown = [h for h in hosts if h not in table]
        if unknown:
            raise ValueError(f"no simulated miner at {unknown[:3]}")
        return [table[h] for h in hosts]

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "list":
            miners = []
            for m in self.miners:
                w, ths = m.power_and_hashrate()
                miners.append(
                    {
                        "host": m.host,
                        "model": m.model,
                        "firmware": self.firmware_of(m),
                        "phase": m.state.phase,
                        "profile": m.state.profile,
                        "power_w": round(w, 1),
                        "hashrate_ths": round(ths, 2),
                        "faults": [f.kind.value for f in m.faults],
                        "commanded_at": m.commanded_at,
                        "slept_at": m.slept_at,
                        **variants.of(self.firmware_of(m), m),
                    }
                )
            return {"ok": True, "miners": miners, "gpus": len(self.gpus)}
        if op == "fault":
            kind = FaultKind(req["kind"])
            duration = float(req.get("duration_s", float("inf")))
            for m in self._targets(req.get("hosts")):
                m.inject(kind, duration, float(req.get("delay_s", 2.0)))
            return {"ok": True}
        if op == "clear":
            for m in self._targets(req.get("hosts", "all")):
                m.clear_faults()
            return {"ok": True}
        if op == "gpu":
            index = int(req["index"])
            call = str(req["call"])
            if not 0 <= index < len(self.gpus):
                raise ValueError(f"GPU index {index} outside 0..{len(self.gpus) - 1}")
            if call not in GPU_CALLS:
                raise ValueError(f"unknown GPU call {call!r}; valid: {', '.join(GPU_CALLS)}")
            gpu = self.gpus[index]
            if call == "set_limit_w":
                gpu.set_limit_w(float(req["args"][0]))
                return {"ok": True, "result": None}
            args = [float(a) for a in req.get("args", [])]  # a lock's range
            return {"ok": True, "result": getattr(gpu, call)(*args)}
        if op == "curtails":  # when each miner last received curtail sleep/wakeup
            return {
                "ok": True,
                "curtails": {m.host: m.last_curtail for m in self.miners if m.last_curtail},
            }
        if op == "gpu_fault":
            self.gpus[int(req["index"])].fault = req.get("fault")
            return {"ok": True}
        if op == "variant":
            firmware, name = str(req.get("firmware")), str(req.get("name"))
            value = variants.check(firmware, name, req.get("value"))
            targets = self._targets(req.get("hosts", "all"))
            chosen = [m for m in targets if self.firmware_of(m) == firmware]
            if not chosen and not req.get("_shard"):  # a worker's part may hold none
                raise ValueError(f"no simulated {firmware} miner among the hosts named")
            for m in chosen:
                setattr(m, name, value)
            return {"ok": True, "miners": len(chosen)}
        raise ValueError(f"unknown op {op!r}: list, fault, clear, curtails, gpu(_fault), variant")

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients[writer] = task
        try:
            while line := await reader.readline():
                try:
                    out = self.handle(json.loads(line))
                except SimNvmlError as exc:
                    out = {"ok": False, "code": exc.code, "error": str(exc)}
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    out = {"ok": False, "code": "BAD_REQUEST", "error": str(exc)}
                writer.write(json.dumps(out).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class SimFleetThread:
    """A SimFleet on its own event loop in a background thread (tests, the embedded demo)."""

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="simfleet")

    def __enter__(self) -> SimFleet:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self.loop).result(60)
        return self.fleet

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the fleet's loop (faults use loop timers)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
