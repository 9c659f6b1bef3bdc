"""The store's group commit on its own, over a real SQLite file: concurrent writes share
transactions, one write that raises is rolled back alone and its caller hears why, and
no caller hears that its write landed before the head it committed was checkpointed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.audit.group_commit import GroupCommit


class _Chain:
    """A stand-in for the store's chain head: a counter of rows, checkpointed in a list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        self.checkpoints: list[int] = []
        self.lock = threading.Lock()
        con = self.connect()
        con.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        con.close()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def head(self) -> tuple[int, str]:
        return self.seq, f"h{self.seq}"

    def reload(self, con: sqlite3.Connection) -> None:
        self.seq = int(con.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    def checkpoint(self, seq: int, digest: str) -> None:
        with self.lock:
            self.checkpoints.append(seq)

    def insert(self, n: int) -> Callable[[sqlite3.Connection], int]:
        """A write of row ``n`` that counts itself in the head; answers ``n``."""

        def fn(con: sqlite3.Connection) -> int:
            con.execute("INSERT INTO t VALUES (?)", (n,))
            self.seq += 1
            return n

        return fn


def test_a_failing_write_is_rolled_back_alone_and_answers_wait_for_the_checkpoint(
    tmp_path: Path,
) -> None:
    chain = _Chain(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    def insert(n: int) -> Callable[[sqlite3.Connection], tuple[int, int]]:
        def fn(con: sqlite3.Connection) -> tuple[int, int]:
            if n == 13:
                con.execute("INSERT INTO t VALUES (?)", (n,))
                raise ValueError("write 13 refused")  # after a row: the savepoint undoes it
            con.execute("INSERT INTO t VALUES (?)", (n,))
            chain.seq += 1
            return n, chain.seq

        return fn

    async def one(n: int) -> int:
        value, seq = await commits.write(insert(n))
        with chain.lock:  # answered only once a checkpoint covers this write
            assert chain.checkpoints and chain.checkpoints[-1] >= seq
        return int(value)

    async def go() -> list[int | BaseException]:
        commits.start(asyncio.get_running_loop())
        try:
            return await asyncio.gather(*(one(n) for n in range(40)), return_exceptions=True)
        finally:
            commits.close()

    results = asyncio.run(go())
    bad = results[13]
    assert isinstance(bad, ValueError) and "13 refused" in str(bad)
    assert [r for i, r in enumerate(results) if i != 13] == [n for n in range(40) if n != 13]
    con = chain.connect()
    rows = [int(n) for (n,) in con.execute("SELECT n FROM t ORDER BY n")]
    con.close()
    assert rows == [n for n in range(40) if n != 13]
    # many writes, fewer commits: checkpoints only ever move forward, ending at the head
    assert chain.checkpoints == sorted(chain.checkpoints) and chain.checkpoints[-1] == 39
    assert len(chain.checkpoints) <= 39


def test_start_needs_the_loop_that_callers_are_answered_on(tmp_path: Path) -> None:
    chain = _Chain(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)
    assert not commits.running
    commits.close()  # never started: nothing to stop

    async def go() -> None:
        commits.start(asyncio.get_running_loop())
        assert commits.running
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await commits.write(lambda con: con.execute("INSERT INTO nope VALUES (1)"))
        commits.close()
        assert not commits.running

    asyncio.run(go())
