"""Group commit's edges that mutating ``scheduler/audit/group_commit.py`` showed no test
checked: writes still queued when the store closes, closing twice, and a checkpoint that
falls behind the writer."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from scheduler.audit.chain import StoreError
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

    insert = chain.insert

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


def test_the_store_threads_are_named_and_do_not_hold_the_process_open(tmp_path: Path) -> None:
    """The two threads a store starts are named (a thread dump or ``py-spy`` shows which is
    the writer and which the checkpoints) and are daemon threads: a process that stops
    without closing its store is not held open by them."""
    before = set(threading.enumerate())

    async def go() -> dict[str, bool]:
        store = Store(tmp_path / "state.db")
        store.start()
        try:
            await store.record("telemetry", {"i": 1})
            return {t.name: t.daemon for t in set(threading.enumerate()) - before}
        finally:
            store.close()

    assert asyncio.run(go()) == {"store-writer": True, "store-checkpoints": True}


def test_a_process_that_exits_without_closing_its_store_exits(tmp_path: Path) -> None:
    """The behaviour the daemon flag is for, in a real interpreter: at exit Python joins
    every non-daemon thread, and the writer waits on its queue forever."""
    code = (
        "import asyncio, sys\n"
        "from scheduler.audit.store import Store\n"
        "async def go():\n"
        "    s = Store(sys.argv[1]); s.start()\n"
        "    print(await s.record('telemetry', {'i': 1}), flush=True)\n"
        "asyncio.run(go())\n"  # no close()
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "state.db")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


class _CountedCommits(_Chain):
    """Records the head after each commit: one entry per transaction."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.heads: list[int] = []

    def head(self) -> tuple[int, str]:
        self.heads.append(self.seq)
        return super().head()


def test_a_transaction_holds_at_most_1000_writes(tmp_path: Path) -> None:
    """The writer takes at most 1,000 queued writes into one transaction, so one burst
    does not hold the write lock, or its callers' answers, for an unbounded time."""
    chain = _CountedCommits(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)
    started = threading.Event()
    release = threading.Event()

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def fn(con: sqlite3.Connection) -> int:
            if n == 0:  # the first write holds the writer while the burst queues
                started.set()
                release.wait(30)
            con.execute("INSERT INTO t VALUES (?)", (n,))
            chain.seq += 1
            return n

        return fn

    async def go() -> list[int]:
        loop = asyncio.get_running_loop()
        commits.start(loop)
        try:
            calls = [asyncio.ensure_future(commits.write(insert(0)))]
            await loop.run_in_executor(None, started.wait, 30)
            calls += [asyncio.ensure_future(commits.write(insert(n))) for n in range(1, 2002)]
            await asyncio.sleep(0)  # one turn of the loop: each task has queued its write
            release.set()
            return list(await asyncio.wait_for(asyncio.gather(*calls), 30.0))
        finally:
            release.set()
            commits.close()

    assert asyncio.run(go()) == list(range(2002))
    assert chain.heads == [1, 1001, 2001, 2002]


