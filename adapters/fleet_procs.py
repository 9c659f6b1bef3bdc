"""The worker processes of a sharded fleet (:mod:`adapters.fleet_shards`), from the
parent's side: how many for this host, and each one started, asked, watched and stopped.

A worker is ``python -m adapters.fleet_worker``, a fresh interpreter (not a fork: the
daemon runs an event loop, threads and open files a forked child would inherit), given one
end of a socket pair. Its start costs an interpreter and pyasic's import, about 1.5 s of
CPU (4 s on a loaded 2-core host), once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.base import DeviceAdapter
from adapters.fleet_wire import Sync, WorkerSpec, frame, read_frame
from adapters.neterrors import describe

log = logging.getLogger("gridsched.fleet")

#: "auto" starts at most this many workers, whatever the host's cores.
MAX_AUTO_WORKERS = 8
STOP_GRACE_S = 5.0
#: How often a worker is asked whether its event loop still turns.
PING_S = 5.0
#: A worker starting imports pyasic before it answers anything: it has this long at least.
START_GRACE_S = 120.0
ROOT = Path(__file__).resolve().parent.parent  # where ``adapters`` is imported from

Workers = int | Literal["auto"]


class ShardDown(Exception):
    """A worker is not running (it died, or is being started again)."""


class WorkerError(Exception):
    """A worker answered a request with an error (a bug: its fleet contains device faults)."""


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(setting: Workers, cores: int | None = None) -> int:
    """Worker processes for ``setting``: a number as given, ``"auto"`` one per core beyond
    the first (the daemon's own process keeps one), at most MAX_AUTO_WORKERS; 1, no
    sharding, on a 2-core host."""
    if setting == "auto":
        n = host_cores() if cores is None else cores
        return max(1, min(MAX_AUTO_WORKERS, n - 1))
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ValueError(f"fleet workers {setting!r}: valid are a number >= 1 and 'auto'")


@dataclass
class WorkerProc:
    """One worker process and the requests it has not answered yet."""

    index: int
    adapters: list[DeviceAdapter]  # not connected here: shipped to the worker at each start
    on_sync: Callable[[Sync], None]
    #: called once when the worker dies (not when stopped), with how it ended in words
    on_lost: Callable[[str], Awaitable[None]]
    #: a worker whose event loop does not answer a ping within this long is killed (and so
    #: started again): a hung worker would otherwise hold its miners' calls for ever
    answer_within_s: float = 30.0
    proc: asyncio.subprocess.Process | None = None
    alive: bool = False
    _writer: asyncio.StreamWriter | None = None
    _reader: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None
    _waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _next_id: int = 0
    _stopping: bool = False
    _hung_s: float = 0.0  # killed for not answering within this long
    _answered: bool = False  # something came from this start of the worker

    @property
    def ids(self) -> list[str]:
        return [a.device_id for a in self.adapters]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.alive else None

    async def start(self, groups: dict[str, str], settings: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters.fleet_worker", str(theirs.fileno()),
                str(self.index), pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours)
        level = logging.getLogger("gridsched.fleet").getEffectiveLevel()
        spec = WorkerSpec(self.index, self.adapters, groups, settings, level)
        self._writer.write(frame(spec))
        self.alive, self._answered = True, False
        self._reader = asyncio.create_task(self._read(reader))
        self._watch = asyncio.create_task(self._ping(self.proc))

    async def _ping(self, proc: asyncio.subprocess.Process) -> None:
        """Kill the worker if its event loop stops answering; its death is then noticed as
        any other (the socket closes), and it is started again."""
        while self.alive and self.proc is proc:
            await asyncio.sleep(min(PING_S, self.answer_within_s))
            limit_s = self.answer_within_s
            if not self._answered:
                limit_s = max(limit_s, START_GRACE_S)
            try:
                await asyncio.wait_for(self.call("ping", None), limit_s)
            except TimeoutError:
                if self.alive and self.proc is proc and proc.returncode is None:
                    log.error("fleet worker %d (pid %d): no answer within %g s; killing it",
                              self.index, proc.pid, limit_s)  # fmt: skip
                    self._hung_s = limit_s
                    proc.kill()
                return
            except (ShardDown, WorkerError):
                return

    async def call(self, op: str, arg: object) -> Any:
        """Ask the worker; raises ShardDown if it is not running or dies before answering."""
        if not self.alive or self._writer is None:
            raise ShardDown(f"fleet worker {self.index} is not running (being started again)")
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = fut
        self._writer.write(frame((self._next_id, op, arg)))
        return await fut

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = ""
        try:
            while (msg := await read_frame(reader)) is not None:
                req_id, ok, result, sync = msg
                self._answered = True
                self.on_sync(sync)
                fut = self._waiting.pop(req_id, None) if req_id else None
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(result)
                    else:
                        fut.set_exception(WorkerError(f"fleet worker {self.index}: {result}"))
        except Exception as exc:  # a frame that cannot be read: the worker is not trusted on
            log.exception("fleet worker %d: unreadable frame", self.index)
            why = f" after an unreadable frame ({describe(exc)})"
        if self._stopping:
            return
        self.alive = False
        what = f"fleet worker {self.index} {await self._exit()}{why}"
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ShardDown(what))
        self._waiting.clear()
        await self.on_lost(what)

    async def _exit(self) -> str:
        """How the worker ended, in words (waits a moment for its exit status)."""
        proc = self.proc
        if proc is None:
            return "did not start"
        try:
            code = await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"(pid {proc.pid}) stopped answering and was killed"
        if self._hung_s:
            quiet_s, self._hung_s = self._hung_s, 0.0
            return f"(pid {proc.pid}) stopped answering for {quiet_s:g} s and was killed"
        if code < 0:
            return f"(pid {proc.pid}) was killed by {signal.Signals(-code).name}"
        return f"(pid {proc.pid}) exited with code {code}"

    async def stop(self) -> None:
        """Ask the worker to close its devices and exit; kill it if it does not."""
        self._stopping = True
        if self.alive:
            with contextlib.suppress(ShardDown, WorkerError, TimeoutError):
                await asyncio.wait_for(self.call("close", None), STOP_GRACE_S)
        self.alive = False
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in (self._reader, self._watch):
            if task is not None:
                task.cancel()
