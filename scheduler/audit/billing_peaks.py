"""The state file's record of the site's billing peak: the highest import read in each
billing period (``scheduler.service.daemon.billing``), so that a restart keeps the peak
the month's demand charge is already paid on.

- ``billing_peaks``: one row per period (``2026-08``: a calendar month in the site's time
  zone), its start (unix s) and peak (kW), raised as higher imports are read. A row per
  month is kept for good (twelve a year).

Not part of the chain (like ``openadr_programs``): the telemetry records carry each
import read; this is what the daemon plans with.
"""

from __future__ import annotations

import sqlite3
import time

TABLES = """
CREATE TABLE IF NOT EXISTS billing_peaks (
    period TEXT PRIMARY KEY,
    start_at REAL NOT NULL,
    peak_kw REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def read(con: sqlite3.Connection) -> dict[str, float]:
    """Each period's peak (kW) by period; {} without the table (a file opened without
    migrating)."""
    try:
        return {
            str(p): float(kw) for p, kw in con.execute("SELECT period, peak_kw FROM billing_peaks")
        }
    except sqlite3.OperationalError:
        return {}


def put(con: sqlite3.Connection, period: str, start_at: float, peak_kw: float) -> None:
    """Record ``period``'s peak, inside a write."""
    con.execute(
        "INSERT OR REPLACE INTO billing_peaks(period, start_at, peak_kw, updated_at) "
        "VALUES (?,?,?,?)",
        (period, start_at, peak_kw, time.time()),
    )
