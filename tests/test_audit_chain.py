"""The audit chain proves completeness: every tampering tried is named by ``audit verify``.

The chain (``log``) proves each record unchanged and in place; the head file beside the
database (``state.db.head``, one fsync'd line per commit, each line hash-linked to the one
before) proves no record after it was cut off and nothing was re-hashed; the ``signals``
table the daemon enforces on restart is checked against the chained records that wrote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.audit.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    chain_hash,
    head_path,
)
from scheduler.cli.main import main
from tests.test_startup import _clean_env, refusal, run_cli

SIGNALS = 3  # records 1-3: two curtails, then a cancel of the second
TELEMETRY = 60  # records 4-63, one commit (and one checkpoint) each


def build(db: Path, telemetry: int = TELEMETRY, together: bool = False) -> None:
    """Three signal records, then ``telemetry`` records, one commit each (``together``:
    as many as the writer groups)."""

    async def go() -> None:
        store = Store(db)
        store.start()
        try:
            for ev in (
                {"id": "cap", "type": "curtail", "limit_kw": 100.0, "_ends_at": 4e11},
                {"id": "gone", "type": "curtail", "limit_kw": 50.0, "_ends_at": 4e11},
                {"id": "gone", "type": "cancel"},
            ):
                stored, _ = await store.add_signals([ev], "simple", None, "{}", 9e9)
                assert stored
            if together:
                await asyncio.gather(
                    *(store.record("telemetry", {"i": i}) for i in range(telemetry))
                )
            for i in range(0 if together else telemetry):
                await store.record("telemetry", {"i": i})
        finally:
            store.close()

    asyncio.run(go())


def rehash_from(con: sqlite3.Connection, seq: int) -> None:
    """What an attacker with write access does after an edit: recompute every hash after."""
    row = con.execute("SELECT hash FROM log WHERE seq = ?", (seq - 1,)).fetchone()
    prev = "0" * 64 if row is None else row[0]
    rows = con.execute(
        "SELECT seq, at, kind, payload FROM log WHERE seq >= ? ORDER BY seq", (seq,)
    ).fetchall()
    for s, at, kind, payload in rows:
        h = chain_hash(prev, s, at, kind, payload)
        con.execute("UPDATE log SET prev = ?, hash = ? WHERE seq = ?", (prev, h, s))
        prev = h


def _sql(*statements: str) -> Callable[[sqlite3.Connection, Path], None]:
    def run(con: sqlite3.Connection, _db: Path) -> None:
        for s in statements:
            con.execute(s)

    return run


def _edit_rehash(con: sqlite3.Connection, _db: Path) -> None:
    con.execute("UPDATE log SET payload = '{\"i\":999}' WHERE seq = 20")
    rehash_from(con, 20)


def _edit_first_rehash(con: sqlite3.Connection, _db: Path) -> None:
    con.execute("UPDATE log SET at = at + 1 WHERE seq = 1")
    rehash_from(con, 1)


def _delete_rehash(con: sqlite3.Connection, _db: Path) -> None:
    con.execute("DELETE FROM log WHERE seq = 20")
    con.execute("UPDATE log SET seq = seq - 1 WHERE seq > 20")
    rehash_from(con, 20)


def _edit_signal(con: sqlite3.Connection, _db: Path) -> None:
    (event,) = con.execute("SELECT event FROM signals WHERE id = 'cap'").fetchone()
    raised = {**json.loads(event), "limit_kw": 99999.0}
    con.execute("UPDATE signals SET event = ? WHERE id = 'cap'", (json.dumps(raised),))


def _unlink_head(_con: sqlite3.Connection, db: Path) -> None:
    head_path(db).unlink()


def _edit_head_line(_con: sqlite3.Connection, db: Path) -> None:
    path = head_path(db)
    lines = path.read_text().splitlines()
    line = json.loads(lines[30])
    line["hash"] = "f" * 64
    lines[30] = json.dumps(line, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")


def _cut_head_line(_con: sqlite3.Connection, db: Path) -> None:
    path = head_path(db)
    lines = path.read_text().splitlines()
    del lines[30]
    path.write_text("\n".join(lines) + "\n")


TAMPERING = {
    # name: (tamper, kind named, first bad record, words the reason holds)
    "edit": (_sql("UPDATE log SET payload = '{\"i\":999}' WHERE seq = 20"), "edited", 20, "hash"),
    "delete in the middle": (_sql("DELETE FROM log WHERE seq = 20"), "missing", 20, "missing"),
    "delete the tail": (
        _sql("DELETE FROM log WHERE seq > 55"),
        "truncated",
        56,
        "records 56-63 are missing",
    ),
    "delete the last one": (
        _sql("DELETE FROM log WHERE seq = 63"),
        "truncated",
        63,
        "reached record 63, the database ends at 62",
    ),
    "edit the time": (_sql("UPDATE log SET at = at + 1 WHERE seq = 20"), "edited", 20, "hash"),
    "edit the kind": (_sql("UPDATE log SET kind = 'plan' WHERE seq = 20"), "edited", 20, "hash"),
    "replace the hash": (
        _sql(f"UPDATE log SET hash = '{'e' * 64}' WHERE seq = 20"),
        "edited",
        20,
        "hash",
    ),
    "replace the last hash": (
        _sql(f"UPDATE log SET hash = '{'e' * 64}' WHERE seq = 63"),
        "edited",
        63,
        "hash",
    ),
    "replace the link": (
        _sql(f"UPDATE log SET prev = '{'e' * 64}' WHERE seq = 20"),
        "edited",
        20,
        "prev",
    ),
    "swap two records": (
        _sql(
            "UPDATE log SET seq = -20 WHERE seq = 20",
            "UPDATE log SET seq = 20 WHERE seq = 21",
            "UPDATE log SET seq = 21 WHERE seq = -20",
        ),
        "edited",
        20,
        "prev",
    ),
    "delete the first": (_sql("DELETE FROM log WHERE seq = 1"), "missing", 1, "record 1 is"),
    "delete and renumber": (
        _sql("DELETE FROM log WHERE seq = 20", "UPDATE log SET seq = seq - 1 WHERE seq > 20"),
        "edited",
        20,
        "prev",
    ),
    "delete every record": (_sql("DELETE FROM log"), "truncated", 1, "records 1-63 are missing"),
    "edit and re-hash": (
        _edit_rehash,
        "rehashed",
        20,
        "record 20: record 20's hash differs from checkpoint line 20: a record was edited",
    ),
    "edit the first and re-hash": (_edit_first_rehash, "rehashed", 1, "record 1's hash"),
    "delete, renumber and re-hash": (
        _delete_rehash,
        "rehashed",
        20,
        "edited or removed and the chain re-hashed after it",
    ),
    "edit a signal": (_edit_signal, "signal", 1, "'cap'"),
    "delete a signal": (_sql("DELETE FROM signals WHERE id = 'cap'"), "signal", 1, "'cap'"),
    "un-cancel a signal": (
        _sql("UPDATE signals SET cancelled_at = NULL WHERE id = 'gone'"),
        "signal",
        3,
        "'gone'",
    ),
    "forge a signal": (
        _sql(
            "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES "
            '(\'forged\', 1.0, \'simple\', \'{"id":"forged","type":"curtail"}\', 4e11)'
        ),
        "signal",
        None,
        "'forged'",
    ),
    "delete the head file": (_unlink_head, "checkpoint", None, "head file"),
    "reset the schema version and cut the tail": (
        _sql("PRAGMA user_version = 0", "DELETE FROM log WHERE seq > 55"),
        "checkpoint",
        None,
        "set back",
    ),
    "edit a head file line": (_edit_head_line, "checkpoint", None, "line 31"),
    "cut a head file line": (_cut_head_line, "checkpoint", None, "line 31"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database and its head file, built once; each test tampers with its own copy."""
    db = tmp_path_factory.mktemp("built") / "state.db"
    build(db)
    assert not Path(str(db) + "-wal").exists()  # closed: the whole database is in the file
    return db


