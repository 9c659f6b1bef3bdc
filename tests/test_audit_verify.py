"""``audit verify``'s own edges, each found by a mutant that no other test killed.

The tampering cases themselves are in ``tests/test_audit_chain.py``; these pin what the
verifier reports about a file SQLite itself finds inconsistent, and which time it judges
a signal row against.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from scheduler.audit.archive import archive
from scheduler.audit.chain import GENESIS, canonical, chain_hash, walk_chain
from scheduler.audit.store import Store, head_path
from tests.test_archive import T0, fill
from tests.test_audit_chain import build, build_v0, rehash_from


def test_an_index_that_disagrees_with_its_table_is_named_corrupt(tmp_path: Path) -> None:
    """Pages that read back fine (``quick_check`` at open passes) but an index that no
    longer matches its table: only ``integrity_check`` sees it, and verify names the file
    corrupt with SQLite's first five findings, not a broken chain."""
    db = tmp_path / "state.db"
    build(db, telemetry=10)
    _break_an_index(db)
    v = Store(db, migrate=False).verify()
    assert not v.ok and v.kind == "corrupt" and v.first_bad_seq is None, v
    assert v.reason.startswith("the database file is corrupt: row 1 missing from index log_at; "
                               "row 2 missing from index log_at"), v.reason  # fmt: skip
    assert v.reason.count("missing from index") == 5, v.reason  # SQLite's findings, capped
    assert v.records == 0 and [p.kind for p in v.problems] == ["corrupt"]


def test_a_forged_row_is_judged_in_force_at_the_time_given(tmp_path: Path) -> None:
    """A ``signals`` row no record wrote is named while it would be in force at ``now``
    (the daemon would enforce it); verify judges it at the time it is given, not the
    wall clock (a report on a past day must be repeatable)."""
    db = tmp_path / "state.db"
    build(db, telemetry=1)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES "
        '(\'forged\', 1000.0, \'simple\', \'{"id":"forged","type":"curtail"}\', 2000.0)'
    )
    con.commit()
    con.close()
    store = Store(db, migrate=False)
    v = store.verify(now=1500.0)
    assert not v.ok and (v.kind, v.first_bad_seq) == ("signal", None), v.problems
    assert "'forged' is in force but was written by no record" in v.reason
    assert store.verify(now=2500.0).ok  # over by then: nothing it could make the site do


# -- the chain's format: what archives and old logs were written with ----------------------


def test_the_chain_hash_is_the_documented_formula() -> None:
    """``sha256(prev | seq | at | kind | payload)``, as the store's docstring and every
    archive written so far have it: a change here would break every existing log."""
    prev = "ab" * 32
    want = hashlib.sha256(f"{prev}|7|1786000000.25|signal|{{}}".encode()).hexdigest()
    assert chain_hash(prev, 7, 1786000000.25, "signal", "{}") == want
    # the time as repr(): 0.1 + 0.2 is not 0.3, and the hash tells them apart
    assert chain_hash(GENESIS, 1, 0.1 + 0.2, "k", "") != chain_hash(GENESIS, 1, 0.3, "k", "")
    assert GENESIS == "0" * 64


def test_payloads_are_canonical_json() -> None:
    """Sorted keys, no spaces, anything else as its ``str``: the same payload always gives
    the same text, so the same hash."""
    when = datetime(2026, 8, 10, 17, 0, tzinfo=UTC)
    text = canonical({"b": 1, "a": [1.5, None], "é": "ü", "at": when})
    assert text == '{"a":[1.5,null],"at":"2026-08-10 17:00:00+00:00","b":1,"\\u00e9":"\\u00fc"}'


def _rows(n: int) -> list[tuple[int, float, str, str, str, str]]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        h = chain_hash(prev, seq, float(seq), "k", "{}")
        out.append((seq, float(seq), "k", "{}", prev, h))
        prev = h
    return out


def test_walk_chain_says_how_far_it_read_and_where_it_broke() -> None:
    rows = _rows(6)
    assert walk_chain(0, GENESIS, rows) == (6, None, "")
    assert walk_chain(2, rows[1][5], rows[2:]) == (4, None, "")  # from an archive anchor
    assert walk_chain(0, GENESIS, []) == (0, None, "")
    assert walk_chain(0, GENESIS, rows[:3] + rows[4:]) == (4, 4, "record 4 is missing (next is 5)")
    assert walk_chain(1, GENESIS, rows[1:]) == (1, 2, "prev does not match the record before")
    edited = [*rows[:2], (*rows[2][:3], '{"x":1}', *rows[2][4:]), *rows[3:]]
    assert walk_chain(0, GENESIS, edited) == (3, 3, "hash does not match the record's content")


def test_a_new_empty_store_verifies(tmp_path: Path) -> None:
    v = Store(tmp_path / "state.db").verify()
    assert v.ok and v.records == 0 and v.problems == () and v.from_seq == 1, v
    assert (v.kind, v.reason, v.first_bad_seq, v.notes) == ("", "", None, ())
    assert v.schema_version == 2 and v.archived_to == ()


