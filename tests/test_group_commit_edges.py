"""Group commit's edges that mutating ``scheduler/audit/group_commit.py`` showed no test
checked: writes still queued when the store closes, closing twice, and a checkpoint that
falls behind the writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from scheduler.audit.group_commit import GroupCommit
from scheduler.audit.store import Store
from tests.support.wait import until
from tests.test_store_group_commit import _Chain


def test_writes_queued_when_the_store_closes_are_committed_and_answered(
    tmp_path: Path,
) -> None:
    """Accepted means stored: ``close`` commits what is queued behind the batch being
    written and answers each caller, rather than dropping the tail."""
    db = tmp_path / "state.db"

    async def go() -> list[int]:
        store = Store(db)
        store.start()
        tasks = [asyncio.ensure_future(store.record("telemetry", {"i": i})) for i in range(200)]
        await asyncio.sleep(0)  # one turn of the loop: each task has queued its write
        store.close()
        return await asyncio.wait_for(asyncio.gather(*tasks), 10.0)

    assert sorted(asyncio.run(go())) == list(range(1, 201))
    v = Store(db).verify()
    assert v.ok and v.records == 200, v


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    chain = _Chain(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    async def go() -> None:
        commits.start(asyncio.get_running_loop())
        await commits.write(lambda con: con.execute("INSERT INTO t VALUES (1)"))
        commits.close()
        commits.close()
        assert not commits.running

    asyncio.run(go())
    con = sqlite3.connect(tmp_path / "t.db")
    assert con.execute("SELECT n FROM t").fetchall() == [(1,)]
    con.close()


class _SlowCheckpoint(_Chain):
    """The first checkpoint blocks until the test releases it (a slow fsync of the head
    file), so commits pile up behind it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stuck = threading.Event()
        self.release = threading.Event()

    def committed(self, rows: int) -> Callable[[], bool]:
        return lambda: self.seq == rows

    def checkpoint(self, seq: int, digest: str) -> None:
        if not self.stuck.is_set():
            self.stuck.set()
            self.release.wait(30)
        super().checkpoint(seq, digest)


def test_commits_that_pile_up_behind_a_slow_checkpoint_are_all_answered(
    tmp_path: Path,
) -> None:
    """While the checkpoint thread waits on the head file, the writer goes on committing;
    once it catches up, one checkpoint covers those batches and every caller hears its
    write landed: none is dropped or left waiting."""
    chain = _SlowCheckpoint(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def fn(con: sqlite3.Connection) -> int:
            con.execute("INSERT INTO t VALUES (?)", (n,))
            chain.seq += 1
            return n

        return fn

    async def go() -> list[int]:
        loop = asyncio.get_running_loop()
        commits.start(loop)
        try:
            calls = [asyncio.ensure_future(commits.write(insert(0)))]
            await loop.run_in_executor(None, chain.stuck.wait, 30)
            for batch in range(1, 6):  # five more batches, each committed before the next
                for n in range(batch * 3 - 2, batch * 3 + 1):
                    calls.append(asyncio.ensure_future(commits.write(insert(n))))
                await until(chain.committed(batch * 3 + 1), what=f"batch {batch} committed")
            assert not any(c.done() for c in calls)  # none answered before its checkpoint
            chain.release.set()
            return list(await asyncio.wait_for(asyncio.gather(*calls), 10.0))
        finally:
            chain.release.set()
            commits.close()

    assert asyncio.run(go()) == list(range(16))
    assert chain.checkpoints[0] == 1 and chain.checkpoints[-1] == 16
