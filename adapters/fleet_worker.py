"""A fleet worker process: one shard of a sharded fleet (:mod:`adapters.fleet_shards`).

Started by the parent as ``python -m adapters.fleet_worker FD INDEX`` with one end of a
socket pair as file descriptor FD. It reads a :class:`~adapters.fleet_wire.WorkerSpec`
(its devices' adapters, not yet connected), runs them in a plain
:class:`~adapters.fleet.Fleet` on its own event loop, with its own pyasic clients,
sessions and discovery, and serves the parent's requests concurrently (a curtail while a
sweep is out, as in one process). Every answer carries what changed in its devices
(:class:`~adapters.fleet_wire.Sync`); read-back verdicts, read-back readings (those that
do not confirm too), read-backs that failed (the device's health and error) and connect
progress are sent within ``FLUSH_S`` when no answer carries them sooner.

It ignores SIGINT and SIGTERM: Ctrl-C reaches the whole process group, and a service
manager may signal every process of the service; the daemon needs its workers to put the
miners in its shutdown posture, then closes them. It exits when the daemon closes the socket
or dies (end of file), or on SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterable
from typing import Any

from adapters.aio import run_async
from adapters.base import DeviceInfo, ModeRequest, Telemetry
from adapters.faults import in_words, traceback_once
from adapters.fleet import Fleet
from adapters.fleet_wire import Sync, WorkerSpec, frame, read_frame
from adapters.gc_hold import freeze_heap
from adapters.library_logs import keep_daemon_logging
from adapters.outcomes import DeviceStatus, Outcome, Pending

log = logging.getLogger("gridsched.fleet.worker")

#: News (verdicts, read-back readings and failures, connect progress) that no answer
#: carries goes out within this long, batched: one frame per device would cost more than
#: the calls themselves.
FLUSH_S = 0.05


class Worker:
    """Serves one shard's fleet to the parent and keeps the parent's view of it current."""

    def __init__(self, fleet: Fleet, writer: asyncio.StreamWriter) -> None:
        self.fleet = fleet
        self.writer = writer
        fleet.on_outcome = self._outcome
        fleet.on_reading = self._reading
        fleet.on_health = self._health
        self._dirty: set[str] = set()  # devices whose status the parent has not seen
        self._events: list[Outcome] = []
        self._connected = 0
        self._sent_pending: dict[str, Pending] = {}
        self._sent_unconfirmed: dict[str, ModeRequest] = {}
        self._sent_info: dict[str, tuple[DeviceInfo | None, float]] = {}
        self._sent_upkeep = (0, 0, 0)  # upkeeps made, failed, queued, as last sent
        self._books = {
            id(book): book
            for a in fleet.adapters
            if (book := getattr(a, "identities", None)) is not None
        }
        self._flush: asyncio.TimerHandle | None = None
        self._frozen = False

    # -- news -------------------------------------------------------------------------------

    def _outcome(self, out: Outcome) -> None:
        self._events.append(out)
        self._dirty.add(out.device_id)
        self._soon()

    def _reading(self, t: Telemetry) -> None:
        """A reading of a device awaiting its read-back: news even when it does not confirm
        the command (no verdict, so no outcome, carries it), or the parent's site power
        and status would wait for the worker's next answer. Other readings are a sweep's:
        its answer carries them, in one frame."""
        self._news_while_pending(t.device_id)

    def _health(self, st: DeviceStatus) -> None:
        """A change of health of a device awaiting its read-back: news too, for a read that
        failed (a timeout, a refused connection) gives no reading to carry it, and the
        parent's status would show the device as it was until the worker's next answer or
        the verdict at the command's deadline."""
        self._news_while_pending(st.device_id)

    def _news_while_pending(self, device_id: str) -> None:
        if device_id in self.fleet.pending:
            self._dirty.add(device_id)
            self._soon()

    def _progress(self, _done: int, _total: int) -> None:
        self._connected += 1
        self._soon()

    def _soon(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._send_news)

    def _send_news(self) -> None:
        self._flush = None
        self.send(0, True, None)

    def _sync(self) -> Sync:
        f = self.fleet
        s = Sync(events=self._events, connected=self._connected)
        self._events, self._connected = [], 0
        s.statuses = [f.status[i] for i in self._dirty]
        for i in self._dirty:
            a = f.by_id[i]
            now = (a.info, a.confirm_deadline_s())
            was = self._sent_info.get(i)
            if was is None or was[0] is not now[0] or was[1] != now[1]:
                s.infos[i] = self._sent_info[i] = now
        self._dirty = set()
        pending, sent = f.pending, self._sent_pending
        s.pending = {i: p for i, p in pending.items() if sent.get(i) is not p}
        s.settled = [i for i in sent if i not in pending]
        self._sent_pending = dict(pending)
        unconfirmed, was_u = f.unconfirmed_requests(), self._sent_unconfirmed
        s.unconfirmed = {i: r for i, r in unconfirmed.items() if was_u.get(i) is not r}
        s.resent = [i for i in was_u if i not in unconfirmed]
        self._sent_unconfirmed = unconfirmed
        for book in self._books.values():
            s.identities.update(book.changes())
        u, last = f.upkeep, self._sent_upkeep
        counts = (u.done, u.failed, u.queued)
        if counts != last:
            s.upkeep = (counts[0] - last[0], counts[1] - last[1], counts[2])
            self._sent_upkeep = counts
        return s

    def send(self, req_id: int, ok: bool, result: object) -> None:
        if self._flush is not None and req_id:
            self._flush.cancel()  # this answer carries the news
            self._flush = None
        sync = self._sync()
        if req_id or sync:
            self.writer.write(frame((req_id, ok, result, sync)))

    # -- requests ---------------------------------------------------------------------------

    def _touch(self, ids: Iterable[str] | None) -> None:
        self._dirty.update(self.fleet.by_id if ids is None else ids)

    async def handle(self, req_id: int, op: str, arg: Any) -> None:
        try:
            result = await self._run(op, arg)
        except Exception as exc:  # the parent hears it; the worker goes on
            # a fault: one line; a bug keeps its name, its traceback once per place
            why = in_words(exc)
            log.error("fleet worker: %s failed: %s", op, why, exc_info=traceback_once(exc))
            self.send(req_id, False, f"{op}: {why}")
        else:
            self.send(req_id, True, result)
        with contextlib.suppress(ConnectionError):  # the parent is gone: reading ends too
            await self.writer.drain()

    async def _run(self, op: str, arg: Any) -> object:
        """One request; the devices it touched go out with its answer, as they are then
        (news sent while it ran may have caught them half way)."""
        f = self.fleet
        if op == "connect":
            errors = await f.connect_all(self._progress)
            self._touch(None)
            if not self._frozen:  # set up: what lives on leaves the collector's full passes
                freeze_heap()
                self._frozen = True
            return errors
        if op == "read":
            readings = await f.read_all(arg)
            self._touch(arg)
            return readings
        if op in ("apply", "stage"):
            outcomes = await (f.apply(arg) if op == "apply" else f.stage(arg))
            self._touch(arg)
            return outcomes
        if op == "ping":  # answered when the event loop turns: the parent's watchdog
            return None
        if op == "close":
            await f.close()
            return None
        raise ValueError(f"unknown op {op!r}")


