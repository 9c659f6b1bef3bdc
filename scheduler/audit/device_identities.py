"""The state file's ``device_identities`` table: what discovery found at each miner's address
(``adapters.discovery.MinerIdentity`` as JSON), read at start and written after connecting.
Not part of the chain: it is a cache, and a row lost or wrong costs one discovery."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


def read(con: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Every stored identity by address ({} without the table, or with an unreadable row)."""
    try:
        return read_docs(con, "device_identities", "address", "identity")
    except ValueError:
        return {}


def put(con: sqlite3.Connection, changes: dict[str, dict[str, Any] | None]) -> None:
    """Store each document (None: delete the address's row), inside the caller's write."""
    put_docs(con, "device_identities", "address", "identity", changes)


def read_docs(con: sqlite3.Connection, table: str, key: str, doc: str) -> dict[str, dict[str, Any]]:
    """A table of JSON documents by key (this module's, ``openadr_programs``), {} without
    the table (a file opened without migrating); a row that is no JSON raises ValueError."""
    try:
        rows = con.execute(f"SELECT {key}, {doc} FROM {table}")
        return {str(k): json.loads(d) for k, d in rows}
    except sqlite3.OperationalError:
        return {}


def put_docs(
    con: sqlite3.Connection,
    table: str,
    key: str,
    doc: str,
    changes: dict[str, dict[str, Any] | None],
) -> None:
    """Store each document of ``changes`` (None: delete its row), inside the caller's write."""
    now = time.time()
    for k, d in changes.items():
        if d is None:
            con.execute(f"DELETE FROM {table} WHERE {key} = ?", (k,))
        else:
            con.execute(
                f"INSERT OR REPLACE INTO {table}({key}, {doc}, updated_at) VALUES (?,?,?)",
                (k, json.dumps(d, sort_keys=True), now),
            )


def put_now(con: sqlite3.Connection, changes: dict[str, dict[str, Any] | None]) -> None:
    """:func:`put` in a transaction of its own on an autocommit connection."""
    if not changes:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        put(con, changes)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
