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
        rows = con.execute("SELECT address, identity FROM device_identities")
        return {str(a): json.loads(d) for a, d in rows}
    except (sqlite3.OperationalError, ValueError):
        return {}


def put(con: sqlite3.Connection, changes: dict[str, dict[str, Any] | None]) -> None:
    """Store each document (None: delete the address's row), inside the caller's write."""
    now = time.time()
    for address, doc in changes.items():
        if doc is None:
            con.execute("DELETE FROM device_identities WHERE address = ?", (address,))
        else:
            con.execute(
                "INSERT OR REPLACE INTO device_identities(address, identity, updated_at) "
                "VALUES (?,?,?)",
                (address, json.dumps(doc, sort_keys=True), now),
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
