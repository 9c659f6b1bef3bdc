"""A simulated fleet too large for one process, split over worker processes.

One process may hold only so many open files (``ulimit -Hn``; 20,000 on the development
machine, and raising it needs CAP_SYS_RESOURCE), and every simulated miner holds a listening
socket per port plus the connections to it. :class:`ShardedFleet` splits the miners into
contiguous blocks of loopback addresses, forks one worker process per block (each a plain
:class:`~adapters.sim.fleet.SimFleet` with its own control port on 127.0.0.1), and keeps the
GPUs and the fleet's one control port in the parent, which routes each request to the workers
that hold the addresses it names. The workers are forked, not started afresh, so the simulator
code the parent imported is shared with them copy-on-write instead of loaded once per worker.

The parent supervises: a worker that dies stops the fleet (:meth:`ShardedFleet.wait_failure`);
a worker whose parent dies stops itself within a second; SIGINT reaches only the parent (the
workers ignore it and are stopped with SIGTERM, so one Ctrl-C makes one clean shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from adapters.aio import run_async
from adapters.fleet import freeze_heap
from adapters.sim.fleet import (
    CONTROL_PORT,
    LISTEN_PORTS,
    MAX_CONNECTIONS,
    SPARE_FDS,
    FleetTooLarge,
    MinerSpec,
    SimFleet,
    ask_control,
)
from adapters.sim.gpu import SimGpu, SimNvmlError
from models.errors import GridschedError

DEFAULT_PER_PROCESS = 4000
START_TIMEOUT_S = 600.0  # 4,000 miners bind in seconds; a loaded 2-core host is slower
STOP_GRACE_S = 10.0
READ_LIMIT = 64 << 20  # a worker's "list" answer is one JSON line of ~200 bytes per miner


class ShardFailed(GridschedError):
    """A worker could not start, or died."""


def max_per_process(firmware: Sequence[str], hard_limit: int) -> int:
    """The most miners of these firmware families one process can serve under ``hard_limit``
    open files, by the same count :func:`~adapters.sim.fleet.fds_needed` makes (the family
    with the most ports taken for all, so any block of the mix fits)."""
    ports = max(LISTEN_PORTS[f] for f in firmware)
    few = (hard_limit - SPARE_FDS) // (2 * ports)  # listeners + one connection each
    many = (hard_limit - SPARE_FDS - MAX_CONNECTIONS) // ports  # connections capped
    return max(0, many if many * ports >= MAX_CONNECTIONS else few)


def split(n: int, per_process: int) -> list[range]:
    """``n`` miners in contiguous blocks of at most ``per_process``, sizes within one."""
    shards = max(1, -(-n // max(1, per_process)))
    return [range(n * k // shards, n * (k + 1) // shards) for k in range(shards)]


@dataclass
class Shard:
    index: int
    specs: list[MinerSpec]
    process: BaseProcess | None = None
    conn: Connection | None = None  # the parent's end: the worker's "ready" or "error"
    control_port: int | None = None

    @property
    def span(self) -> str:
        return f"{self.specs[0].host} .. {self.specs[-1].host}" if self.specs else "-"

    def describe_exit(self) -> str:
        assert self.process is not None
        self.process.join(1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return f"simulator worker {self.index} (pid {self.process.pid}, {self.span}) {how}"


@dataclass
class ShardedFleet:
    specs: list[MinerSpec]
    gpus: list[SimGpu]
    per_process: int
    timings: dict[str, float] = field(default_factory=dict)  # sleep_s, wake_s, ...
    control_host: str = "127.0.0.1"
    control_port: int | None = CONTROL_PORT

    def __post_init__(self) -> None:
        self.shards = [
            Shard(k, self.specs[r.start : r.stop])
            for k, r in enumerate(split(len(self.specs), self.per_process))
        ]
        self.shard_of = {s.host: sh.index for sh in self.shards for s in sh.specs}
        self.local = SimFleet([], self.gpus, control_port=None)  # GPU calls stay here
        self._control: asyncio.AbstractServer | None = None

    # -- life cycle -------------------------------------------------------------------------

    def spawn(self) -> None:
        """Fork the workers. Call before this process runs an event loop: a child forked
        from inside a running loop inherits it (Python 3.11 does not reset it)."""
        ctx = multiprocessing.get_context("fork")
        # Everything imported so far out of the collector's reach: a worker's collections
        # would otherwise write to every object's header and copy the parent's heap.
        freeze_heap()
        for sh in self.shards:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_worker_main,
                args=(sh.specs, self.timings, send),
                name=f"simfleet-{sh.index}",
            )
            p.start()
            send.close()  # only the worker holds it now: its death reads as end of file
            sh.process, sh.conn = p, recv

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until every worker serves its block, then open the control port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for sh in self.shards:
            assert sh.conn is not None
            ready = asyncio.Event()
            loop.add_reader(sh.conn.fileno(), ready.set)
            try:
                await asyncio.wait_for(ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ShardFailed(
                    f"simulator worker {sh.index} ({sh.span}) not serving after {timeout_s:g} s"
                ) from None
            finally:
                loop.remove_reader(sh.conn.fileno())
            try:
                kind, value = sh.conn.recv()
            except EOFError:
                raise ShardFailed(sh.describe_exit() + " while starting") from None
            if kind != "ready":
                raise ShardFailed(f"simulator worker {sh.index} ({sh.span}): {value}")
            sh.control_port = int(value)
        if self.control_port is not None:
            self._control = await asyncio.start_server(
                self._serve_control, self.control_host, self.control_port, reuse_address=True
            )
            if not self._control.sockets:
                raise FleetTooLarge("no file descriptor left for the control port")
            self.control_port = self._control.sockets[0].getsockname()[1]

    async def wait_failure(self) -> str:
        """Return (a message) when the first worker exits; the fleet is then incomplete."""
        loop = asyncio.get_running_loop()
        died: asyncio.Future[Shard] = loop.create_future()

        def on_exit(sh: Shard) -> None:
            if not died.done():
                died.set_result(sh)

        sentinels = []
        for sh in self.shards:
            assert sh.process is not None
            sentinels.append(sh.process.sentinel)
            loop.add_reader(sh.process.sentinel, on_exit, sh)
        try:
            return (await died).describe_exit()
        finally:
            for fd in sentinels:
                loop.remove_reader(fd)

    async def stop(self) -> None:
        """SIGTERM every worker still running, SIGKILL any that outlives the grace period."""
        if self._control is not None:
            self._control.close()
            self._control = None
        live = [sh.process for sh in self.shards if sh.process is not None]
        for p in live:
            if p.is_alive():
                p.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        for p in live:
            await asyncio.to_thread(p.join, max(0.1, deadline - loop.time()))
            if p.is_alive():
                p.kill()
                await asyncio.to_thread(p.join, 5.0)
        for sh in self.shards:
            if sh.conn is not None:
                sh.conn.close()
                sh.conn = None

    # -- control: one port for the whole fleet ----------------------------------------------

    async def _ask(self, sh: Shard, req: dict[str, Any]) -> dict[str, Any]:
        if sh.control_port is None:
            raise ConnectionError(f"simulator worker {sh.index} ({sh.span}) has no control port")
        line = await ask_control("127.0.0.1", sh.control_port, req, limit=READ_LIMIT)
        if not line:
            raise ConnectionError(f"simulator worker {sh.index} ({sh.span}) did not answer")
        out: dict[str, Any] = json.loads(line)
        return out

    def _route(self, hosts: Any) -> dict[int, Any]:
        """Which workers a request's ``hosts`` reach, and the part each one holds."""
        if hosts == "all":
            return {sh.index: "all" for sh in self.shards}
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ValueError('"hosts" must be a list of addresses or "all"')
        unknown = [h for h in hosts if h not in self.shard_of]
        if unknown:
            raise ValueError(f"no simulated miner at {unknown[:3]}")
        parts: dict[int, list[str]] = {}
        for h in hosts:
            parts.setdefault(self.shard_of[h], []).append(h)
        return dict(parts)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op in ("gpu", "gpu_fault"):
            return self.local.handle(req)
        if op in ("list", "curtails"):
            answers = await asyncio.gather(*(self._ask(sh, req) for sh in self.shards))
            bad = next((a for a in answers if not a.get("ok")), None)
            if bad is not None:
                return bad
            if op == "list":
                miners = [m for a in answers for m in a["miners"]]
                return {"ok": True, "miners": miners, "gpus": len(self.gpus)}
            return {
                "ok": True,
                "curtails": {k: v for a in answers for k, v in a["curtails"].items()},
            }
        if op in ("fault", "clear", "variant"):
            parts = self._route(req.get("hosts", "all"))
            shard = {"_shard": True} if op == "variant" else {}
            answers = await asyncio.gather(
                *(self._ask(self.shards[k], {**req, **shard, "hosts": h}) for k, h in parts.items())
            )
            bad = next((a for a in answers if not a.get("ok")), None)
            if bad is not None or op != "variant":
                return bad or {"ok": True}
            n = sum(int(a.get("miners", 0)) for a in answers)
            if not n:
                raise ValueError(f"no simulated {req.get('firmware')} miner among the hosts named")
            return {"ok": True, "miners": n}
        raise ValueError(f"unknown op {op!r}: list, fault, clear, curtails, gpu(_fault), variant")

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                try:
                    out = await self.handle(json.loads(line))
                except SimNvmlError as exc:
                    out = {"ok": False, "code": exc.code, "error": str(exc)}
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    out = {"ok": False, "code": "BAD_REQUEST", "error": str(exc)}
                except OSError as exc:  # a worker gone or not answering
                    out = {"ok": False, "code": "WORKER", "error": str(exc)}
                writer.write(json.dumps(out).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# -- the worker process ---------------------------------------------------------------------


def _worker_main(specs: list[MinerSpec], timings: dict[str, float], conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us on Ctrl-C, once
    code = run_async(_serve_block(specs, timings, conn))
    conn.close()
    sys.exit(code)


async def _serve_block(specs: list[MinerSpec], timings: dict[str, float], conn: Connection) -> int:
    fleet = SimFleet.from_specs(
        specs,
        (),
        sleep_s=timings.get("sleep_s", 5.0),
        wake_s=timings.get("wake_s", 12.0),
        retune_s=timings.get("retune_s", 3.0),
        reboot_s=timings.get("reboot_s", 30.0),
        control_port=0,
    )
    try:
        await fleet.start()
    except (GridschedError, OSError) as exc:
        conn.send(("error", str(exc)))
        return 2
    freeze_heap()
    conn.send(("ready", fleet.control_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:  # the parent was killed outright: nobody else stops us
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        stop.set()

    watch = asyncio.create_task(orphaned())
    await stop.wait()
    watch.cancel()
    await fleet.stop()
    return 0