def test_closing_while_the_checkpoints_lag_answers_every_batch(tmp_path: Path) -> None:
    """``close`` comes while the checkpoint thread is still on an earlier batch, with more
    committed batches waiting for it: it finishes them all, checkpointed and answered,
    before it stops (a caller whose write committed is never left unanswered)."""
    chain = _SlowCheckpoint(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    insert = chain.insert

    async def go() -> list[int]:
        loop = asyncio.get_running_loop()
        commits.start(loop)
        calls = [asyncio.ensure_future(commits.write(insert(0)))]
        await loop.run_in_executor(None, chain.stuck.wait, 30)
        for n in range(1, 4):  # three batches committed behind the stuck checkpoint
            calls.append(asyncio.ensure_future(commits.write(insert(n))))
            await until(chain.committed(n + 1), what=f"write {n} committed")
        closing = loop.run_in_executor(None, commits.close)

        # the close sentinel reaches the checkpoint thread behind the three batches (read
        # from the queue itself: no public state says the writer has handed it over)
        def handed_over() -> bool:
            with commits._settling.mutex:
                return None in commits._settling.queue

        await until(handed_over, what="close handed over")
        chain.release.set()
        await asyncio.wait_for(closing, 30.0)
        return list(await asyncio.wait_for(asyncio.gather(*calls), 10.0))

    try:
        assert asyncio.run(go()) == [0, 1, 2, 3]
    finally:
        chain.release.set()
        commits.close()
    assert chain.checkpoints == [1, 4]


def test_a_writer_that_cannot_open_the_database_fails_every_write(tmp_path: Path) -> None:
    """The writer thread opens its own connection; when SQLite refuses it (the folder is
    gone), each write fails with the reason, the ones queued and the ones after, instead
    of waiting forever: the API answers 503 (send it again), never silence."""
    folder = tmp_path / "state"
    folder.mkdir()
    chain = _Chain(folder / "t.db")
    shutil.rmtree(folder)
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    async def go() -> list[BaseException | None]:
        commits.start(asyncio.get_running_loop())
        try:
            first = [commits.write(lambda con: con.execute("SELECT 1")) for _ in range(3)]
            got = await asyncio.wait_for(asyncio.gather(*first, return_exceptions=True), 30.0)
            later = commits.write(lambda con: con.execute("SELECT 1"))
            got.append(
                (await asyncio.wait_for(asyncio.gather(later, return_exceptions=True), 30.0))[0]
            )
            return [g if isinstance(g, BaseException) else None for g in got]
        finally:
            commits.close()

    errors = asyncio.run(go())
    # queued before the writer failed: SQLite's error; after: the store's, naming it
    assert all(isinstance(e, sqlite3.Error | StoreError) for e in errors[:3]), errors
    assert all("unable to open database file" in str(e) for e in errors), errors
    assert isinstance(errors[3], StoreError)
    assert str(errors[3]).startswith("the store's writer stopped: OperationalError: "), errors


class _FailingCheckpoint(_Chain):
    """The first checkpoint raises what the store's own handling does not expect."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failed = False

    def checkpoint(self, seq: int, digest: str) -> None:
        if not self.failed:
            self.failed = True
            raise ValueError("checkpoint refused")
        super().checkpoint(seq, digest)


def test_a_checkpoint_that_raises_answers_its_callers_and_the_next_ones_go_on(
    tmp_path: Path,
) -> None:
    """A caller hears that its write landed only once a checkpoint covers it: when the
    checkpoint raises, the callers it would have covered hear why (they send again), and
    the thread goes on answering the writes after it."""
    chain = _FailingCheckpoint(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    insert = chain.insert

    async def go() -> tuple[BaseException | int, int]:
        commits.start(asyncio.get_running_loop())
        try:
            first = asyncio.gather(commits.write(insert(1)), return_exceptions=True)
            (got,) = await asyncio.wait_for(first, 30.0)
            return got, await asyncio.wait_for(commits.write(insert(2)), 30.0)
        finally:
            commits.close()

    first, second = asyncio.run(go())
    assert isinstance(first, ValueError) and str(first) == "checkpoint refused"
    assert second == 2 and chain.checkpoints == [2]


def test_writes_queued_before_the_writer_fails_hear_sqlites_reason(tmp_path: Path) -> None:
    """The writes already queued when the writer's connection is refused are each
    answered with SQLite's own error (drained from the queue, none left waiting)."""
    chain = _Chain(tmp_path / "t.db")
    queued = threading.Event()

    def connect() -> sqlite3.Connection:
        queued.wait(30)  # the writes are queued first
        return sqlite3.connect(tmp_path / "gone" / "t.db")  # no such folder: refused

    commits = GroupCommit(connect, chain.head, chain.reload, chain.checkpoint)

    async def go() -> list[object]:
        commits.start(asyncio.get_running_loop())
        try:
            calls = [
                asyncio.ensure_future(commits.write(lambda con: con.execute("SELECT 1")))
                for _ in range(3)
            ]
            await asyncio.sleep(0)  # one turn of the loop: each task has queued its write
            queued.set()
            return list(
                await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30.0)
            )
        finally:
            queued.set()
            commits.close()

    got = asyncio.run(go())
    assert [type(e) for e in got] == [sqlite3.OperationalError] * 3, got
    assert all(str(e) == "unable to open database file" for e in got), got


def test_a_batch_whose_rollback_fails_is_answered_and_later_writes_refused(
    tmp_path: Path,
) -> None:
    """A write that breaks the connection itself (here it closes it, as a failing disk
    would leave it unusable): the rollback of its batch fails too, the writer stops, and
    every caller of that batch hears why; the writes after are refused by name."""
    chain = _Chain(tmp_path / "t.db")
    commits = GroupCommit(chain.connect, chain.head, chain.reload, chain.checkpoint)

    def breaks(con: sqlite3.Connection) -> None:
        con.close()
        raise ValueError("the disk went away")

    async def go() -> list[object]:
        commits.start(asyncio.get_running_loop())
        try:
            first = asyncio.gather(commits.write(breaks), return_exceptions=True)
            got = list(await asyncio.wait_for(first, 30.0))
            later = asyncio.gather(
                commits.write(lambda con: con.execute("SELECT 1")), return_exceptions=True
            )
            return got + list(await asyncio.wait_for(later, 30.0))
        finally:
            commits.close()

    broken, later = asyncio.run(go())
    assert isinstance(broken, sqlite3.ProgrammingError), broken
    assert "closed database" in str(broken)
    assert isinstance(later, StoreError)
    assert str(later) == f"the store's writer stopped: ProgrammingError: {broken}"
