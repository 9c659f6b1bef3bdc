"""Durable state in SQLite (WAL): signals, plans, commands and telemetry, as a hash chain.

Every record goes into one append-only ``log`` table whose rows carry the hash of the row
before (``hash = sha256(prev_hash | seq | at | kind | payload)``), so that the evidence of
a demand-response settlement (the signal, the commands sent, the power measured) can be
proved untouched: :meth:`Store.verify` re-walks the chain. Signals also live in their own
table for lookups (active events, replay protection by webhook id).

Old records can be moved out to an archive file (``scheduler.audit.archive``); the ``archived``
table then keeps, per file, the last archived record's sequence number and hash, and the
chain left in the database is verified from that anchor.

Writes go through one writer thread that commits whatever is queued as one transaction
(group commit, ``synchronous=FULL``): a caller that awaits :meth:`Store.write` knows its
record is on disk, and many concurrent signals share one fsync.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_at ON log(at);
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    ends_at REAL NOT NULL,
    cancelled_at REAL
);
CREATE TABLE IF NOT EXISTS webhook_ids (
    id TEXT PRIMARY KEY,
    signal_ids TEXT NOT NULL,
    keep_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS archived (
    file TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    archived_at REAL NOT NULL
);
"""

GENESIS = "0" * 64


def chain_hash(prev: str, seq: int, at: float, kind: str, payload: str) -> str:
    h = hashlib.sha256()
    h.update(f"{prev}|{seq}|{at!r}|{kind}|".encode())
    h.update(payload.encode())
    return h.hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str = ""
    from_seq: int = 1  # records before it were archived (``archived_to``)
    archived_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Anchor:
    """Where the chain in the database starts: after the last archived record."""

    seq: int
    hash: str
    files: tuple[str, ...] = ()


class StoreError(Exception):
    pass


def walk_chain(
    after_seq: int, prev: str, rows: Iterable[tuple[int, float, str, str, str, str]]
) -> tuple[int, int | None, str]:
    """Check ``(seq, at, kind, payload, prev, hash)`` rows in order against the chain that
    ends with record ``after_seq`` of hash ``prev``: (records read, first bad seq or None,
    why it is bad)."""
    expect = after_seq + 1
    n = 0
    for seq, at, kind, payload, p, h in rows:
        n += 1
        if seq != expect:
            return n, seq, f"record {expect} is missing (next is {seq})"
        if p != prev:
            return n, seq, "prev does not match the record before"
        if chain_hash(prev, seq, at, kind, payload) != h:
            return n, seq, "hash does not match the record's content"
        prev = h
        expect += 1
    return n, None, ""