@pytest.mark.parametrize("name", list(TAMPERING))
def test_every_tampering_is_named_by_audit_verify(
    name: str, built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    shutil.copyfile(built, db)
    shutil.copyfile(head_path(built), head_path(db))
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert "intact, 63 records" in capsys.readouterr().out
    tamper, kind, seq, words = TAMPERING[name]
    con = sqlite3.connect(db)
    tamper(con, db)
    con.commit()
    con.close()
    v = Store(db, migrate=False).verify()
    assert not v.ok
    assert (v.kind, v.first_bad_seq) == (kind, seq), v.problems
    assert words in v.reason, v.reason
    assert main(["audit", "verify", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and words in out, out


def test_a_tampered_signal_is_never_enforced_as_tampered(tmp_path: Path) -> None:
    """The daemon reads its signals through the chain: a cap raised in the table is enforced
    as the chained record says, a deleted row from its record; a forged cap row, which can
    only lower the site's load, is enforced as the row has it and named (fail safe: a
    tampered file must not lift a cap; an inserted one harms nothing committed)."""
    db = tmp_path / "state.db"
    build(db, telemetry=2)
    con = sqlite3.connect(db)
    _edit_signal(con, db)
    _sql(
        "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES "
        '(\'forged\', 1.0, \'simple\', \'{"id":"forged","type":"curtail","limit_kw":1}\','
        " 4e11)",
        "UPDATE signals SET cancelled_at = NULL WHERE id = 'gone'",
    )(con, db)
    con.commit()
    store = Store(db)
    enforced = {s["id"]: s for s in store.signals(include_ended_after=0.0)}
    assert set(enforced) == {"cap", "forged"}  # 'gone' stays cancelled
    assert enforced["cap"]["limit_kw"] == 100.0 and enforced["forged"]["limit_kw"] == 1
    assert {p.seq for p in store.signal_problems} == {1, 3, None}
    con.execute("DELETE FROM signals WHERE id = 'cap'")
    con.commit()
    enforced = {s["id"]: s for s in Store(db).signals(include_ended_after=0.0)}
    assert enforced["cap"]["limit_kw"] == 100.0  # a deleted curtail is still in force


def test_an_external_witness_catches_what_both_files_can_hide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker who can write the database and the head file can cut both; a checkpoint
    copied elsewhere (from /v1/status or an archive header) still names the cut."""
    db = tmp_path / "state.db"
    build(db)
    head = Store(db).head()
    assert head is not None and head.seq == SIGNALS + TELEMETRY
    con = sqlite3.connect(db)
    con.execute("DELETE FROM log WHERE seq > 55")
    con.commit()
    con.close()
    lines = head_path(db).read_text().splitlines()
    keep = [ln for ln in lines if json.loads(ln)["seq"] <= 55]
    head_path(db).write_text("\n".join(keep) + "\n")
    assert Store(db, migrate=False).verify().ok  # both cut the same: the files alone agree
    witness = f"{head.seq}:{head.hash}"
    assert main(["audit", "verify", "--db", str(db), "--expect-head", witness]) == 1
    assert "record 63" in capsys.readouterr().out


def test_a_signed_head_names_a_rewritten_head_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an audit key, each checkpoint carries an HMAC: a head file rewritten by someone
    without the key is named even when its lines link."""
    monkeypatch.setenv("GRIDSCHED_AUDIT_KEY", "k" * 32)
    db = tmp_path / "state.db"
    build(db, telemetry=5)
    head = Store(db).head()
    assert head is not None and head.mac
    assert Store(db, migrate=False).verify().ok
    # rewrite the whole head file consistently (links recomputed) with a wrong key
    monkeypatch.setenv("GRIDSCHED_AUDIT_KEY", "x" * 32)
    from scheduler.audit import store as store_mod

    lines = [json.loads(ln) for ln in head_path(db).read_text().splitlines()]
    out, link = [], store_mod.GENESIS
    for ln in lines:
        body = {"seq": ln["seq"], "hash": ln["hash"], "at": ln["at"], "link": link}
        body["mac"] = store_mod.sign_checkpoint(b"x" * 32, body)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        out.append(text)
        link = hashlib.sha256(text.encode()).hexdigest()
    head_path(db).write_text("\n".join(out) + "\n")
    monkeypatch.setenv("GRIDSCHED_AUDIT_KEY", "k" * 32)
    v = Store(db, migrate=False).verify()
    assert not v.ok and v.kind == "checkpoint" and "audit key" in v.reason


# -- schema versions ------------------------------------------------------------------------

V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_at ON log(at);
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY, received_at REAL NOT NULL, source TEXT NOT NULL, event TEXT NOT NULL,
    ends_at REAL NOT NULL, cancelled_at REAL);
CREATE TABLE IF NOT EXISTS webhook_ids (
    id TEXT PRIMARY KEY, signal_ids TEXT NOT NULL, keep_until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS archived (
    file TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL, archived_at REAL NOT NULL);
"""


def build_v0(db: Path) -> None:
    """A database as the code before schema versions wrote it (commit 8150742): the same
    tables, ``user_version`` 0, no head file; records and signal rows written as it did."""
    con = sqlite3.connect(db)
    con.executescript(V0_SCHEMA)
    prev = "0" * 64
    ev = {"id": "cap", "type": "curtail", "limit_kw": 100.0, "_ends_at": 4e11}
    payload = {"source": "simple", "webhook_id": "w1", "events": [ev], "raw": "{}"}
    rows = [("signal", payload)] + [("telemetry", {"i": i}) for i in range(5)]
    for seq, (kind, body) in enumerate(rows, 1):
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        at = 1.7e9 + seq
        h = chain_hash(prev, seq, at, kind, text)
        con.execute("INSERT INTO log VALUES (?,?,?,?,?,?)", (seq, at, kind, text, prev, h))
        prev = h
    con.execute(
        "INSERT INTO signals VALUES ('cap', ?, 'simple', ?, 4e11, NULL)",
        (1.7e9 + 1, json.dumps(ev, sort_keys=True, separators=(",", ":"))),
    )
    con.execute("INSERT INTO webhook_ids VALUES ('w1', '[\"cap\"]', 9e9)")
    con.commit()
    con.close()


def test_a_database_of_the_previous_schema_opens_verifies_and_is_upgraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    build_v0(db)
    # verify alone changes nothing: it says what it could not check
    assert main(["audit", "verify", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "intact, 6 records" in out and "schema version 0" in out
    assert not head_path(db).exists()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 0

    async def go() -> None:
        store = Store(db)  # what the daemon does: upgrade, then go on appending
        store.start()
        await store.record("telemetry", {"i": 99})
        store.close()

    asyncio.run(go())
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    v = Store(db, migrate=False).verify()
    assert v.ok and v.records == 7 and v.checkpoints >= 2, v
    assert [s["id"] for s in Store(db).signals(0.0)] == ["cap"]
    con = sqlite3.connect(db)
    con.execute("DELETE FROM log WHERE seq = 7")
    con.commit()
    v = Store(db, migrate=False).verify()  # the upgrade's checkpoint guards the old records
    assert (v.kind, v.first_bad_seq) == ("truncated", 7)


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    build(db, telemetry=1)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    with pytest.raises(StoreError, match="newer gridsched") as exc:
        Store(db)
    assert str(exc.value).startswith(f"{db}: schema version {SCHEMA_VERSION + 1} "), exc.value


def test_an_upgrade_with_an_audit_key_signs_its_first_checkpoint(tmp_path: Path) -> None:
    """The upgrade from schema 0 starts the head file with a checkpoint of the old head:
    with an audit key set, that checkpoint is signed like every later one, so a head
    file rewritten over the upgraded records is named."""
    db = tmp_path / "state.db"
    build_v0(db)
    key = b"upgrade-key" * 3
    Store(db, key=key).close()
    lines = head_path(db).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["seq"] == 6
    assert json.loads(lines[0])["mac"] is not None
    assert Store(db, key=key, migrate=False).verify().ok
    v = Store(db, key=b"another-key" * 3, migrate=False).verify()
    assert not v.ok and v.kind == "checkpoint", v


# -- corrupt files ----------------------------------------------------------------------------


def _corrupt_page(db: Path) -> None:
    """Overwrite the middle of a b-tree page of the log, past the header."""
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(min(size - 4096, 3 * 4096))
        f.write(b"\xa5" * 4096)


def _corrupt_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(b"this is no sqlite")


@pytest.mark.parametrize("corrupt", [_corrupt_page, _corrupt_header])
def test_a_corrupt_database_is_named_at_open_and_by_verify(
    corrupt: Callable[[Path], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    build(db, telemetry=400, together=True)
    Path(str(db) + "-wal").unlink(missing_ok=True)
    corrupt(db)
    with pytest.raises(StoreError) as exc:
        Store(db)
    said = str(exc.value)
    assert said.startswith(f"{db}: the database is corrupt or not a gridsched database ("), said
    assert said.endswith("); restore it from a backup, or move it aside to start a new one")
    assert main(["audit", "verify", "--db", str(db)]) == 1
    out = capsys.readouterr()
    assert "corrupt" in out.out + out.err and "Traceback" not in out.out + out.err


def test_gridsched_run_on_a_corrupt_database_exits_with_one_line(tmp_path: Path) -> None:
    """``gridsched run`` by its main in this process (test_startup.py's ``run_cli``: the
    refusal comes before serving, and a crash would fail the test), not an interpreter
    started for one line (9 s on a loaded host)."""
    db = tmp_path / "state.db"
    build(db, telemetry=1)
    _corrupt_header(db)
    site = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "simulated-site.toml"
    res = run_cli(site, db, _clean_env())
    text = refusal(res)  # one line or a few, each "gridsched: error: ", no traceback
    assert res.returncode not in (0, 1), res.stderr  # a start-up refusal, not a crash
    assert "Traceback" not in res.stderr and str(db) in res.stderr
    assert "corrupt" in text


def test_verify_on_a_file_that_is_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 1000)
    assert main(["audit", "verify", "--db", str(path)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "not a database" in out.out + out.err


# -- a full disk, through the daemon ------------------------------------------------------------


def test_a_signal_a_really_full_disk_refuses_is_503_and_half_written_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own writer meets SQLITE_FULL (``max_page_count`` on its connection: no
    page more), the API answers 503, and nothing of the signal is anywhere: no row, no
    record, no webhook id, so the sender's retry (same webhook id) is stored once the disk
    has room again."""
    import base64

    import httpx

    from scheduler.service.api import create_app
    from tests.support.daemon import running
    from tests.support.webhook import signed_headers
    from tests.test_dispatch import _daemon

    secret = "whsec_" + base64.b64encode(b"audit-chain-test-secret").decode()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", secret)
    d = _daemon(tmp_path, 1000.0)
    ids = [f"dr-{i}" for i in range(40)]  # a list: more than a page of rows and record
    body = json.dumps(
        [{"id": i, "type": "curtail", "start": "2020-01-01T00:00:00Z", "limit_kw": 0} for i in ids]
    ).encode()

    def limit(pages: int) -> Callable[[sqlite3.Connection], None]:
        def fn(con: sqlite3.Connection) -> None:
            con.execute(f"PRAGMA max_page_count = {pages}")

        return fn

    async def go() -> None:
        async with running(d):
            (pages,) = d.store._read.execute("PRAGMA page_count").fetchone()
            await d.store.write(limit(int(pages)))  # the writer's own connection: full
            records = d.store.verify().records
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
                r = await c.post(
                    "/v1/signals", content=body, headers=signed_headers(secret, "msg-1", body)
                )
                assert r.status_code == 503, r.text
                assert "full" in r.json()["error"]
                assert not set(ids) & {e.id for e in d.active_events()}
                con = sqlite3.connect(d.store.path)
                assert con.execute("SELECT COUNT(*) FROM signals").fetchone() == (0,)
                assert con.execute("SELECT COUNT(*) FROM webhook_ids").fetchone() == (0,)
                v = d.store.verify()
                assert v.ok and v.records == records, v.problems  # no record half-written
                await d.store.write(limit(1_000_000))  # room again
                r = await c.post(
                    "/v1/signals", content=body, headers=signed_headers(secret, "msg-1", body)
                )
                assert r.status_code == 202, r.text  # the retry is stored, not a duplicate
            assert set(ids) <= {e.id for e in d.active_events()}
            assert sorted(s["id"] for s in d.store.signals()) == sorted(ids)
            assert d.store.verify().ok

    asyncio.run(go())


def test_a_head_line_torn_by_a_crash_is_noted_then_dropped(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    shutil.copyfile(built, db)
    shutil.copyfile(head_path(built), head_path(db))
    with open(head_path(db), "a") as f:
        f.write('{"at":1.0,"hash":"ab')  # the write a power cut stopped halfway
    v = Store(db, migrate=False).verify()
    assert v.ok and any("cut short by a crash" in n for n in v.notes), v
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert "cut short by a crash" in capsys.readouterr().out

    async def go() -> None:
        store = Store(db)
        store.start()  # drops the torn line, then checkpoints on from the last whole one
        await store.record("telemetry", {"after": "crash"})
        store.close()

    asyncio.run(go())
    v = Store(db, migrate=False).verify()
    assert v.ok and not v.notes and v.head is not None and v.head.seq == 64, v


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"GRIDSCHED_AUDIT_KEY": "CHANGE_ME"}, "at least 16 bytes"),
        ({"GRIDSCHED_AUDIT_KEY": "short"}, "at least 16 bytes"),
        ({"GRIDSCHED_AUDIT_KEY_FILE": "/nonexistent/audit.key"}, "cannot read the audit key"),
    ],
)
def test_an_unusable_audit_key_is_refused_by_name(
    env: dict[str, str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreError, match=words) as exc:
        Store(tmp_path / "state.db")
    assert next(iter(env)) in str(exc.value)


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (_sql("DELETE FROM log WHERE seq > 55"), "cut off"),
        (_edit_rehash, "re-hashed"),
    ],
)
def test_a_start_on_a_cut_or_rehashed_chain_says_so_in_status(
    tamper: Callable[[sqlite3.Connection, Path], None],
    words: str,
    built: Path,
    tmp_path: Path,
) -> None:
    """The daemon opens the store and starts appending; the head file's disagreement is
    kept (not papered over by the next checkpoint) for /v1/status, and verify names it."""
    db = tmp_path / "state.db"
    shutil.copyfile(built, db)
    shutil.copyfile(head_path(built), head_path(db))
    con = sqlite3.connect(db)
    tamper(con, db)
    con.commit()
    con.close()

    async def go() -> dict[str, object]:
        store = Store(db)
        store.start()
        try:
            await store.record("telemetry", {"after": "tampering"})
            return store.audit_status()
        finally:
            store.close()

    status = asyncio.run(go())
    assert isinstance(status["error"], str) and words in status["error"]
    assert not Store(db, migrate=False).verify().ok
