"""The state file's record of the VEN's reports (``scheduler.service.ven_reporter``), so
that a restart neither posts a report again nor loses what was measured for one not due yet.

- ``openadr_reports``: one row per report settled, by its ``reportName`` (its identity at
  the VTN): ``sent`` (with the body posted) or ``given_up`` (with why). A restarted VEN
  that plans the same report again (the VTN still lists the event) leaves it settled.
  Rows go with their event when the VTN deletes it.
- ``openadr_samples``: the site's import as sampled for reports (kW, NULL when unread;
  ``verified`` when from a meter), kept as long as the reporter keeps samples.

Not part of the chain (like ``openadr_programs``): the VTN holds what was sent; this keeps
the VEN from contradicting it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

TABLES = """
CREATE TABLE IF NOT EXISTS openadr_reports (
    name TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS openadr_reports_event ON openadr_reports(event_id);
CREATE TABLE IF NOT EXISTS openadr_samples (
    at REAL PRIMARY KEY,
    power_kw REAL,
    verified INTEGER NOT NULL
);
"""

#: a sample as stored: (unix s, kW or None, verified)
Sample = tuple[float, float | None, bool]


def settled(con: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """Each settled report's name -> (``sent`` or ``given_up``, detail); {} without the
    table (a file opened without migrating)."""
    try:
        rows = con.execute("SELECT name, outcome, detail FROM openadr_reports")
        return {str(n): (str(o), str(d)) for n, o, d in rows}
    except sqlite3.OperationalError:
        return {}


def samples(con: sqlite3.Connection, since: float) -> list[Sample]:
    """The samples taken at or after ``since``, oldest first."""
    try:
        q = "SELECT at, power_kw, verified FROM openadr_samples WHERE at >= ? ORDER BY at"
        return [(float(t), None if kw is None else float(kw), bool(v)) for t, kw, v in
                con.execute(q, (since,))]  # fmt: skip
    except sqlite3.OperationalError:
        return []


def settle(con: sqlite3.Connection, name: str, event_id: str, outcome: str, detail: Any) -> None:
    """Record a report sent (``detail``: its body) or given up (why), inside a write."""
    text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
    con.execute(
        "INSERT OR REPLACE INTO openadr_reports(name, event_id, outcome, detail, at) "
        "VALUES (?,?,?,?,?)",
        (name, event_id, outcome, text, time.time()),
    )


def forget_event(con: sqlite3.Connection, event_id: str) -> None:
    """The rows of an event the VTN deleted, inside a write."""
    con.execute("DELETE FROM openadr_reports WHERE event_id = ?", (event_id,))


def add_samples(con: sqlite3.Connection, rows: list[Sample], keep_after: float) -> None:
    """Store ``rows`` and forget the samples taken before ``keep_after``, inside a write."""
    con.executemany(
        "INSERT OR REPLACE INTO openadr_samples(at, power_kw, verified) VALUES (?,?,?)",
        [(t, kw, int(v)) for t, kw, v in rows],
    )
    con.execute("DELETE FROM openadr_samples WHERE at < ?", (keep_after,))
