"""Group commit's edges that mutating ``scheduler/audit/group_commit.py`` showed no test
checked: writes still queued when the store closes, and closing twice."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from scheduler.audit.group_commit import GroupCommit
from scheduler.audit.store import Store
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
