"""Archiving the decision log: how long it takes, how big the file is, and how long each
delete transaction holds SQLite's write lock (what a running daemon's writes wait for).

A temporary database is filled with ``--records`` telemetry records (one per 15-second
poll, as the daemon writes them), then ``--archive`` of them are archived to a gzip file.

    .venv/bin/python benchmarks/audit_archive.py --records 200000 --archive 150000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scheduler.audit.archive as archive_mod  # noqa: E402
from benchmarks.measure import pct  # noqa: E402
from scheduler.audit.store import Store  # noqa: E402

T0 = 1.7e9
POLL_S = 15.0
PAYLOAD = {
    "asic_kw": 24310.5,
    "gpu_kw": 1180.25,
    "import_kw": 26811.0,
    "cap_kw": None,
    "events": [],
    "health": {"ok": 1000, "degraded": 0, "unreachable": 0},
}


async def fill(db: Path, n: int) -> None:
    store = Store(db)
    store.start()
    batch = 10_000

    def many(con: sqlite3.Connection, k0: int) -> None:
        for k in range(k0, min(n, k0 + batch)):
            store._append(con, "telemetry", PAYLOAD, T0 + k * POLL_S)

    try:
        for k0 in range(0, n, batch):
            await store.write(lambda con, k0=k0: many(con, k0))
    finally:
        store.close()


class TimedConnection:
    """Times each BEGIN ... COMMIT of the archive's delete chunks."""

    held: ClassVar[list[float]] = []

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self.t = 0.0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self.t = time.perf_counter()
        cur = self.con.execute(sql, *args)
        if sql == "COMMIT":
            TimedConnection.held.append(time.perf_counter() - self.t)
        return cur

    def close(self) -> None:
        self.con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--archive", type=int, default=150_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gridsched-archive-"))
    try:
        db = tmp / "state.db"
        t = time.perf_counter()
        asyncio.run(fill(db, args.records))
        print(
            f"filled {args.records} records in {time.perf_counter() - t:.1f} s; "
            f"database {db.stat().st_size / 1e6:.0f} MB"
        )
        t = time.perf_counter()
        v = Store(db).verify()
        print(f"verify: {v.records} records in {time.perf_counter() - t:.2f} s")

        real_connect = sqlite3.connect

        def connect(*a: Any, **k: Any) -> TimedConnection:
            return TimedConnection(real_connect(*a, **k))

        # only the archive module's connections are timed (the Store it opens is not)
        archive_mod.sqlite3 = SimpleNamespace(connect=connect)  # type: ignore[assignment]
        out = tmp / "archive.jsonl.gz"
        t = time.perf_counter()
        try:
            done = archive_mod.archive(db, T0 + args.archive * POLL_S, out)
        finally:
            archive_mod.sqlite3 = sqlite3
        took = time.perf_counter() - t
        held = sorted(TimedConnection.held)
        print(
            f"archive: {done.records} records in {took:.2f} s "
            f"({done.records / took:,.0f}/s, including the verify and the read-back); "
            f"file {out.stat().st_size / 1e6:.1f} MB"
        )
        print(
            f"delete transactions: {len(held)}, write lock held median "
            f"{pct(held, 0.5) * 1000:.0f} ms, max {held[-1] * 1000:.0f} ms"
        )
        v = Store(db).verify()
        assert v.ok and v.from_seq == done.last_seq + 1, v
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
