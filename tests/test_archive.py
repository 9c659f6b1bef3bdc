"""Archiving old decision-log records: nothing lost, the chain provable across files."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import sqlite3
import threading
from collections.abc import Awaitable
from pathlib import Path

import pytest

from scheduler.audit.archive import ArchiveError, archive, check_file, check_sequence
from scheduler.audit.store import Store
from scheduler.cli.main import main
from tests.support.wait import until

T0 = 1_786_000_000.0  # 2026-08-06


def fill(
    db: Path, n: int, first_at: float = T0, every_s: float = 60.0, together: bool = False
) -> None:
    """``n`` records a minute apart (every third a signal), one commit each; ``together``:
    the same records in the same order, committed as the writer groups them (a test whose
    point is not the file's history, at a fraction of the fsyncs: 2,000 commits took 28 s
    on a loaded host)."""

    def one(store: Store, i: int) -> Awaitable[object]:
        at = first_at + i * every_s
        if i % 3:
            payload: dict[str, object] = {"import_kw": 100.0 + i, "events": []}
            return store.record("telemetry", payload, at)
        ev = {"id": f"s{i}", "type": "curtail", "limit_kw": 5.0, "_ends_at": at + 60}
        return store.add_signals([ev], "simple", None, "{}", at + 60, at)

    async def go() -> None:
        store = Store(db)
        store.start()
        try:
            if together:  # tasks queue their writes in the order they are created
                await asyncio.gather(*(one(store, i) for i in range(n)))
            for i in range(0 if together else n):
                await one(store, i)
        finally:
            store.close()

    asyncio.run(go())


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_archive_moves_old_records_and_the_chain_is_proved_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    fill(db, 300, together=True)  # the archive's proof is per record, not per commit
    a1, a2 = tmp_path / "2026-q1.jsonl.gz", tmp_path / "2026-q2.jsonl"

    done = archive(db, T0 + 100 * 60, a1, chunk=7)  # records at T0 .. T0 + 99 min
    assert (done.records, done.first_seq, done.last_seq) == (100, 1, 100)
    v = Store(db).verify()
    assert v.ok and v.from_seq == 101 and v.records == 200 and v.archived_to == (str(a1),)
    with gzip.open(a1, "rt") as f:
        assert sum(1 for _ in f) == 101  # header and 100 records

    assert main(["audit", "archive", "--db", str(db), "--before", iso(T0 + 250 * 60),
                 "--out", str(a2)]) == 0  # fmt: skip
    assert "archived 150 records (101-250" in capsys.readouterr().out
    anchor = Store(db).anchor()
    assert anchor.seq == 250
    # the archives, in any order, lead up to where the database's chain begins
    assert len(check_sequence([a2, a1], Store(db))) == 2
    assert main(["audit", "verify", "--db", str(db), "--archive", str(a2),
                 "--archive", str(a1)]) == 0  # fmt: skip
    assert "intact, 50 records from record 251, continuing the archives" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert "from record 251 (1-250 archived to" in capsys.readouterr().out

    # one archive left out: the proof says which records it lacks
    with pytest.raises(ArchiveError, match="starts at record 101 and does not follow the first"):
        check_sequence([a2], Store(db))

    # export over the whole period, with the archives: every record once, in order
    out = tmp_path / "evidence.csv"
    assert main(["audit", "export", "--db", str(db), "--from", iso(T0 - 60),
                 "--to", iso(T0 + 400 * 60), "--out", str(out), "--archive", str(a1),
                 "--archive", str(a2)]) == 0  # fmt: skip
    seqs = [int(r["seq"]) for r in csv.DictReader(out.open())]
    assert seqs == list(range(1, 301))
    # without them the export says where the rest is
    assert main(["audit", "export", "--db", str(db), "--from", iso(T0 - 60),
                 "--to", iso(T0 + 400 * 60), "--out", str(out)]) == 0  # fmt: skip
    assert "pass them with --archive" in capsys.readouterr().err
    assert [int(r["seq"]) for r in csv.DictReader(out.open())] == list(range(251, 301))


def test_the_newest_record_stays_and_the_daemon_chains_on(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    fill(db, 20)
    done = archive(db, T0 + 1e9, tmp_path / "all.jsonl")
    assert (done.records, done.last_seq) == (19, 19)
    fill(db, 5, first_at=T0 + 10_000)  # a restarted daemon appends after record 20
    v = Store(db).verify()
    assert v.ok and v.from_seq == 20 and v.records == 6
    assert check_sequence([tmp_path / "all.jsonl"], Store(db))
    assert archive(db, T0, tmp_path / "none.jsonl").records == 0  # nothing that old left
    assert not (tmp_path / "none.jsonl").exists()


def test_tampered_or_cut_archives_are_caught(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    fill(db, 50)
    a = tmp_path / "a.jsonl"
    archive(db, T0 + 30 * 60, a)
    lines = a.read_text().splitlines()

    rec = json.loads(lines[12])
    payload = json.loads(rec["payload"])
    payload["import_kw"] /= 2  # the measured import at a DR event, made to look smaller
    rec["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:12], json.dumps(rec), *lines[13:]]) + "\n")
    with pytest.raises(ArchiveError, match="BROKEN at record 12: hash does not match"):
        check_sequence([bad], Store(db))

    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ArchiveError, match="holds 29 records; its header says 30"):
        check_file(cut)

    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"format": "something else"}\n')
    with pytest.raises(ArchiveError, match=r"junk\.jsonl:1: not a gridsched-audit-archive"):
        check_file(junk)
    junk.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ArchiveError, match=r"junk\.jsonl:2: not JSON"):
        check_file(junk)
    junk.write_text(lines[0] + "\n" + lines[1].replace('"seq": 1', '"seq": "one"') + "\n")
    with pytest.raises(ArchiveError, match=r"junk\.jsonl:2: record lacks or garbles .*'one'"):
        check_file(junk)


def test_nothing_is_archived_from_a_broken_chain_or_over_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    fill(db, 30)
    exists = tmp_path / "exists.jsonl"
    exists.write_text("keep me\n")
    with pytest.raises(ArchiveError, match="never overwritten"):
        archive(db, T0 + 1e9, exists)
    assert exists.read_text() == "keep me\n"

    with sqlite3.connect(db) as con:
        con.execute("UPDATE log SET payload = '{}' WHERE seq = 7")
    assert main(["audit", "archive", "--db", str(db), "--before", iso(T0 + 1e9),
                 "--out", str(tmp_path / "x.jsonl")]) == 1  # fmt: skip
    assert "broken at record 7" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 30


def test_archiving_while_the_daemon_writes(tmp_path: Path) -> None:
    """The daemon's store keeps appending (its own writer thread and connection) while
    another process's archive deletes in chunks: every record is in the file or the
    database, once, and the chain holds across them."""
    db = tmp_path / "state.db"
    fill(db, 2000, together=True)
    # in order: record i at its minute, as one commit each would have it
    assert [(seq, at) for seq, at, *_ in Store(db).records(0, T0 + 1e6)] == [
        (i + 1, T0 + i * 60.0) for i in range(2000)
    ]
    a = tmp_path / "a.jsonl"
    written: list[int] = []

    async def daemon(stop: threading.Event) -> None:
        store = Store(db)
        store.start()
        try:
            i = 0
            while not stop.is_set() or i < 200:
                written.append(await store.record("telemetry", {"i": i}, T0 + 1e6 + i))
                i += 1
        finally:
            store.close()

    stop = threading.Event()

    async def both() -> None:
        task = asyncio.create_task(daemon(stop))
        await until(lambda: written, what="the daemon writing")  # the archive starts mid-stream
        done = await asyncio.to_thread(archive, db, T0 + 1500 * 60, a, 100)
        stop.set()
        await task
        assert done.records == 1500

    asyncio.run(both())
    assert len(written) >= 200 and written == list(range(2001, 2001 + len(written)))
    v = Store(db).verify()
    assert v.ok and v.from_seq == 1501 and v.records == 500 + len(written)
    check_sequence([a], Store(db))


def test_an_interrupted_archive_is_whole_and_the_next_run_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped between its delete chunks (Ctrl-C, a crash), an archive leaves its last
    records in both the file and the database: nothing lost, the chain still proved, and
    the next run deletes the rest before going on."""
    import scheduler.audit.archive as mod

    db = tmp_path / "state.db"
    fill(db, 100)
    real = mod._delete

    def stopped(db_: str, file: str, first: int, last: int, chunk: int, start: int | None = None):  # type: ignore[no-untyped-def]
        real(db_, file, first, first + 24, chunk, start)  # three chunks of 10 land
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "_delete", stopped)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with pytest.raises(KeyboardInterrupt):
        archive(db, T0 + 60 * 60, a, chunk=10)  # records 1-60
    monkeypatch.setattr(mod, "_delete", real)
    v = Store(db).verify()
    assert v.ok and v.from_seq == 26 and v.records == 75
    lines = check_sequence([a], Store(db))
    assert "records 26-60 are also still in the database" in lines[-1]
    out = tmp_path / "evidence.csv"  # records in both places are exported once
    export = ["audit", "export", "--db", str(db), "--from", iso(T0 - 60),
              "--to", iso(T0 + 200 * 60), "--out", str(out)]  # fmt: skip
    assert main([*export, "--archive", str(a)]) == 0
    assert [int(r["seq"]) for r in csv.DictReader(out.open())] == list(range(1, 101))

    done = archive(db, T0 + 80 * 60, b)
    assert (done.first_seq, done.last_seq) == (61, 80)
    v = Store(db).verify()
    assert v.ok and v.from_seq == 81 and v.records == 20
    assert len(check_sequence([b, a], Store(db))) == 2


