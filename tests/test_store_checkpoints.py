"""The store's checkpoints of the chain's head, each pinned after mutating
``scheduler/audit/store.py`` showed no audit test checked it: one checkpoint per new head
(not per commit or restart), the head a crash left unchecked checkpointed at the next
start, no false alarm on a plain restart, the exact words and log line of a real one, and
a checkpoint that cannot be written said in status while the records stay stored.

Real SQLite and head files in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from scheduler.audit.store import Store, head_path
from tests.test_audit_chain import build

KEY = b"k" * 32


def _lines(db: Path) -> list[str]:
    return head_path(db).read_text().splitlines()


def _records(db: Path, n: int) -> None:
    async def go() -> None:
        store = Store(db, key=KEY)
        store.start()
        try:
            for i in range(n):
                await store.record("telemetry", {"i": i})
        finally:
            store.close()

    asyncio.run(go())


def test_each_new_head_is_checkpointed_once(tmp_path: Path) -> None:
    """After each commit the head file's last checkpoint is the chain's head; a restart
    with nothing new, or a write that adds no record, adds no line."""
    db = tmp_path / "s.db"
    _records(db, 3)
    store = Store(db, key=KEY)
    head = store.head()
    assert head is not None and (head.seq, head.hash) == (3, store.hash_at(3))
    lines = _lines(db)
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]  # each its own commit

    async def idle() -> None:
        s = Store(db, key=KEY)
        s.start()
        try:
            await s.put_openadr_programs({"p": {"x": 1}})  # committed, but no record
        finally:
            s.close()

    asyncio.run(idle())
    assert _lines(db) == lines


def test_a_plain_restart_raises_no_alarm(tmp_path: Path) -> None:
    """The head file agrees with the database after a clean stop: the next start says
    nothing is wrong, and its writes are checkpointed on from there."""
    db = tmp_path / "s.db"
    _records(db, 2)

    async def go() -> tuple[object, object, int]:
        store = Store(db, key=KEY)
        store.start()
        try:
            seq = await store.record("telemetry", {"after": "restart"})
            return store.head_mismatch, store.audit_status()["error"], seq
        finally:
            store.close()

    assert asyncio.run(go()) == (None, None, 3)
    assert Store(db, key=KEY).verify().ok


def test_the_head_a_crash_left_unchecked_is_checkpointed_at_start(tmp_path: Path) -> None:
    """A crash between a commit and its checkpoint leaves the head file one record behind
    (not tampering: nothing was answered); the next start checkpoints the head before any
    write, from the first record on."""
    db = tmp_path / "s.db"
    _records(db, 1)
    head = head_path(db)
    assert len(_lines(db)) == 1
    head.write_text("")  # record 1's checkpoint never made it

    async def go() -> tuple[int, str] | None:
        store = Store(db, key=KEY)
        store.start()
        try:
            last = store.head()
            return None if last is None else (last.seq, last.hash)
        finally:
            store.close()

    assert asyncio.run(go()) == (1, Store(db, key=KEY).hash_at(1))
    assert Store(db, key=KEY).verify().ok


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        (
            "DELETE FROM log WHERE seq > 2",
            "the head file says the chain reached record 4, the database ends at 2: records "
            "were cut off (or an older copy was restored); `gridsched audit verify` names them",
        ),
        (
            "UPDATE log SET hash = lower(hex(zeroblob(32))) WHERE seq = 4",  # never the real one
            "record 4 differs from the head file's last checkpoint: records were edited and "
            "re-hashed; `gridsched audit verify` names them",
        ),
    ],
    ids=["cut", "rehashed"],
)
def test_a_start_on_a_chain_the_head_file_disagrees_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tamper: str, said: str
) -> None:
    """What the operator reads in status and in the log, word for word, naming the file."""
    db = tmp_path / "s.db"
    _records(db, 4)
    con = sqlite3.connect(db)
    con.execute(tamper)
    con.commit()
    con.close()

    async def go() -> object:
        store = Store(db, key=KEY)
        with caplog.at_level(logging.ERROR, logger="scheduler.audit.store"):
            store.start()
        try:
            return store.audit_status()["error"]
        finally:
            store.close()

    assert asyncio.run(go()) == said
    logged = [r.getMessage() for r in caplog.records if r.name == "scheduler.audit.store"]
    assert logged == [f"{db}: {said}"]


def _fd_of(path: Path) -> int:
    """The descriptor this process holds open on ``path`` (the head file's writer)."""
    fds = [
        int(fd)
        for fd in os.listdir("/proc/self/fd")
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve())
    ]
    assert len(fds) == 1, fds
    return fds[0]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_a_checkpoint_that_cannot_be_written_is_said_and_the_record_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The head file stops taking writes (its descriptor swapped for a read-only one, as
    a disk gone read-only would): the record is committed and its caller answered, and
    status and the log say which checkpoint is missing. Once the file takes writes
    again, the next commit's checkpoint clears the error."""
    db = tmp_path / "s.db"
    head = head_path(db)

    async def go() -> tuple[str | None, object, str | None, int]:
        store = Store(db, key=KEY)
        store.start()
        try:
            await store.record("telemetry", {"i": 1})
            fd = _fd_of(head)
            saved = os.dup(fd)
            ro = os.open(head, os.O_RDONLY)
            os.dup2(ro, fd)
            os.close(ro)
            with caplog.at_level(logging.ERROR, logger="scheduler.audit.store"):
                seq = await store.record("telemetry", {"i": 2})
            failed, status = store.head_error, store.audit_status()["error"]
            os.dup2(saved, fd)
            os.close(saved)
            await store.record("telemetry", {"i": 3})
            return failed, status, store.head_error, seq
        finally:
            store.close()

    failed, status, after, seq = asyncio.run(go())
    assert seq == 2
    assert failed == "checkpoint of record 2 not written: [Errno 9] Bad file descriptor"
    assert status == failed and after is None
    logged = [r.getMessage() for r in caplog.records if r.name == "scheduler.audit.store"]
    assert logged == [f"{db}: {failed}"]
    store = Store(db, key=KEY)
    last = store.head()
    assert last is not None and last.seq == 3 and store.verify().records == 3


def test_a_copy_of_a_built_store_checkpoints_on(tmp_path: Path) -> None:
    """The audit tests' own fixture file, copied with its head file and written on: the
    new records' checkpoint follows the copied ones."""
    src = tmp_path / "built.db"
    build(src, telemetry=3)
    db = tmp_path / "s.db"
    shutil.copyfile(src, db)
    shutil.copyfile(head_path(src), head_path(db))
    before = Store(db).head()
    assert before is not None

    async def go() -> int:
        store = Store(db)
        store.start()
        try:
            return int(await store.record("telemetry", {"copy": True}))
        finally:
            store.close()

    seq = asyncio.run(go())
    after = Store(db).head()
    assert seq == before.seq + 1 and after is not None and after.seq == seq
    assert Store(db).verify().ok


def test_a_store_opens_where_its_folders_do_not_exist_yet_and_writes_unstarted(
    tmp_path: Path,
) -> None:
    """A new site's state path may be several folders deep: they are made. A write
    before :meth:`Store.start` starts the writer itself rather than waiting forever, and
    after close the head is read back from the file."""
    db = tmp_path / "var" / "lib" / "gridsched" / "state.db"

    async def go() -> tuple[int, object]:
        store = Store(db, key=KEY)
        try:
            seq = int(await asyncio.wait_for(store.record("telemetry", {"i": 1}), 30.0))
        finally:
            store.close()
        last = store.head()
        return seq, None if last is None else last.seq

    assert asyncio.run(go()) == (1, 1)
