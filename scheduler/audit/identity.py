"""Which site a state file belongs to, and one daemon per state file.

A state file holds a site's signals (caps it enforces on restart) and its decision log:
reused by another site, it would enforce that site's caps and mix two sites' evidence. The
site's name is stored in it on first use (table ``site_identity``) and compared on every
start. An exclusive ``flock`` on the file, held for the daemon's life, keeps a second
daemon off it (SQLite's own locks allow two writers in turn, which broke the chain's
sequence).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from models.errors import GridschedError


class StateInUse(GridschedError):
    """Another process holds the state file's lock."""


class OtherSite(GridschedError):
    """The state file was made by another site."""


def lock_state(path: str | Path) -> int:
    """Take the state file's exclusive lock (creating the file when new) and return the
    open descriptor: the lock lasts while it stays open, and ends with the process."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateInUse(
            f"{p} is in use by another gridsched (it holds the file's lock); stop that one, "
            "or give this one its own state file (--db or [daemon] state_dir)"
        ) from None
    return fd


def claim_site(path: str | Path, site: str, adopt: bool = False) -> str | None:
    """Record ``site`` as the state file's owner, or check it is: raises :class:`OtherSite`
    when another site made the file, unless ``adopt`` (a renamed site) re-labels it.
    Returns the previous owner when it was re-labelled, else None."""
    con = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS site_identity ("
            "id INTEGER PRIMARY KEY CHECK (id = 1), site TEXT NOT NULL, claimed_at REAL NOT NULL)"
        )
        row = con.execute("SELECT site FROM site_identity WHERE id = 1").fetchone()
        if row is not None and row[0] == site:
            return None
        if row is not None and not adopt:
            raise OtherSite(
                f"{path} belongs to site {row[0]!r}, this configuration is {site!r}: give this "
                "site its own state file (--db or [daemon] state_dir); if it is the same site "
                "renamed, start once with --adopt-state"
            )
        con.execute(
            "INSERT INTO site_identity(id, site, claimed_at) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET site = excluded.site, claimed_at = excluded.claimed_at",
            (site, time.time()),
        )
        return None if row is None else str(row[0])
    finally:
        con.close()