class Store:
    """One SQLite file. Use :meth:`open` in async code; reads are synchronous and cheap."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._read = self._connect()
        self._read.executescript(SCHEMA)
        self._queue: queue.Queue[tuple[Callable[[sqlite3.Connection], Any], Any] | None] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reload_head(self._read)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    # -- writer thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None
        self._read.close()

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
                        con.execute("ROLLBACK TO one")
                        con.execute("RELEASE one")
                        self._reload_head(con)
                        results.append((fut, None, exc))
                con.execute("COMMIT")
            except Exception as batch_exc:
                con.rollback()
                results = [(fut, None, batch_exc) for _, fut in batch]
                self._reload_head(con)
            for fut, value, err in results:
                if fut is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(_settle, fut, value, err)
        con.close()

    def _reload_head(self, con: sqlite3.Connection) -> None:
        row = con.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            anchor = self.anchor(con)
            self._seq, self._prev = anchor.seq, anchor.hash
        else:
            self._seq, self._prev = int(row[0]), str(row[1])

    def anchor(self, con: sqlite3.Connection | None = None) -> Anchor:
        """The last archived record (seq 0 and the genesis hash when nothing is archived)."""
        con = self._read if con is None else con
        files = tuple(
            str(f) for (f,) in con.execute("SELECT file FROM archived ORDER BY first_seq")
        )
        row = con.execute(
            "SELECT last_seq, last_hash FROM archived ORDER BY last_seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return Anchor(0, GENESIS)
        return Anchor(int(row[0]), str(row[1]), files)

    async def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(connection)`` inside the next group commit; returns once it is on disk."""
        if self._thread is None:
            self.start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, fut))
        return await fut

    # -- the chain ----------------------------------------------------------------------------

    def _append(
        self, con: sqlite3.Connection, kind: str, payload: Any, at: float | None = None
    ) -> int:
        """Append one chained record (call inside a write)."""
        at = time.time() if at is None else at
        text = canonical(payload)
        seq = self._seq + 1
        digest = chain_hash(self._prev, seq, at, kind, text)
        con.execute(
            "INSERT INTO log(seq, at, kind, payload, prev, hash) VALUES (?,?,?,?,?,?)",
            (seq, at, kind, text, self._prev, digest),
        )
        self._seq, self._prev = seq, digest
        return seq

    async def record(self, kind: str, payload: Any, at: float | None = None) -> int:
        return int(await self.write(lambda con: self._append(con, kind, payload, at)))

    def verify(self) -> Verification:
        """Re-walk the chain in the database, from the archive anchor when there is one."""
        anchor = self.anchor()
        rows = self._read.execute(
            "SELECT seq, at, kind, payload, prev, hash FROM log WHERE seq > ? ORDER BY seq",
            (anchor.seq,),
        )
        n, bad, why = walk_chain(anchor.seq, anchor.hash, rows)
        return Verification(bad is None, n, bad, why, anchor.seq + 1, anchor.files)

    def hash_at(self, seq: int) -> str | None:
        row = self._read.execute("SELECT hash FROM log WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def records(
        self, start: float, end: float, kinds: tuple[str, ...] | None = None
    ) -> Iterator[tuple[int, float, str, dict[str, Any], str]]:
        q = "SELECT seq, at, kind, payload, hash FROM log WHERE at >= ? AND at < ? ORDER BY seq"
        for seq, at, kind, payload, h in self._read.execute(q, (start, end)):
            if kinds is None or kind in kinds:
                yield seq, at, kind, json.loads(payload), h

    # -- signals ------------------------------------------------------------------------------

    async def add_signals(
        self,
        events: list[dict[str, Any]],
        source: str,
        webhook_id: str | None,
        raw: str,
        keep_until: float,
    ) -> tuple[bool, list[str]]:
        """Store accepted events durably. Returns (stored, ids); (False, ids) for a webhook id
        already seen (a retried delivery): nothing is stored twice."""

        def fn(con: sqlite3.Connection) -> tuple[bool, list[str]]:
            now = time.time()
            if webhook_id is not None:
                row = con.execute(
                    "SELECT signal_ids FROM webhook_ids WHERE id = ?", (webhook_id,)
                ).fetchone()
                if row is not None:
                    return False, list(json.loads(row[0]))
            ids = []
            for ev in events:
                ids.append(ev["id"])
                if ev.get("type") == "cancel":
                    if ev["id"].endswith(":*"):  # every interval of an OpenADR event
                        prefix = ev["id"][:-1]
                        con.execute(
                            "UPDATE signals SET cancelled_at = ? "
                            "WHERE substr(id, 1, ?) = ? AND cancelled_at IS NULL",
                            (now, len(prefix), prefix),
                        )
                    else:
                        con.execute(
                            "UPDATE signals SET cancelled_at = ? "
                            "WHERE id = ? AND cancelled_at IS NULL",
                            (now, ev["id"]),
                        )
                    continue
                con.execute(
                    "INSERT INTO signals(id, received_at, source, event, ends_at) "
                    "VALUES (?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET received_at=excluded.received_at, "
                    "source=excluded.source, event=excluded.event, ends_at=excluded.ends_at, "
                    "cancelled_at=NULL",
                    (ev["id"], now, source, canonical(ev), float(ev.get("_ends_at", 4e11))),
                )
            if webhook_id is not None:
                con.execute(
                    "INSERT INTO webhook_ids(id, signal_ids, keep_until) VALUES (?,?,?)",
                    (webhook_id, json.dumps(ids), keep_until),
                )
            self._append(
                con,
                "signal",
                {"source": source, "webhook_id": webhook_id, "events": events, "raw": raw},
                now,
            )
            return True, ids

        out: tuple[bool, list[str]] = await self.write(fn)
        return out

    def signals(self, include_ended_after: float | None = None) -> list[dict[str, Any]]:
        """Stored events not cancelled (and not ended before ``include_ended_after``)."""
        q = "SELECT event, received_at, source FROM signals WHERE cancelled_at IS NULL"
        args: tuple[Any, ...] = ()
        if include_ended_after is not None:
            q += " AND ends_at > ?"
            args = (include_ended_after,)
        out = []
        for event, received_at, source in self._read.execute(q + " ORDER BY received_at", args):
            ev = json.loads(event)
            ev["_received_at"] = received_at
            ev["_source"] = source
            out.append(ev)
        return out

    async def prune_webhook_ids(self, now: float) -> None:
        await self.write(
            lambda con: con.execute("DELETE FROM webhook_ids WHERE keep_until < ?", (now,))
        )


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
