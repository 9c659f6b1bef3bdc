"""Group commit: one writer thread commits whatever is queued as one transaction.

Moved out of :mod:`scheduler.audit.store` (the store uses it through :class:`GroupCommit`).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
from collections.abc import Callable
from typing import Any


class GroupCommit:
    _queue: queue.Queue[tuple[Callable[[sqlite3.Connection], Any], Any] | None]
    _settling: queue.Queue[
        tuple[tuple[int, str] | None, list[tuple[Any, Any, BaseException | None]]] | None
    ]
    _loop: asyncio.AbstractEventLoop | None
    _seq: int
    _prev: str

    def _connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _reload_head(self, con: sqlite3.Connection) -> None:
        raise NotImplementedError

    def _checkpoint(self, seq: int, digest: str) -> None:
        raise NotImplementedError

    def _writer(self) -> None:
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
            results: list[tuple[Any, Any, BaseException | None]] = []
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
                self._settling.put(((self._seq, self._prev), results))
                continue
            self._settling.put((None, results))
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
            if heads:
                self._checkpoint(*heads[-1])  # the newest commit covers the ones before
            for _, results in items:
                for fut, value, err in results:
                    if fut is not None and self._loop is not None:
                        self._loop.call_soon_threadsafe(_settle, fut, value, err)


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