async def serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    spec = await read_frame(reader)
    if not isinstance(spec, WorkerSpec):
        return 2
    # as the daemon logs them, whatever pyasic's import does to the root logger
    keep_daemon_logging(spec.log_level)
    _preload()
    fleet = Fleet(spec.adapters, spec.groups, **spec.settings)
    worker = Worker(fleet, writer)
    tasks: set[asyncio.Task[None]] = set()
    closed = False
    while (msg := await read_frame(reader)) is not None:
        req_id, op, arg = msg
        task = asyncio.create_task(worker.handle(req_id, op, arg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if op == "close":
            await task
            closed = True
            break
    for task in list(tasks):  # the parent is gone: nobody waits for these
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if not closed:
        await fleet.close()
    writer.close()
    return 0


def _preload() -> None:
    """Import pyasic's miner classes now (seconds of CPU on a loaded host): the first
    connect would, within each device's ``op_timeout_s``."""
    with contextlib.suppress(ImportError):
        import pyasic.miners.backends
        import pyasic.miners.data  # noqa: F401


def main(argv: list[str]) -> int:
    fd, index = int(argv[1]), int(argv[2])
    for sig in (signal.SIGINT, signal.SIGTERM):  # the daemon stops us, after its posture
        signal.signal(sig, signal.SIG_IGN)
    sys.stdout = sys.stderr  # nothing a library prints can reach the parent's socket
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,  # libraries; gridsched's loggers log at the daemon's level
        format=f"fleet worker {index}: %(levelname)s %(name)s: %(message)s",
    )
    return run_async(serve(fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
