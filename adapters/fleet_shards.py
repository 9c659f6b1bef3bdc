"""A fleet whose miners are driven by worker processes, one stable shard each.

The controller is CPU-bound in the miner client's per-call cost (pyasic's parsing and
framing, docs/performance.md), so one event loop caps a sweep's pace at one core.
:class:`ShardedFleet` is a :class:`~adapters.fleet.Fleet` to its caller (the daemon, the
CLI): the same operations, outcomes, read-back verdicts, ``status`` and ``pending``, one
``on_outcome`` hook and so one decision log and audit store; but each ASIC adapter is
driven by one of ``workers`` processes (:mod:`adapters.fleet_worker`), chosen by a hash of
its id (the same shard across restarts), each with its own event loop, pyasic clients,
sessions and discovery, over the wire of :mod:`adapters.fleet_wire`. GPUs stay in this
process (NVML is per host and cheap; a drain runs with the daemon's serving feed; a
simulated GPU lives in this process's memory), as does any adapter not of this package.

A worker that dies is noticed at once (its socket closes): its devices are marked
unreachable, keeping their last reading (never 0 kW), its calls in flight end failed, its
commands awaiting read-back end unconfirmed (they can no longer be seen), and it is started
again with a backoff (1 s doubling to ``RESTART_MAX_S``) and reconnects its devices. One
that stops answering (a ping unanswered for ``worker_answer_s``) is killed, and so the same.
The workers time outcomes and read-back deadlines by the system clock (the daemon's
injected clock cannot cross a process boundary; a daemon in production uses it too).

``[daemon] fleet_workers`` picks it (:func:`make_fleet`): 1 (the default) is the one-process
fleet as before; ``"auto"`` is one worker per core beyond the first, at most
``MAX_AUTO_WORKERS``, and so 1 on a 2-core host.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import DeviceAdapter, Health, ModeRequest, Telemetry
from adapters.discovery import IdentityBook, MinerIdentity
from adapters.fleet import Fleet
from adapters.fleet_procs import ShardDown, WorkerError, WorkerProc, Workers, resolve_workers
from adapters.fleet_wire import ShardDevice, Sync
from adapters.outcomes import DeviceStatus, Outcome, OutcomeKind

log = logging.getLogger("gridsched.fleet")

RESTART_MAX_S = 30.0


def shardable(a: DeviceAdapter) -> bool:
    """Whether a worker process can drive ``a``: a miner adapter of this package."""
    return (
        a.kind == "asic"
        and type(a).__module__.startswith("adapters.")
        and not isinstance(a, ShardDevice)
    )


def shard_of(device_id: str, workers: int) -> int:
    """The worker that drives a device: the same one for its id, whatever the order."""
    return zlib.crc32(device_id.encode()) % workers


def make_fleet(
    adapters: Sequence[DeviceAdapter],
    groups: Mapping[str, str],
    workers: Workers = 1,
    **settings: Any,
) -> Fleet:
    """A :class:`Fleet` in this process, or a :class:`ShardedFleet` when ``workers``
    comes to more than one and there are miners to shard."""
    n = resolve_workers(workers)
    if n > 1 and any(shardable(a) for a in adapters):
        return ShardedFleet(adapters, groups, workers=n, **settings)
    return Fleet(adapters, groups, **settings)


@dataclass
class ShardedFleet(Fleet):
    """A fleet whose miners are driven by ``workers`` processes (see the module's text)."""

    workers: int = 2
    #: a worker that does not answer a ping within this long is killed and started again
    worker_answer_s: float = 30.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers {self.workers}: at least 1")
        self._procs = [
            WorkerProc(
                k,
                [],
                functools.partial(self._take, k),
                functools.partial(self._lost, k),
                self.worker_answer_s,
            )
            for k in range(self.workers)
        ]
        self._originals: dict[str, DeviceAdapter] = {}
        mine: list[DeviceAdapter] = []
        for a in self.adapters:
            if not shardable(a):
                mine.append(a)
                continue
            k = shard_of(a.device_id, self.workers)
            self._procs[k].adapters.append(a)
            self._originals[a.device_id] = a
            mine.append(ShardDevice(a.device_id, a.address, shard=k))
        self.adapters = mine
        super().__post_init__()
        self._proc_of = {a.device_id: w for w in self._procs for a in w.adapters}
        self._local = [a for a in mine if not isinstance(a, ShardDevice)]
        self._local_ids = {a.device_id for a in self._local}
        books = (getattr(a, "identities", None) for a in self._originals.values())
        self._books = {id(b): b for b in books if isinstance(b, IdentityBook)}
        self._busy = [w for w in self._procs if w.adapters]  # a worker with no miners: none
        self._started = self._closing = False
        self._restarting: dict[int, asyncio.Task[None]] = {}
        self._progress: Callable[[int, int], None] | None = None
        self._connects_done = 0
        #: workers started again after dying, since this fleet started
        self.restarts = 0

    def _own_devices(self) -> list[DeviceAdapter]:
        return list(self._local)

    def worker_pids(self) -> list[int | None]:
        """Each worker's process id (None where none runs)."""
        return [w.pid for w in self._procs]

    def worker_states(self) -> list[str]:
        """Each worker's state: "running", "down" (dead, or not started yet or again) or
        "idle" (no miners to drive, so never started)."""
        return ["idle" if not w.adapters else "running" if w.alive else "down" for w in self._procs]

    # -- workers ----------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        def share(n: int) -> int:  # the fleet's bounds, split between the workers
            return max(1, -(-n // self.workers))

        return {
            "concurrency": share(self.concurrency),
            "read_concurrency": share(self.read_concurrency or self.concurrency),
            "connect_concurrency": share(self.connect_concurrency),
            "retry": self.retry,
            "unreachable_after": self.unreachable_after,
            "probe_max_s": self.probe_max_s,
            "op_timeout_s": self.op_timeout_s,
            "read_yield_max_s": self.read_yield_max_s,
            "gc_hold_max_s": self.gc_hold_max_s,
            "seed": self.seed,
        }

    async def _start(self, w: WorkerProc) -> None:
        await w.start(dict(self.groups), self._settings())

    def _take(self, k: int, s: Sync) -> None:
        """Worker ``k``'s news: the parent's view of its devices becomes the worker's."""
        heard = self.on_reading
        for st in s.statuses:
            mine = self.status[st.device_id]
            old, was = mine.telemetry, mine.health
            if st.telemetry is None:  # a worker started again has not read it yet
                st.telemetry = old
            mine.__dict__.update(st.__dict__)
            self._tell_health(mine, was)
            t = st.telemetry
            if heard is not None and t is not None and (old is None or t.at > old.at):
                heard(t)  # a worker's reading, its sweep's or its read-back's, as it came
        rb = self._readback
        rb.pending.update(s.pending)
        for i in s.settled:
            rb.pending.pop(i, None)
        rb.unconfirmed.update(s.unconfirmed)
        for i in s.resent:
            rb.unconfirmed.pop(i, None)
        for i, (info, deadline_s) in s.infos.items():
            dev = self.by_id[i]
            dev.info = self._originals[i].info = info
            if isinstance(dev, ShardDevice):
                dev.deadline_s = deadline_s
        for address, doc in s.identities.items():
            for book in self._books.values():
                if doc is None:
                    book.forget(address)
                else:
                    book.put(MinerIdentity.from_doc(doc))
        if s.upkeep is not None:  # counted here with this process's own (the GPUs')
            made, failed, self.upkeep.elsewhere[k] = s.upkeep
            self.upkeep.done += made
            self.upkeep.failed += failed
        if s.connected:
            self._connects_done += s.connected
            if self._progress is not None:
                self._progress(self._connects_done, len(self.adapters))
        for out in s.events:
            self._emit(out)

    def _tell_health(self, st: DeviceStatus, was: Health) -> None:
        """``on_health`` for a device whose health a worker's news or its death changed, as
        a fleet in one process tells it."""
        if self.on_health is not None and st.health is not was:
            self.on_health(st)

    async def _lost(self, k: int, what: str) -> None:
        """A worker died: its devices unreachable (their last reading kept), its commands
        awaiting read-back unconfirmed (they can no longer be seen); then started again.
        Its calls in flight have ended failed (:class:`WorkerProc`)."""
        w = self._procs[k]
        log.error("%s: its %d devices are unreachable until it is started again",
                  what, len(w.adapters))  # fmt: skip
        now, rb = self.clock(), self._readback
        self.upkeep.elsewhere.pop(k, None)  # its queue died with it
        for i in w.ids:
            st = self.status[i]
            was = st.health
            st.health, st.connected, st.last_error, st.seen = (
                Health.UNREACHABLE, False, f"{i}: {what}", True
            )  # fmt: skip
            self._tell_health(st, was)
            p = rb.pending.pop(i, None)
            if p is not None:
                rb.unconfirmed[i] = p.outcome.request
                self._emit(
                    Outcome(
                        i, p.outcome.request, False, 0, now - p.sent_at, p.outcome.applied,
                        error=f"{i}: {what}: the read-back cannot be made", at=now,
                        kind=OutcomeKind.UNCONFIRMED,
                    )
                )  # fmt: skip
        task = self._restarting.get(k)
        if not self._closing and (task is None or task.done()):
            self._restarting[k] = asyncio.create_task(self._restart(w))

    async def _restart(self, w: WorkerProc) -> None:
        delay_s = 1.0
        while not self._closing:
            await asyncio.sleep(delay_s)
            delay_s = min(RESTART_MAX_S, delay_s * 2)
            try:
                await self._start(w)
                errors = await w.call("connect", None)
            except (ShardDown, WorkerError, OSError) as exc:
                log.warning("fleet worker %d did not start again: %s", w.index, exc)
                continue
            self.restarts += 1
            bad = sum(1 for e in errors.values() if e)
            log.warning("fleet worker %d started again: %d of %d devices connected",
                        w.index, len(errors) - bad, len(errors))  # fmt: skip
            return

    # -- operations -------------------------------------------------------------------------

    def _split(self, ids: Iterable[str]) -> tuple[list[str], dict[int, list[str]]]:
        local: list[str] = []
        parts: dict[int, list[str]] = {}
        for i in ids:
            w = self._proc_of.get(i)
            if w is None:
                local.append(i)  # an unknown id is the local fleet's to answer
            else:
                parts.setdefault(w.index, []).append(i)
        return local, parts

    async def connect_all(
        self, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, str | None]:
        if not self._started:
            self._started = True
            await asyncio.gather(*(self._start(w) for w in self._busy))
        self._progress, self._connects_done = progress, 0

        def local(_done: int, _total: int) -> None:
            self._connects_done += 1
            if progress is not None:
                progress(self._connects_done, len(self.adapters))

        async def remote(w: WorkerProc) -> dict[str, str | None]:
            try:
                out: dict[str, str | None] = await w.call("connect", None)
                return out
            except (ShardDown, WorkerError) as exc:
                return dict.fromkeys(w.ids, str(exc))

        try:
            done = await asyncio.gather(
                super().connect_all(local), *(remote(w) for w in self._busy)
            )
        finally:
            self._progress = None
        return {i: e for part in done for i, e in part.items()}

    async def read_all(self, ids: Iterable[str] | None = None) -> dict[str, Telemetry]:
        if ids is None:
            local = [a.device_id for a in self._local]
            parts: dict[int, list[str] | None] = {w.index: None for w in self._busy}
        else:
            local, some = self._split(ids)
            parts = dict(some)

        async def remote(k: int, part: list[str] | None) -> dict[str, Telemetry]:
            try:
                out: dict[str, Telemetry] = await self._procs[k].call("read", part)
                return out
            except (ShardDown, WorkerError):
                return {}  # marked unreachable when it died: no reading, last one kept

        jobs = [remote(k, part) for k, part in parts.items()]
        if local:
            jobs.append(super().read_all(local))
        readings: dict[str, Telemetry] = {}
        for part in await asyncio.gather(*jobs):
            readings.update(part)
        if not local:
            self.check_pending()
        return readings

    def check_pending(self) -> None:
        """Give up on this process's pending commands past their deadline; the workers
        judge their own."""
        now = self.clock()
        for device_id, p in list(self._readback.pending.items()):
            if device_id in self._local_ids and now >= p.deadline:
                self._readback.settle(device_id, self.status[device_id].telemetry, now)

    async def _remote(self, op: str, k: int, part: dict[str, ModeRequest]) -> list[Outcome]:
        try:
            outs: list[Outcome] = await self._procs[k].call(op, part)
        except (ShardDown, WorkerError) as exc:
            if op == "stage":
                return []  # best-effort, and skipped for devices not connected, as in one process
            now = self.clock()
            failed = [
                Outcome(i, r, False, 0, 0.0, error=f"{i}: {exc}", at=now, kind=OutcomeKind.FAILED)
                for i, r in part.items()
            ]
            if op == "apply":  # every command ends in one outcome handed to on_outcome
                for o in failed:
                    self._emit(o)
            return failed
        for o in outs:
            if o.ok and op == "apply":  # taken again: no longer unconfirmed (after a restart)
                self._readback.unconfirmed.pop(o.device_id, None)
        return outs

    async def _both(self, op: str, requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        local_ids, parts = self._split(requests)
        local = {i: requests[i] for i in local_ids}
        jobs = [self._remote(op, k, {i: requests[i] for i in ids}) for k, ids in parts.items()]
        if local:
            jobs.append(super().apply(local) if op == "apply" else super().stage(local))
        done = await asyncio.gather(*jobs)
        return [o for part in done for o in part]

    async def apply(self, requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        # readings of this process's devices wait, as in one process
        with self._controlling():
            by_id = {o.device_id: o for o in await self._both("apply", requests)}
        return [by_id[i] for i in requests]

    async def stage(self, requests: Mapping[str, ModeRequest]) -> list[Outcome]:
        return await self._both("stage", requests)

    async def close(self) -> None:
        self._closing = True
        await super().close()
        for task in self._restarting.values():
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self._procs))
