"""The state database's tables and their versions (``PRAGMA user_version``).

0: before versions (commit 8150742): these tables, no head file.
1: the head file beside the database (``scheduler.audit.head``); no table changes, so the
   upgrade starts the head file with a checkpoint on the head the old code left, which
   then guards every record before it.
2: ``webhook_ids.body_sha256``: the digest of the body a webhook id delivered, so that the
   id reused for another body is told from a retry after a restart too (NULL for ids
   stored before: those fall back to comparing the signal ids).

Tables that older code can ignore without misreading anything are created on every open
(:data:`ADDED_TABLES`), without a version: ``openadr_programs``, the OpenADR programs a
daemon learned (their payload descriptors: the defaults of their events' units);
``device_identities``, what discovery found at each miner's address
(``adapters.discovery.MinerIdentity`` as JSON), so that the next start does not probe again;
``openadr_reports`` and ``openadr_samples`` (``scheduler.audit.report_ledger``), the VEN's
reports settled (sent or given up) and the import sampled for them, so that a restart
neither posts a report again nor loses what was measured; ``billing_peaks``
(``scheduler.audit.billing_peaks``), the highest import of each billing period, so that a
restart keeps the peak the month's demand charge is already paid on.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from scheduler.audit import billing_peaks, report_ledger
from scheduler.audit.chain import StoreError
from scheduler.audit.head import HeadWriter
from scheduler.audit.verify import SCHEMA_VERSION

log = logging.getLogger(__name__)

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
    keep_until REAL NOT NULL,
    body_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS archived (
    file TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    archived_at REAL NOT NULL
);
"""
ADDED_TABLES = (
    """
CREATE TABLE IF NOT EXISTS openadr_programs (
    id TEXT PRIMARY KEY,
    descriptors TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_identities (
    address TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_dwell (
    device_id TEXT PRIMARY KEY,
    dwell TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
    + report_ledger.TABLES
    + billing_peaks.TABLES
)  # their modules read and write them


def open_checked(
    con: sqlite3.Connection, path: str, migrate: bool, key: bytes | None, head_file: Path
) -> int:
    """Check the pages (``quick_check``) and the version; with ``migrate``, create the
    tables or upgrade them. Returns the schema version the file now has."""
    bad = [str(r[0]) for r in con.execute("PRAGMA quick_check(5)")]
    if bad != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(bad))
    (version,) = con.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} was written by a newer gridsched "
            f"(this one reads up to {SCHEMA_VERSION}); upgrade gridsched"
        )
    has_log = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log'"
    ).fetchone()
    if not migrate:
        if not has_log:
            raise sqlite3.DatabaseError("it has no decision log")
        return int(version)
    if version < SCHEMA_VERSION:
        _migrate(con, path, version, bool(has_log), key, head_file)
    con.executescript(ADDED_TABLES)
    return SCHEMA_VERSION


def _migrate(
    con: sqlite3.Connection,
    path: str,
    version: int,
    had_log: bool,
    key: bytes | None,
    head_file: Path,
) -> None:
    """Upgrade in place. 0 -> 1 adds no column: it starts the head file, with a first
    checkpoint on the head the old code left (the records before it are covered by it).
    1 -> 2 adds ``webhook_ids.body_sha256``."""
    con.executescript(SCHEMA)
    columns = {str(r[1]) for r in con.execute("PRAGMA table_info(webhook_ids)")}
    if "body_sha256" not in columns:
        con.execute("ALTER TABLE webhook_ids ADD COLUMN body_sha256 TEXT")
    if had_log and version == 0:
        log.warning("%s: upgrading schema 0 -> %d (head file %s)", path, SCHEMA_VERSION, head_file)
    writer = HeadWriter(head_file, key)
    try:
        row = con.execute("SELECT seq, hash, at FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None and (writer.last is None or writer.last.seq != row[0]):
            writer.append(int(row[0]), str(row[1]), float(row[2]))
    finally:
        writer.close()
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