def test_after_an_archive_the_checkpoints_past_it_still_count(tmp_path: Path) -> None:
    """The head file keeps the checkpoints of archived records (their proof is the
    archive): they are passed over, and the ones after the anchor are checked, so a tail
    cut or a re-hash after an archive is still named."""
    db = tmp_path / "state.db"
    fill(db, 40)
    archive(db, T0 + 20 * 60, tmp_path / "old.jsonl")  # records 1-20
    assert Store(db).anchor().seq == 20 and Store(db).verify().ok
    cut = tmp_path / "cut.db"
    shutil.copyfile(db, cut)
    shutil.copyfile(head_path(db), head_path(cut))
    con = sqlite3.connect(cut)
    con.execute("DELETE FROM log WHERE seq > 35")
    con.commit()
    con.close()
    v = Store(cut, migrate=False).verify()
    assert (v.kind, v.first_bad_seq) == ("truncated", 36), v.problems
    assert "records 36-40 are missing" in v.reason
    con = sqlite3.connect(db)
    con.execute("UPDATE log SET at = at + 1 WHERE seq = 30")
    rehash_from(con, 30)
    con.commit()
    con.close()
    v = Store(db, migrate=False).verify()
    assert (v.kind, v.first_bad_seq) == ("rehashed", 30), v.problems


def test_two_tamperings_at_once_are_both_named(tmp_path: Path) -> None:
    """A record deleted in the middle does not stop the checkpoints after it from being
    checked: the cut tail is named too."""
    db = tmp_path / "state.db"
    build(db, telemetry=30)  # records 1-33, a checkpoint each
    con = sqlite3.connect(db)
    con.execute("DELETE FROM log WHERE seq = 20 OR seq > 30")
    con.commit()
    con.close()
    v = Store(db, migrate=False).verify()
    assert [(p.kind, p.seq) for p in v.problems] == [("missing", 20), ("truncated", 31)]


def test_a_witness_far_apart_names_the_span_it_cannot_split(tmp_path: Path) -> None:
    """A store of schema 0 has no head file: only a checkpoint kept elsewhere
    (``--expect-head``) guards it, and a re-hash under it can be anywhere up to it."""
    db = tmp_path / "state.db"
    build_v0(db)  # records 1-6
    con = sqlite3.connect(db)
    (h6,) = con.execute("SELECT hash FROM log WHERE seq = 6").fetchone()
    con.execute("UPDATE log SET at = at + 1 WHERE seq = 3")
    rehash_from(con, 3)
    con.commit()
    con.close()
    store = Store(db, migrate=False)
    v = store.verify(expect_head=(6, h6))
    assert (v.kind, v.first_bad_seq) == ("rehashed", 1), v.problems
    assert v.reason.startswith("records 1-6: record 6's hash differs from the expected head")
    assert any("schema version 0" in n for n in v.notes)
    assert store.verify().ok  # without the witness nothing tells


def _break_an_index(db: Path) -> None:
    """An index whose definition no longer matches its table: ``integrity_check`` names
    it, ``quick_check`` (at open) does not."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX log_at ON log(kind)' "
                "WHERE name = 'log_at'")  # fmt: skip
    con.commit()
    con.close()


def test_a_corrupt_file_still_says_where_its_archives_are(tmp_path: Path) -> None:
    """The records before the anchor are in the archives; a corrupt database must still
    say which, and from which record it was meant to go on (to rebuild from them)."""
    db = tmp_path / "state.db"
    fill(db, 40)
    archive(db, T0 + 20 * 60, tmp_path / "old.jsonl")  # records 1-20
    _break_an_index(db)
    v = Store(db, migrate=False).verify()
    assert v.ok is False and v.kind == "corrupt", v
    assert v.from_seq == 21 and v.archived_to == (str(tmp_path / "old.jsonl"),), v


def _set_version(db: Path, version: int) -> None:
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {version}")
    con.commit()
    con.close()


def test_a_store_of_schema_1_is_checked_against_its_head_file(tmp_path: Path) -> None:
    """Schema 1 (before ``webhook_ids.body_sha256``) already wrote the head file: a store
    left at version 1 is checked against it like the current one, and a missing head file
    is named, not passed over as for schema 0."""
    db = tmp_path / "state.db"
    build(db, telemetry=3)
    _set_version(db, 1)
    v = Store(db, migrate=False).verify()
    assert v.ok and v.schema_version == 1 and v.notes == () and v.checkpoints > 0, v
    head_path(db).unlink()
    v = Store(db, migrate=False).verify()
    assert [(p.kind, p.seq) for p in v.problems] == [("checkpoint", None)], v.problems
    assert v.notes == ()  # no "schema version 0" excuse for it
    assert v.reason == (
        f"head file {head_path(db)} is missing: the chain's head cannot be checked (it was "
        "deleted or not copied with the database)"
    )


def test_what_verify_says_of_schema_0_with_and_without_a_head_file(tmp_path: Path) -> None:
    """Schema 0 had no head file: verify says what it could not check (a note, not a
    problem). A head file beside a store at version 0 means the version was set back."""
    db = tmp_path / "v0.db"
    build_v0(db)
    v = Store(db, migrate=False).verify()
    assert v.ok and v.schema_version == 0 and v.problems == (), v
    assert v.notes == (
        "schema version 0: no head file yet, so a cut tail or a re-hash cannot be checked "
        "(the daemon upgrades it on its next start)",
    )
    db = tmp_path / "state.db"
    build(db, telemetry=3)
    _set_version(db, 0)
    v = Store(db, migrate=False).verify()
    assert not v.ok and v.schema_version == 0 and v.notes == (), v
    assert [(p.kind, p.seq) for p in v.problems] == [("checkpoint", None)], v.problems
    assert v.reason == (
        f"schema version 0 beside head file {head_path(db)}, which only version 1 writes: "
        "the version was set back (to skip the head file's checks?)"
    )
