"""The ``signals`` table checked against the chain that wrote it.

The daemon enforces what the ``signals`` table holds when it restarts, so a row edited in
the file (a cap raised to 99999) must not pass for the signal that was accepted. Every row
is written by :meth:`Store.add_signals` in the same transaction as a chained ``signal``
record that holds the events, so the table can be rebuilt from the chain: replaying the
records in order (upserts, cancels by id, cancels of every interval of an OpenADR event)
gives each row as it must be. A row that differs, a row missing, or a row no record wrote
is a :class:`Problem`, and the daemon enforces the chain's version (or nothing, for a row
no record wrote).

Rows whose records were archived cannot be rebuilt from the database; ``audit archive``
never moves the record of a signal still in force, so such a row must be over (cancelled
or ended): a row in force with no record is named.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from scheduler.audit.chain import Problem, canonical, chain_hash

DEFAULT_ENDS_AT = 4e11  # "until cancelled"


@dataclass(frozen=True)
class Row:
    id: str
    received_at: float
    source: str
    event: str
    ends_at: float
    cancelled_at: float | None
    seq: int | None = None  # the record that last touched it (None: not in the database)


def write(
    con: sqlite3.Connection, events: list[dict[str, Any]], source: str, now: float
) -> list[str]:
    """Apply accepted events to the table (inside the write that chains their record);
    :func:`replay` is the same rules read back from the chain."""
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
                    "UPDATE signals SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL",
                    (now, ev["id"]),
                )
            continue
        con.execute(
            "INSERT INTO signals(id, received_at, source, event, ends_at) "
            "VALUES (?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET received_at=excluded.received_at, "
            "source=excluded.source, event=excluded.event, ends_at=excluded.ends_at, "
            "cancelled_at=NULL",
            (ev["id"], now, source, canonical(ev), float(ev.get("_ends_at", DEFAULT_ENDS_AT))),
        )
    return ids


def replay(
    records: Iterable[tuple[int, float, str]],
) -> tuple[dict[str, Row], list[tuple[int, float, str]]]:
    """Rows as ``(seq, at, payload)`` signal records leave them, and the cancels that
    touched ids no record in ``records`` created: ``(seq, at, id or prefix*)``."""
    rows: dict[str, Row] = {}
    orphan_cancels: list[tuple[int, float, str]] = []
    for seq, at, payload in records:
        body = json.loads(payload)
        src = str(body.get("source", ""))
        for ev in body.get("events", []):
            eid = str(ev["id"])
            if ev.get("type") == "cancel":
                prefix = eid[:-1] if eid.endswith(":*") else None
                hit = [i for i in rows if (i.startswith(prefix) if prefix else i == eid)]
                for i in hit:
                    if rows[i].cancelled_at is None:
                        rows[i] = replace(rows[i], cancelled_at=at, seq=seq)
                orphan_cancels.append((seq, at, eid))
                continue
            ends = float(ev.get("_ends_at", DEFAULT_ENDS_AT))
            rows[eid] = Row(eid, at, src, canonical(ev), ends, None, seq)
    return rows, orphan_cancels


def table(con: sqlite3.Connection) -> dict[str, Row]:
    q = "SELECT id, received_at, source, event, ends_at, cancelled_at FROM signals"
    return {
        r[0]: Row(str(r[0]), float(r[1]), str(r[2]), str(r[3]), float(r[4]), r[5])
        for r in con.execute(q)
    }


def _touches(cancel_id: str, row_id: str) -> bool:
    if cancel_id.endswith(":*"):
        return row_id.startswith(cancel_id[:-1])
    return cancel_id == row_id


def check(
    con: sqlite3.Connection, after_seq: int, now: float
) -> tuple[dict[str, Row], list[Problem]]:
    """The rows to trust (the chain's version of each) and what differs in the table.

    Records of ``signal`` kind after ``after_seq`` (the archive anchor) are replayed; each
    record's own hash is checked first, so a record edited with its row is not trusted.
    Both are read in one snapshot: a signal the writer commits between the two reads would
    otherwise look like a row no record wrote.
    """
    if con.in_transaction:
        return _check(con, after_seq, now)
    con.execute("BEGIN")
    try:
        return _check(con, after_seq, now)
    finally:
        con.execute("COMMIT")


def _check(
    con: sqlite3.Connection, after_seq: int, now: float
) -> tuple[dict[str, Row], list[Problem]]:
    problems: list[Problem] = []
    good: list[tuple[int, float, str]] = []
    q = "SELECT seq, at, payload, prev, hash FROM log WHERE kind = 'signal' AND seq > ? "
    for seq, at, payload, prev, h in con.execute(q + "ORDER BY seq", (after_seq,)):
        if chain_hash(prev, seq, at, "signal", payload) != h:
            problems.append(
                Problem(
                    "signal", seq, f"signal record {seq} was edited: its events are not trusted"
                )
            )
            continue
        good.append((int(seq), float(at), str(payload)))
    expected, cancels = replay(good)
    stored = table(con)
    trusted: dict[str, Row] = {}
    for eid, want in expected.items():
        got = stored.get(eid)
        trusted[eid] = want
        if got is None:
            problems.append(
                Problem(
                    "signal",
                    want.seq,
                    f"signal {eid!r} of record {want.seq} is missing from the signals table",
                )
            )
        elif replace(got, seq=want.seq) != want:
            fields = [
                f for f in ("received_at", "source", "event", "ends_at", "cancelled_at")
                if getattr(got, f) != getattr(want, f)
            ]  # fmt: skip
            problems.append(
                Problem(
                    "signal",
                    want.seq,
                    f"signals row {eid!r} differs from record {want.seq} in {', '.join(fields)}",
                )
            )
    for eid, got in stored.items():
        if eid in expected:
            continue
        hits = [c for c in cancels if _touches(c[2], eid)]
        if hits and got.cancelled_at is None:
            problems.append(
                Problem(
                    "signal",
                    hits[0][0],
                    f"signals row {eid!r} is in force, but record {hits[0][0]} cancelled it",
                )
            )
        elif got.cancelled_at is None and got.ends_at > now:
            problems.append(
                Problem(
                    "signal",
                    None,
                    f"signals row {eid!r} is in force but was written by no record in the chain",
                )
            )
        else:
            trusted[eid] = got  # over, its records archived: nothing to enforce
    return trusted, problems


def live_seqs(rows: dict[str, Row], now: float) -> list[int]:
    """The records that signals still in force rest on (``audit archive`` keeps them)."""
    return sorted(
        r.seq
        for r in rows.values()
        if r.seq is not None and r.cancelled_at is None and r.ends_at > now
    )
