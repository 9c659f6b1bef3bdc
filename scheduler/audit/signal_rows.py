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
from dataclasses import dataclass, field, replace
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


@dataclass
class Replay:
    """The table as the chain's signal records after ``after_seq`` leave it, read up to
    record ``upto``. The store keeps one and advances it at each read, so a read replays
    only the records written since (each record's hash checked once, when first read)."""

    after_seq: int
    upto: int
    rows: dict[str, Row] = field(default_factory=dict)
    by_prefix: dict[str, set[str]] = field(default_factory=dict)  # "oadr:e1:" -> its ids
    cancels: list[tuple[int, float, str]] = field(default_factory=list)
    bad: list[Problem] = field(default_factory=list)  # signal records whose hash is broken
    #: caps in force in the table that no record wrote (nor cancelled), as the last check
    #: read them: the daemon enforces them all the same (a tampered record or an inserted
    #: row must not lift a cap); any other event type no record vouches for is not acted on
    unrecorded_caps: dict[str, Row] = field(default_factory=dict)

    def apply(self, seq: int, at: float, payload: str) -> None:
        """One record's events, in order, by :func:`write`'s rules."""
        body = json.loads(payload)
        src = str(body.get("source", ""))
        for ev in body.get("events", []):
            eid = str(ev["id"])
            if ev.get("type") == "cancel":
                hit = self.by_prefix.get(eid[:-1], set()) if eid.endswith(":*") else {eid}
                for i in hit:
                    row = self.rows.get(i)
                    if row is not None and row.cancelled_at is None:
                        self.rows[i] = replace(row, cancelled_at=at, seq=seq)
                self.cancels.append((seq, at, eid))
                continue
            ends = float(ev.get("_ends_at", DEFAULT_ENDS_AT))
            self.rows[eid] = Row(eid, at, src, canonical(ev), ends, None, seq)
            for k in range(len(eid)):  # every prefix a ":*" cancel can name
                if eid[k] == ":":
                    self.by_prefix.setdefault(eid[: k + 1], set()).add(eid)

    def advance(self, con: sqlite3.Connection) -> None:
        q = "SELECT seq, at, payload, prev, hash FROM log WHERE kind = 'signal' AND seq > ? "
        for seq, at, payload, prev, h in con.execute(q + "ORDER BY seq", (self.upto,)):
            self.upto = int(seq)
            if chain_hash(prev, seq, at, "signal", payload) != h:
                why = f"signal record {seq} was edited: its events are not trusted"
                self.bad.append(Problem("signal", seq, why))
                continue
            self.apply(int(seq), float(at), str(payload))


ROW_Q = "SELECT id, received_at, source, event, ends_at, cancelled_at FROM signals"


def _row(r: tuple[Any, ...]) -> Row:
    return Row(str(r[0]), float(r[1]), str(r[2]), str(r[3]), float(r[4]), r[5])


def _touches(cancel_id: str, row_id: str) -> bool:
    if cancel_id.endswith(":*"):
        return row_id.startswith(cancel_id[:-1])
    return cancel_id == row_id


def check(
    con: sqlite3.Connection,
    after_seq: int,
    now: float,
    state: Replay | None = None,
    full: bool = True,
) -> tuple[Replay, list[Problem]]:
    """The chain's version of the table (``Replay.rows``, what to trust) and what differs
    in the table: every row (``full``, for ``audit verify``) or the rows in force on
    either side (the daemon's reads). ``state``: a replay to advance (a new one when None
    or when the archive anchor moved).

    Both are read in one snapshot: a signal the writer commits between the two reads would
    otherwise look like a row no record wrote.
    """
    if con.in_transaction:
        return _check(con, after_seq, now, state, full)
    con.execute("BEGIN")
    try:
        return _check(con, after_seq, now, state, full)
    finally:
        con.execute("COMMIT")


def _check(
    con: sqlite3.Connection, after_seq: int, now: float, state: Replay | None, full: bool
) -> tuple[Replay, list[Problem]]:
    if state is None or state.after_seq != after_seq:
        state = Replay(after_seq, after_seq)
    state.advance(con)
    state.unrecorded_caps = {}
    problems = list(state.bad)
    expected = state.rows
    if full:
        stored = {r[0]: _row(r) for r in con.execute(ROW_Q)}
        wanted = list(expected)
    else:
        live = " WHERE cancelled_at IS NULL AND ends_at > ?"
        stored = {r[0]: _row(r) for r in con.execute(ROW_Q + live, (now,))}
        wanted = [i for i, r in expected.items() if r.cancelled_at is None and r.ends_at > now]
        for eid in wanted:  # in force by the chain, not by the table: read that row too
            if eid not in stored:
                row = con.execute(ROW_Q + " WHERE id = ?", (eid,)).fetchone()
                if row is not None:
                    stored[eid] = _row(row)
    for eid in wanted:
        want = expected[eid]
        got = stored.get(eid)
        if got is None:
            why = f"signal {eid!r} of record {want.seq} is missing from the signals table"
            problems.append(Problem("signal", want.seq, why))
        elif replace(got, seq=want.seq) != want:
            fields = [
                f for f in ("received_at", "source", "event", "ends_at", "cancelled_at")
                if getattr(got, f) != getattr(want, f)
            ]  # fmt: skip
            why = f"signals row {eid!r} differs from record {want.seq} in {', '.join(fields)}"
            problems.append(Problem("signal", want.seq, why))
    for eid, got in stored.items():
        if eid in expected:
            if not full and eid not in wanted:  # in force in the table, over in the chain
                want = expected[eid]
                why = f"signals row {eid!r} is in force, but record {want.seq} ended it"
                problems.append(Problem("signal", want.seq, why))
            continue
        hits = [c for c in state.cancels if _touches(c[2], eid)]
        if hits and got.cancelled_at is None:
            why = f"signals row {eid!r} is in force, but record {hits[0][0]} cancelled it"
            problems.append(Problem("signal", hits[0][0], why))
        elif got.cancelled_at is None and got.ends_at > now:
            why = f"signals row {eid!r} is in force but was written by no record in the chain"
            if _is_cap(got.event):
                state.unrecorded_caps[eid] = got
                why += "; its cap is enforced all the same (fail safe)"
            problems.append(Problem("signal", None, why))
    return state, problems


def _is_cap(event: str) -> bool:
    """Whether a stored event is a curtail with a limit (one that can only lower load)."""
    try:
        ev = json.loads(event)
    except ValueError:
        return False
    return (
        isinstance(ev, dict)
        and ev.get("type") == "curtail"
        and isinstance(ev.get("limit_kw"), int | float)
    )


def live_seqs(rows: dict[str, Row], now: float) -> list[int]:
    """The records that signals still in force rest on (``audit archive`` keeps them)."""
    return sorted(
        r.seq
        for r in rows.values()
        if r.seq is not None and r.cancelled_at is None and r.ends_at > now
    )