def test_a_directory_of_archives_by_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the systemd timer runs: records older than an age into a directory, files
    named by their records; verify and export take the directory."""
    import time

    db = tmp_path / "state.db"
    now = time.time()
    fill(db, 60, first_at=now - 100.5 * 86400, every_s=86400)  # one a day from 100.5 days ago
    arch = tmp_path / "archive"
    base = ["audit", "archive", "--db", str(db), "--out-dir", str(arch)]
    assert main([*base, "--older-than", "70d"]) == 0
    assert main([*base, "--older-than", "50d"]) == 0
    assert main([*base, "--older-than", "50d"]) == 0  # nothing new: no file
    assert "no record before" in capsys.readouterr().out.splitlines()[-1]
    names = sorted(p.name for p in arch.iterdir())
    assert names == [
        "gridsched-audit-000000001-000000031.jsonl.gz",
        "gridsched-audit-000000032-000000051.jsonl.gz",
    ]
    assert main(["audit", "verify", "--db", str(db), "--archive", str(arch)]) == 0
    assert "continuing the archives" in capsys.readouterr().out
    out = tmp_path / "all.csv"
    assert main(["audit", "export", "--db", str(db), "--from", iso(now - 200 * 86400),
                 "--to", iso(now), "--archive", str(arch), "--out", str(out)]) == 0  # fmt: skip
    assert [int(r["seq"]) for r in csv.DictReader(out.open())] == list(range(1, 61))
    assert main([*base, "--older-than", "soon"]) == 2
    assert "--older-than" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["audit", "verify", "--db", str(db), "--archive", str(empty)]) == 1
    assert "no archive" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["verify", "export", "archive"])
def test_a_mistyped_database_is_named_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Opening a missing file would create an empty database whose chain "verifies" and
    exports nothing: an operator proving a DR event would believe the evidence is gone."""
    db = tmp_path / "stat.db"
    extra = {
        "verify": [],
        "export": ["--from", "2026-08-01T00:00:00Z", "--to", "2026-08-02T00:00:00Z"],
        "archive": ["--older-than", "90d", "--out-dir", str(tmp_path / "a")],
    }[command]
    assert main(["audit", command, "--db", str(db), *extra]) == 2
    assert f"{db}: no such database" in capsys.readouterr().err
    assert not db.exists()


