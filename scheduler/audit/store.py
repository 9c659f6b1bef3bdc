"""Durable state in SQLite (WAL): signals, plans, commands and telemetry, as a hash chain.

Every record goes into one append-only ``log`` table whose rows carry the hash of the row
before (``hash = sha256(prev_hash | seq | at | kind | payload)``), so that the evidence of
a demand-response settlement (the signal, the commands sent, the power measured) can be
proved untouched: :meth:`Store.verify` re-walks the chain. Signals also live in their own
table for lookups (active events), and webhook ids in theirs (replay protection,
``scheduler.audit.webhook_ids``).

Old records can be moved out to an archive file (``scheduler.audit.archive``); the ``archived``
table then keeps, per file, the last archived record's sequence number and hash, and the
chain left in the database is verified from that anchor.

After each commit the new head is checkpointed in a file beside the database
(``scheduler.audit.head``), so a cut tail or an edit re-hashed over shows; the ``signals``
table is checked against the chained records that wrote it (``scheduler.audit.signal_rows``).
The schema is versioned (``PRAGMA user_version``, :data:`SCHEMA_VERSION`) and upgraded on
open; a database newer than this code is refused.

Writes go through one writer thread that commits whatever is queued as one transaction
(group commit, ``synchronous=FULL``, ``scheduler.audit.group_commit``): a caller that awaits
:meth:`Store.write` knows its record is on disk and checkpointed, and many concurrent
signals share one fsync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.audit import billing_peaks as peak_rows
from scheduler.audit import device_identities, report_ledger, schema, signal_rows, webhook_ids
from scheduler.audit.chain import GENESIS, Problem, StoreError, canonical, chain_hash, walk_chain
from scheduler.audit.group_commit import GroupCommit
from scheduler.audit.head import (
    Checkpoint,
    HeadWriter,
    head_path,
    last_checkpoint,
    load_key,
    sign_checkpoint,
)
from scheduler.audit.verify import SCHEMA_VERSION, Verification, verify
from scheduler.audit.webhook_ids import body_digest

__all__ = [
    "GENESIS", "SCHEMA_VERSION", "Anchor", "Checkpoint", "Problem", "Store", "StoreError",
    "Verification", "body_digest", "canonical", "chain_hash", "head_path", "sign_checkpoint",
    "walk_chain",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Anchor:
    """Where the chain in the database starts: after the last archived record."""

    seq: int
    hash: str
    files: tuple[str, ...] = ()


class Store:
    """One SQLite file. Use :meth:`open` in async code; reads are synchronous and cheap."""

    def __init__(self, path: str | Path, key: bytes | None = None, migrate: bool = True) -> None:
        """Open (and with ``migrate``, create or upgrade) the database at ``path``; raises
        :class:`StoreError` naming the file when it is corrupt, not a database, or newer.
        ``key``: the audit key that signs checkpoints (default: from the environment)."""
        self.path = str(path)
        self.key = load_key() if key is None else key
        self.head_file = head_path(self.path)
        self.head_error: str | None = None  # a checkpoint that could not be written
        self.head_mismatch: str | None = None  # the head file disagreed with the database
        self.signal_problems: list[Problem] = []
        self._replay: signal_rows.Replay | None = None  # the signals table per the chain
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._read = self._connect()
            self.schema_version = schema.open_checked(
                self._read, self.path, migrate, self.key, self.head_file
            )
        except sqlite3.DatabaseError as exc:
            said = " ".join(str(exc).split())  # SQLite's integrity report spans lines
            raise StoreError(
                f"{self.path}: the database is corrupt or not a gridsched database ({said}); "
                "restore it from a backup, or move it aside to start a new one"
            ) from None
        self._commits = GroupCommit(
            self._connect, lambda: (self._seq, self._prev), self._reload_head, self._checkpoint
        )
        self._head: HeadWriter | None = None
        self._reload_head(self._read)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    # -- writer thread ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._commits.running:
            loop = asyncio.get_running_loop()  # outside a loop: raise before opening anything
            self._open_head()
            self._commits.start(loop)

    def _open_head(self) -> None:
        """Open the head file for appending and checkpoint the head a crash left between a
        commit and its checkpoint. A head file ahead of the database is not papered over:
        it stays as evidence for ``audit verify`` (and is said in :attr:`head_error`)."""
        if self.schema_version < 1:
            return
        self._head = HeadWriter(self.head_file, self.key)
        last = self._head.last
        held = None if last is None else self.hash_at(last.seq)
        if last is not None and last.seq > self._seq:
            self.head_mismatch = (
                f"the head file says the chain reached record {last.seq}, the database ends "
                f"at {self._seq}: records were cut off (or an older copy was restored); "
                "`gridsched audit verify` names them"
            )
        elif last is not None and held is not None and held != last.hash:
            self.head_mismatch = (
                f"record {last.seq} differs from the head file's last checkpoint: records "
                "were edited and re-hashed; `gridsched audit verify` names them"
            )
        if self.head_mismatch is not None:
            log.error("%s: %s", self.path, self.head_mismatch)
        if self._seq > 0:
            self._checkpoint(self._seq, self._prev)

    def _checkpoint(self, seq: int, digest: str) -> None:
        """Checkpoint the head ``seq`` of hash ``digest`` (once per distinct head)."""
        last = None if self._head is None else self._head.last
        if self._head is None or (last is not None and (last.seq, last.hash) == (seq, digest)):
            return
        try:
            self._head.append(seq, digest, time.time())
        except OSError as exc:  # the records are on disk: say the checkpoint is not
            self.head_error = f"checkpoint of record {seq} not written: {exc}"
            log.error("%s: %s", self.path, self.head_error)
        else:
            self.head_error = None

    def head(self) -> Checkpoint | None:
        """The last checkpoint (of the running writer, else from the head file)."""
        if self._head is not None:
            return self._head.last
        return last_checkpoint(self.head_file)

    def audit_status(self) -> dict[str, Any]:
        """For ``/v1/status``: the last checkpoint (copy it elsewhere: with it, ``audit
        verify --expect-head SEQ:HASH`` proves later that nothing was cut or re-hashed) and
        what is wrong with the head file or the signals table, if anything."""
        head = self.head()
        return {
            "head": None
            if head is None
            else {**head.to_dict(), "witness": f"{head.seq}:{head.hash}"},
            "signed": self.key is not None,
            "schema_version": self.schema_version,
            "error": self.head_mismatch or self.head_error,
            "signal_problems": [p.text for p in self.signal_problems],
        }

    def close(self) -> None:
        self._commits.close()  # before the head file: it checkpoints the last batch
        if self._head is not None:
            self._head.close()
            self._head = None
        self._read.close()

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
        if not self._commits.running:
            self.start()
        return await self._commits.write(fn)

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
        if kind == "signal":  # a signal's record and its row are written together
            raise ValueError("signal records are written by add_signals, with their rows")
        return int(await self.write(lambda con: self._append(con, kind, payload, at)))

    def verify(
        self, expect_head: tuple[int, str] | None = None, now: float | None = None
    ) -> Verification:
        """See :func:`scheduler.audit.verify.verify`."""
        return verify(self, expect_head, now)

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
        at: float | None = None,
    ) -> tuple[bool, list[str]]:
        """Store accepted events durably. Returns (stored, ids); (False, ids) for a webhook id
        already seen (a retried delivery): nothing is stored twice. ``at``: when received
        (default now)."""

        def fn(con: sqlite3.Connection) -> tuple[bool, list[str]]:
            now = time.time() if at is None else at
            if webhook_id is not None:
                stored = webhook_ids.stored_signal_ids(con, webhook_id)
                if stored is not None:
                    return False, stored
            ids = signal_rows.write(con, events, source, now)
            if webhook_id is not None:
                webhook_ids.remember(con, webhook_id, ids, keep_until, raw)
            self._append(
                con,
                "signal",
                {"source": source, "webhook_id": webhook_id, "events": events, "raw": raw},
                now,
            )
            return True, ids

        out: tuple[bool, list[str]] = await self.write(fn)
        return out

    def webhook_body(self, webhook_id: str) -> str | None:
        """The digest (:func:`body_digest`) of the body ``webhook_id`` delivered, None when
        the id is not stored or was stored before digests were kept."""
        return webhook_ids.body(self._read, webhook_id)

    def known_ids(self, signal_ids: list[str], webhook_id: str | None) -> tuple[set[str], bool]:
        """Which of ``signal_ids`` name a stored signal (cancelled or not; ``x:*`` any id
        beginning ``x:``), and whether ``webhook_id`` was stored (a retried delivery)."""
        found = set()
        for i in signal_ids:
            p = i[:-1] if i.endswith(":*") else None
            q, args = (
                ("SELECT 1 FROM signals WHERE id = ?", (i,))
                if p is None
                else ("SELECT 1 FROM signals WHERE substr(id, 1, ?) = ? LIMIT 1", (len(p), p))
            )
            if self._read.execute(q, args).fetchone() is not None:
                found.add(i)
        return found, webhook_id is not None and webhook_ids.seen(self._read, webhook_id)

    def signals(self, include_ended_after: float | None = None) -> list[dict[str, Any]]:
        """Stored events not cancelled (and not ended before ``include_ended_after``), as
        the chain wrote them: a row that differs from its record is taken from the record;
        a row no record wrote is left out, unless it is a cap in force, which is kept as
        the row has it (fail safe: tampering must not lift a cap); each said in
        :attr:`signal_problems`."""
        now = time.time()
        self._replay, problems = signal_rows.check(
            self._read, self.anchor().seq, now, self._replay, full=False
        )
        rows = self._replay.rows
        if problems != self.signal_problems:
            for p in problems:
                log.error("%s: %s; enforcing what the chain holds", self.path, p.text)
        self.signal_problems = problems
        after = -math.inf if include_ended_after is None else include_ended_after
        out = []
        both = [*rows.values(), *self._replay.unrecorded_caps.values()]
        kept = (r for r in both if r.cancelled_at is None and r.ends_at > after)
        for r in sorted(kept, key=lambda r: r.received_at):
            ev = json.loads(r.event)
            ev["_received_at"] = r.received_at
            ev["_source"] = r.source
            out.append(ev)
        return out

    def in_force_seqs(self, now: float) -> list[int]:
        """The records that signals in force at ``now`` rest on (``audit archive`` keeps
        them in the database)."""
        state, _ = signal_rows.check(self._read, self.anchor().seq, now, full=False)
        return signal_rows.live_seqs(state.rows, now)

    async def prune_webhook_ids(self, now: float) -> None:
        await self.write(lambda con: webhook_ids.prune(con, now))

    # -- OpenADR programs (their payload descriptors; not chained: the signal records carry
    # the raw notification and what was made of it) ------------------------------------------

    def openadr_programs(self) -> dict[str, dict[str, Any]]:  # by id ({} before any)
        return device_identities.read_docs(self._read, "openadr_programs", "id", "descriptors")

    async def put_openadr_programs(self, changes: dict[str, dict[str, Any] | None]) -> None:
        put = device_identities.put_docs  # (None: forget the program); returns once on disk
        await self.write(lambda con: put(con, "openadr_programs", "id", "descriptors", changes))

    # -- the VEN's reports settled and the import sampled for them (report_ledger) -----------

    def openadr_reports(self) -> dict[str, tuple[str, str]]:
        return report_ledger.settled(self._read)

    def openadr_samples(self, since: float) -> list[report_ledger.Sample]:
        return report_ledger.samples(self._read, since)

    async def put_openadr_report(self, name: str, event_id: str, outcome: str, detail: Any) -> None:
        await self.write(lambda con: report_ledger.settle(con, name, event_id, outcome, detail))

    async def forget_openadr_reports(self, event_id: str) -> None:
        await self.write(lambda con: report_ledger.forget_event(con, event_id))

    async def put_openadr_samples(
        self, rows: list[report_ledger.Sample], keep_after: float
    ) -> None:
        await self.write(lambda con: report_ledger.add_samples(con, rows, keep_after))

    # -- the billing peak of each period (billing_peaks; not chained) -----------------------

    def billing_peaks(self) -> dict[str, float]:
        return peak_rows.read(self._read)

    async def put_billing_peak(self, period: str, start_at: float, peak_kw: float) -> None:
        await self.write(lambda con: peak_rows.put(con, period, start_at, peak_kw))

    # -- what discovery found at each miner's address (adapters.discovery), and when each
    # device last slept or woke (scheduler.service.daemon.dwell); by key, not chained ------

    def device_identities(self) -> dict[str, dict[str, Any]]:
        return device_identities.read(self._read)

    async def put_device_identities(self, changes: dict[str, dict[str, Any] | None]) -> None:
        if changes:  # (None: forget the address); returns once on disk
            await self.write(lambda con: device_identities.put(con, changes))

    def device_dwell(self) -> dict[str, dict[str, Any]]:
        return device_identities.read_docs(self._read, "device_dwell", "device_id", "dwell")

    async def put_device_dwell(self, changes: dict[str, dict[str, Any] | None]) -> None:
        if changes:
            put = device_identities.put_docs
            await self.write(lambda con: put(con, "device_dwell", "device_id", "dwell", changes))

    def put_device_identities_now(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """The same from a process that does not run the writer (``fleet status`` beside a
        running daemon): one transaction on the reading connection; neither the head file
        nor the chain is touched."""
        device_identities.put_now(self._read, changes)
