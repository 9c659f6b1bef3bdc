"""``audit verify``: everything that proves the decision log, checked in one pass.

In order: the file's pages (``PRAGMA integrity_check``), the chain from the archive anchor
(an edit, a record missing), the head file (a line edited or removed), each checkpoint
against the database (a cut tail, an edit re-hashed over), a checkpoint kept elsewhere
(``--expect-head``), and the ``signals`` table against the records that wrote it.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.audit import signal_rows
from scheduler.audit.chain import Problem, walk_chain
from scheduler.audit.head import Checkpoint, read_head

if TYPE_CHECKING:
    from scheduler.audit.store import Store

# 0: before versions (commit 8150742): the same tables, no head file.
# 1: the head file beside the database; signals checked against the chain.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Verification:
    """What :meth:`Store.verify` found. ``problems`` in the order checked (the file, the
    chain, the head file, the checkpoints, the signals); the first sets ``kind``,
    ``first_bad_seq`` and ``reason``."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str = ""
    from_seq: int = 1  # records before it were archived (``archived_to``)
    archived_to: tuple[str, ...] = ()
    kind: str = ""
    problems: tuple[Problem, ...] = ()
    checkpoints: int = 0
    schema_version: int = SCHEMA_VERSION
    notes: tuple[str, ...] = ()
    head: Checkpoint | None = None  # the last checkpoint
    #: (seq, hash, where) of each checkpoint whose record is archived: only the archives
    #: can prove it (``audit verify --archive``)
    archived_witnesses: tuple[tuple[int, str, str], ...] = ()


def verify(
    store: Store, expect_head: tuple[int, str] | None = None, now: float | None = None
) -> Verification:
    """Check everything that proves the log: the file's pages, the chain from the
    archive anchor, the head file and each checkpoint in it, ``expect_head`` (a
    checkpoint kept elsewhere), and the signals table against the chain."""
    now = time.time() if now is None else now
    anchor = store.anchor()
    try:
        bad = [str(r[0]) for r in store._read.execute("PRAGMA integrity_check(5)")]
        if bad != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(bad))
        rows = store._read.execute(
            "SELECT seq, at, kind, payload, prev, hash FROM log WHERE seq > ? ORDER BY seq",
            (anchor.seq,),
        )
        n, bad_seq, why = walk_chain(anchor.seq, anchor.hash, rows)
    except sqlite3.DatabaseError as exc:
        p = Problem("corrupt", None, f"the database file is corrupt: {exc}")
        return Verification(False, 0, None, p.text, anchor.seq + 1, anchor.files, p.kind, (p,))
    problems: list[Problem] = []
    if bad_seq is not None:
        problems.append(Problem("missing" if "missing" in why else "edited", bad_seq, why))
    notes: list[str] = []
    cps: list[Checkpoint] = []
    has_head = store.head_file.exists()
    if store.schema_version < 1 and not has_head:
        notes.append(
            "schema version 0: no head file yet, so a cut tail or a re-hash cannot be "
            "checked (the daemon upgrades it on its next start)"
        )
    elif store.schema_version < 1:  # only a schema-1 store writes one: checked all the same
        why = (
            f"schema version 0 beside head file {store.head_file}, which only version 1 "
            "writes: the version was set back (to skip the head file's checks?)"
        )
        problems.append(Problem("checkpoint", None, why))
    if store.schema_version >= 1 and not has_head:
        problems.append(
            Problem("checkpoint", None, f"head file {store.head_file} is missing: the chain's "
                    "head cannot be checked (it was deleted or not copied with the database)")
        )  # fmt: skip
    if has_head:
        cps, head_problems, head_notes = read_head(store.head_file, store.key)
        problems += head_problems
        notes += head_notes
    witnesses = [(cp.seq, cp.hash, f"checkpoint line {cp.line}") for cp in cps]
    if expect_head is not None:
        witnesses.append((*expect_head, "the expected head"))
    problems += _check_checkpoints(store, witnesses, anchor.seq)
    archived = tuple(w for w in sorted(witnesses) if w[0] <= anchor.seq)
    _, signal_problems = signal_rows.check(store._read, anchor.seq, now)
    problems += signal_problems
    first = problems[0] if problems else None
    return Verification(
        ok=first is None,
        records=n,
        first_bad_seq=None if first is None else first.seq,
        reason="" if first is None else first.text,
        from_seq=anchor.seq + 1,
        archived_to=anchor.files,
        kind="" if first is None else first.kind,
        problems=tuple(problems),
        checkpoints=len(cps),
        schema_version=store.schema_version,
        notes=tuple(notes),
        head=cps[-1] if cps else None,
        archived_witnesses=archived,
    )


def _check_checkpoints(
    store: Store, witnesses: list[tuple[int, str, str]], after_seq: int
) -> list[Problem]:
    """Each checkpoint against the database: past its last record is a cut tail; the
    same record with another hash, an edit (or a removal) re-hashed over."""
    (last,) = store._read.execute("SELECT MAX(seq) FROM log").fetchone()
    last = after_seq if last is None else int(last)
    out: list[Problem] = []
    good = after_seq
    for seq, digest, where in sorted(witnesses):
        if seq <= after_seq:
            continue  # archived: ``archived_witnesses``, proved with `audit verify --archive`
        if seq > last:
            seq, _, where = max(witnesses)
            out.append(
                Problem(
                    "truncated",
                    last + 1,
                    f"records {last + 1}-{seq} are missing: "
                    f"{where} says the chain reached record {seq}, the database ends "
                    f"at {last} (the tail was cut off)",
                )
            )
            break
        h = store.hash_at(seq)
        if h is None:
            continue  # a hole in the chain: the walk names it
        if h != digest:
            span = f"record {seq}" if good + 1 == seq else f"records {good + 1}-{seq}"
            out.append(
                Problem(
                    "rehashed",
                    good + 1,
                    f"{span}: record {seq}'s hash differs from "
                    f"{where}: a record was edited or removed and the chain re-hashed "
                    "after it",
                )
            )
            break
        good = seq
    return out
