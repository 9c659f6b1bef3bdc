"""Group commit: one writer thread commits whatever is queued as one transaction.

Each write is a function of the connection, run in a savepoint of the batch's transaction,
so one that raises is rolled back alone and its caller hears why; a batch SQLite rolls
back whole (a full disk) fails every caller in it. A second thread, one step behind the
writer, checkpoints the head that each commit left and only then answers the callers
(:class:`scheduler.audit.store.Store` supplies the connection, the head and the
checkpoint): many concurrent writes share one fsync of the database and one of the head
file.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from scheduler.audit.chain import StoreError

_Write = Callable[[sqlite3.Connection], Any]
_Results = list[tuple[Any, Any, BaseException | None]]  # (future, value, error) per write


class GroupCommit:
    """The writer and checkpoint threads of one database.

    ``connect``: a new connection for the writer thread; ``head``: the chain's head
    (sequence number and hash) after a commit; ``reload``: re-reads the head from a
    connection after a rollback; ``checkpoint``: records a committed head outside the
    database, before the callers hear that their writes landed.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        head: Callable[[], tuple[int, str]],
        reload: Callable[[sqlite3.Connection], None],
        checkpoint: Callable[[int, str], None],
    ) -> None:
        self._connect = connect
        self._head = head
        self._reload_head = reload
        self._checkpoint = checkpoint
        self._queue: queue.Queue[tuple[_Write, Any] | None] = queue.Queue()
        # (head committed or None, results): from the writer to the checkpoint thread
        self._settling: queue.Queue[tuple[tuple[int, str] | None, _Results] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._settler: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # why the writer thread stopped, if it failed: later writes fail at once with it
        self._dead: BaseException | None = None
        self._dead_lock = threading.Lock()  # a write is either queued before it or refused

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start both threads; callers are answered on ``loop``."""
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
            self._thread.start()
            self._settler = threading.Thread(
                target=self._settle_loop, name="store-checkpoints", daemon=True
            )
            self._settler.start()

    async def write(self, fn: _Write) -> Any:
        """Run ``fn(connection)`` inside the next group commit; returns once it is on disk
        and checkpointed (call :meth:`start` first)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._dead_lock:
            if self._dead is not None:
                err = self._dead
                raise StoreError(f"the store's writer stopped: {type(err).__name__}: {err}")
            self._queue.put((fn, fut))
        return await fut

    def close(self) -> None:
        """Commit what is queued, answer it, and stop both threads."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None
        if self._settler is not None:  # after the writer: it answers the writer's last batch
            self._settling.put(None)
            self._settler.join(10)
            self._settler = None

    def _writer(self) -> None:
        """Without this, a writer that fails outside a batch's transaction (its connection
        refused, a rollback that fails) would die silently and leave every caller waiting
        forever: they hear why instead, and so does every later write."""
        held: list[tuple[_Write, Any]] = []  # the batch being written, not yet handed on
        try:
            self._write_batches(held)
        except BaseException as exc:
            with self._dead_lock:
                self._dead = exc
                failed: _Results = [(fut, None, exc) for _, fut in held]
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        failed.append((item[1], None, exc))
            self._settling.put((None, failed))

    def _write_batches(self, held: list[tuple[_Write, Any]]) -> None:
        con = self._connect()
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < 1000:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            held[:] = batch
            results: _Results = []
            try:
                con.execute("BEGIN IMMEDIATE")
                for fn, fut in batch:
                    con.execute("SAVEPOINT one")
                    try:
                        results.append((fut, fn(con), None))
                        con.execute("RELEASE one")
                    except Exception as exc:  # one bad write must not sink the batch
                        if not con.in_transaction:
                            # SQLite rolled the whole transaction back (SQLITE_FULL does):
                            # every write of the batch is lost; each caller hears why
                            raise
                        con.execute("ROLLBACK TO one")
                        con.execute("RELEASE one")
                        self._reload_head(con)
                        results.append((fut, None, exc))
                con.execute("COMMIT")
            except Exception as batch_exc:
                con.rollback()
                results = [(fut, None, batch_exc) for _, fut in batch]
                self._reload_head(con)
            else:
                self._settling.put((self._head(), results))
                held.clear()
                continue
            self._settling.put((None, results))
            held.clear()
        con.close()

    def _settle_loop(self) -> None:
        """Checkpoints and answers, one step behind the writer: the writer commits the next
        batch while this fsyncs the head file for the last one, and batches that committed
        meanwhile share one checkpoint. A caller hears that its write landed only once a
        checkpoint covers it."""
        while True:
            item = self._settling.get()
            if item is None:
                break
            items = [item]
            while True:
                try:
                    nxt = self._settling.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._settling.put(None)
                    break
                items.append(nxt)
            heads = [h for h, _ in items if h is not None]
            failed: BaseException | None = None
            if heads:
                try:
                    self._checkpoint(*heads[-1])  # the newest commit covers the ones before
                except Exception as exc:  # uncovered: those callers hear why, not silence
                    failed = exc
            for head, results in items:
                for fut, value, err in results:
                    if failed is not None and head is not None and err is None:
                        value, err = None, failed
                    if fut is not None and self._loop is not None:
                        self._loop.call_soon_threadsafe(_settle, fut, value, err)


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
