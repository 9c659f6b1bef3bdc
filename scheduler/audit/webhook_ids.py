"""Webhook delivery ids: a retried delivery is not stored twice.

A webhook sender that gets no answer sends the same body again under the same id. The
``webhook_ids`` table keeps, per id, the signal ids its delivery stored, until
``keep_until``, and the digest of its body, so that an id reused for another body is told
from a retry after a restart too (ids stored before schema version 2 have no digest).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3


def body_digest(raw: str) -> str:
    """SHA-256 of a delivered body as stored (``raw``, UTF-8)."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def stored_signal_ids(con: sqlite3.Connection, webhook_id: str) -> list[str] | None:
    """The signal ids the delivery ``webhook_id`` stored; None when it is not stored."""
    row = con.execute("SELECT signal_ids FROM webhook_ids WHERE id = ?", (webhook_id,)).fetchone()
    return None if row is None else list(json.loads(row[0]))


def remember(
    con: sqlite3.Connection, webhook_id: str, signal_ids: list[str], keep_until: float, raw: str
) -> None:
    """Store a delivery (call in the transaction that stores its signals)."""
    con.execute(
        "INSERT INTO webhook_ids(id, signal_ids, keep_until, body_sha256) VALUES (?,?,?,?)",
        (webhook_id, json.dumps(signal_ids), keep_until, body_digest(raw)),
    )


def body(con: sqlite3.Connection, webhook_id: str) -> str | None:
    """The digest of the body ``webhook_id`` delivered; None when the id is not stored or
    was stored before digests were kept."""
    row = con.execute("SELECT body_sha256 FROM webhook_ids WHERE id = ?", (webhook_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def seen(con: sqlite3.Connection, webhook_id: str) -> bool:
    """Whether ``webhook_id`` is stored (a retried delivery)."""
    q = "SELECT 1 FROM webhook_ids WHERE id = ?"
    return con.execute(q, (webhook_id,)).fetchone() is not None


def prune(con: sqlite3.Connection, now: float) -> None:
    """Forget the deliveries kept until before ``now``."""
    con.execute("DELETE FROM webhook_ids WHERE keep_until < ?", (now,))