def test_a_signal_in_force_keeps_its_record_in_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon checks each signals row against its chained record on restart: archiving
    stops before the record of a signal still in force, and the signal stays enforced."""
    db = tmp_path / "state.db"
    fill(db, 30)  # records 1-30; signals every 3rd record, each over a minute later

    async def forever() -> None:
        store = Store(db)
        store.start()
        ev = {"id": "held", "type": "curtail", "limit_kw": 7.0}  # until cancelled
        await store.add_signals([ev], "simple", None, "{}", 9e9, T0 + 30 * 60)
        for i in range(10):
            await store.record("telemetry", {"i": i}, T0 + (31 + i) * 60)
        store.close()

    asyncio.run(forever())
    done = archive(db, T0 + 1e6, tmp_path / "a.jsonl")
    assert (done.first_seq, done.last_seq) == (1, 30)  # record 31 holds 'held'
    header = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert header["checkpoint"]["seq"] == 41
    store = Store(db)
    assert store.verify().ok
    assert [s["id"] for s in store.signals(include_ended_after=T0 + 1e6)] == ["held"]
    witness = f"{header['checkpoint']['seq']}:{header['checkpoint']['hash']}"
    assert main(["audit", "verify", "--db", str(db), "--expect-head", witness]) == 0


def test_a_missing_head_file_is_said_without_a_record_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state file copied without its head file (docs/operations.md's copy to a scratch
    directory): the refusal names what is missing, not 'broken at record None'."""
    db = tmp_path / "state.db"
    fill(db, 5)
    Path(f"{db}.head").unlink()
    assert main(["audit", "archive", "--db", str(db), "--before", iso(T0 + 1e9),
                 "--out", str(tmp_path / "x.jsonl")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "None" not in err and "head file" in err and "nothing archived" in err, err
    assert not (tmp_path / "x.jsonl").exists()


def test_nothing_to_archive_behind_a_signal_in_force_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docs walk (session 23): with every old record behind a signal still in force,
    `audit archive` said "(the newest always stays)", not the reason."""
    db = tmp_path / "state.db"

    async def go() -> None:
        store = Store(db)
        store.start()
        ev = {"id": "held", "type": "curtail", "limit_kw": 7.0}  # until cancelled
        await store.add_signals([ev], "simple", None, "{}", 9e9, T0)
        for i in range(5):
            await store.record("telemetry", {"i": i}, T0 + (1 + i) * 60)
        store.close()

    asyncio.run(go())
    later = iso(T0 + 1e6)
    assert (
        main(
            [
                "audit",
                "archive",
                "--db",
                str(db),
                "--before",
                later,
                "--out",
                str(tmp_path / "a.jsonl"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "signal still in force" in out and "record 1" in out and "newest" not in out, out


def test_an_expect_head_that_is_no_checkpoint_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 (what was asked cannot be done as written), not 1 (the chain is broken)."""
    db = tmp_path / "state.db"
    fill(db, 3)
    assert main(["audit", "verify", "--db", str(db), "--expect-head", "nonsense"]) == 2
    assert "is not SEQ:HASH" in capsys.readouterr().err


def test_an_expected_head_in_the_archived_records_is_checked_against_the_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newcomer's walk of the docs (session 25, D1): a witness whose record had been
    archived (any witness over 90 days old, with the shipped weekly timer) passed
    ``audit verify --expect-head`` with "hash chain intact", exit 0, whatever its hash,
    with ``--archive`` or without. It is now checked against the archive's record, and
    without the archives it cannot be checked: said, exit 2, never "intact"."""
    db = tmp_path / "state.db"
    fill(db, 30)
    store = Store(db)
    h10 = store.hash_at(10)
    store.close()
    done = archive(db, T0 + 20 * 60 + 1, tmp_path / "a.jsonl")
    assert done.last_seq >= 10
    wrong = f"10:{'0' * 64}"
    right = f"10:{h10}"
    arch = ["--archive", str(tmp_path / "a.jsonl")]
    assert main(["audit", "verify", "--db", str(db), "--expect-head", wrong, *arch]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "record 10" in out and "intact, " not in out, out
    assert main(["audit", "verify", "--db", str(db), "--expect-head", right, *arch]) == 0
    assert "the expected head, record 10, matches" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", str(db), "--expect-head", right]) == 2
    said = capsys.readouterr()
    assert "archived" in said.err and "--archive" in said.err, said
    assert "intact" not in said.out, said.out
