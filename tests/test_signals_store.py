"""The decision log's hash chain, signatures, device assignment."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.audit import signal_rows
from scheduler.audit.store import Store, head_path
from scheduler.service.daemon import assign
from scheduler.service.security import AuthError, RateLimiter, check_bearer, sign, verify_webhook

NOW = datetime(2026, 8, 10, 17, 0, tzinfo=UTC)


def test_group_commit_chain_and_tamper_evidence(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def go() -> None:
        store = Store(db)
        store.start()
        seqs = await asyncio.gather(*(store.record("telemetry", {"i": i}) for i in range(200)))
        assert sorted(seqs) == list(range(1, 201))
        stored, ids = await store.add_signals(
            [{"id": "a", "type": "curtail", "limit_kw": 5.0, "_ends_at": 4e11}],
            "simple",
            "w1",
            "{}",
            9e9,
        )
        again, ids2 = await store.add_signals(
            [{"id": "a", "type": "curtail"}], "simple", "w1", "{}", 9e9
        )
        assert stored and not again and ids == ids2 == ["a"]
        store.close()

    asyncio.run(go())
    store = Store(db)
    v = store.verify()
    assert v.ok and v.records == 201
    con = sqlite3.connect(db)
    con.execute("UPDATE log SET payload = '{\"i\":999}' WHERE seq = 57")
    con.commit()
    v = Store(db).verify()
    assert not v.ok and (v.kind, v.first_bad_seq) == ("edited", 57) and "hash" in v.reason
    con.execute("UPDATE log SET payload = '{\"i\":56}' WHERE seq = 57")  # put it back
    con.execute("DELETE FROM log WHERE seq = 58")
    con.commit()
    v = Store(db).verify()
    assert (v.kind, v.first_bad_seq) == ("missing", 58) and "record 58 is missing" in v.reason


def test_signatures_tokens_and_rate_limit() -> None:
    body = b'{"id":"x"}'
    h = {
        "webhook-id": "m1",
        "webhook-timestamp": "1000",
        "webhook-signature": sign("s2", "m1", 1000, body),
    }
    assert verify_webhook(["s1", "s2"], h, body, now=1100) == "m1"  # rotated secrets
    with pytest.raises(AuthError, match="allowed"):
        verify_webhook(["s2"], h, body, now=1400)
    h2 = {**h, "webhook-signature": "v1,bogus " + h["webhook-signature"]}
    assert verify_webhook(["s2"], h2, body, now=1000) == "m1"  # several signatures
    with pytest.raises(AuthError) as exc:
        check_bearer(["t"], "Bearer u", "reads")
    assert exc.value.status == 403
    rl = RateLimiter(rate=10, burst=2)
    assert rl.allow("a", 0.0) and rl.allow("a", 0.0) and not rl.allow("a", 0.0)
    assert rl.allow("a", 0.2)


def test_assign_keeps_devices_in_place() -> None:
    modes = {"a": "stock", "b": "stock", "c": "sleep", "d": "eco"}
    out = assign(["a", "b", "c", "d"], modes, {"stock": 1, "eco": 2})
    assert out["a"] == "stock" and out["d"] == "eco"
    assert sorted(out.values()) == ["eco", "eco", "sleep", "stock"]
    assert out["c"] == "sleep"  # an awake device moves before a sleeping one wakes


def test_ramp_batches_wake_ups_and_always_progresses() -> None:
    from scheduler.service.daemon import ramp_batch

    wakes = [(3.0, f"m{i}", "stock") for i in range(10)]  # 30 kW to bring back
    sheds = [(-2.0, "g0", "sleep")]
    # a full minute's worth (12 kW) after a long wait: 4 miners now, every decrease at once
    picked, tokens, deferred = ramp_batch(wakes + sheds, 0.0, 12.0, 5.0, 1e9)
    assert ("g0", "sleep") in picked and len(picked) == 5 and deferred == 6
    assert tokens == 0.0
    # 15 s later: 3 kW more, one more miner
    picked, tokens, deferred = ramp_batch(wakes[4:], tokens, 12.0, 0.25, 1e9)
    assert len(picked) == 1 and deferred == 5
    # a device larger than a minute's ramp still wakes once the bucket holds its step
    big = [(20.0, "big", "stock")]
    picked, tokens, _ = ramp_batch(big, 0.0, 12.0, 1.0, 1e9)
    assert picked == []
    picked, tokens, _ = ramp_batch(big, tokens, 12.0, 1.0, 1e9)
    assert picked == [("big", "stock")]
    # never above the cap: headroom 7 kW lets two 3 kW miners through, whatever the ramp
    picked, _, deferred = ramp_batch(wakes, 0.0, None, 1.0, 7.0)
    assert len(picked) == 2 and deferred == 8


def test_histogram_counts_are_cumulative_and_never_shrink() -> None:
    from scheduler.service.metrics import Histogram

    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.5, 2.0, 0.1):
        h.observe(v)
    samples = {(s.name, s.labels.get("le")): s.value for s in h.family("x_seconds", "doc").samples}
    assert samples[("x_seconds_bucket", "0.1")] == 2
    assert samples[("x_seconds_bucket", "1.0")] == 3
    assert samples[("x_seconds_bucket", "+Inf")] == 4 == samples[("x_seconds_count", None)]
    assert samples[("x_seconds_sum", None)] == pytest.approx(2.65)


def test_the_wal_stays_bounded_under_large_records(tmp_path: Path) -> None:
    """24 MB of command records (a 1,000-device dispatch writes ~150 kB) go through; the
    WAL is checkpointed as it goes and stays near SQLite's 4 MB limit."""
    db = tmp_path / "state.db"
    wal = Path(str(db) + "-wal")
    blob = {"outcomes": ["x" * 200] * 2500}  # ~0.5 MB of JSON per record
    largest = 0

    async def go() -> None:
        nonlocal largest
        store = Store(db)
        store.start()
        try:
            for _ in range(48):
                await store.record("commands", blob)
                largest = max(largest, wal.stat().st_size)
                await asyncio.sleep(0.05)
        finally:
            store.close()

    asyncio.run(go())
    assert 4 * 2**20 < largest < 12 * 2**20, largest
    assert Store(db).verify().ok


class SmallDisk(Store):
    """A store whose disk holds ``pages`` pages: SQLite itself answers SQLITE_FULL
    ("database or disk is full") once the file would grow past it, as on a full disk."""

    pages = 0

    def _connect(self) -> sqlite3.Connection:
        con = super()._connect()
        if self.pages:
            con.execute(f"PRAGMA max_page_count = {self.pages}")
        return con


def test_a_full_disk_loses_nothing_accepted_and_half_writes_nothing(tmp_path: Path) -> None:
    """Signals written while the disk fills: each one is either stored whole (its row, its
    webhook id and its chained record, and the head file covers it) or refused whole; the
    writer's rollback keeps the chain's head in step, so the writes after a refusal chain on."""
    db = tmp_path / "s.db"
    accepted: list[str] = []
    refused: list[str] = []

    async def go() -> None:
        store = SmallDisk(db)
        store.start()
        await store.record("telemetry", {"i": 0})
        store.close()
        (pages,) = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()
        SmallDisk.pages = int(pages) + 30
        store = SmallDisk(db)
        store.start()
        try:

            async def send(i: int) -> None:
                eid = f"s{i}"
                ev = {"id": eid, "type": "curtail", "limit_kw": 100.0 - i, "_ends_at": 4e11}
                try:
                    ok, _ = await store.add_signals(
                        [ev], "simple", f"w{i}", "x" * (1500 + 37 * i), 9e9
                    )
                    assert ok
                    accepted.append(eid)
                except sqlite3.OperationalError as exc:
                    assert "full" in str(exc)
                    refused.append(eid)

            for wave in range(8):  # batches that fit, then batches the disk refuses
                await asyncio.gather(*(send(wave * 10 + i) for i in range(10)))
            for i in range(80, 90):  # one at a time: what still fits after a refusal
                await send(i)
        finally:
            store.close()
            SmallDisk.pages = 0

    asyncio.run(go())
    assert accepted and refused, (accepted, refused)
    order = [int(i[1:]) for i in accepted]
    assert max(order) > min(int(i[1:]) for i in refused)  # writes after a refusal landed
    store = Store(db)
    v = store.verify()
    assert v.ok, v.problems
    assert v.records == 1 + len(accepted)
    assert {s["id"] for s in store.signals(0.0)} == set(accepted)
    con = sqlite3.connect(db)
    rows = {r[0] for r in con.execute("SELECT id FROM signals")}
    hooks = {r[0] for r in con.execute("SELECT id FROM webhook_ids")}
    chained = {
        ev["id"]
        for (p,) in con.execute("SELECT payload FROM log WHERE kind = 'signal'")
        for ev in json.loads(p)["events"]
    }
    assert rows == chained == set(accepted)
    assert hooks == {"w" + i[1:] for i in accepted}
    last = json.loads(head_path(db).read_text().splitlines()[-1])
    assert (last["seq"], last["hash"]) == (v.records, store.hash_at(v.records))


def test_one_bad_write_is_rolled_back_whole_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A write that fails after its first rows (an event whose end cannot be read, past a
    good one) leaves nothing: the savepoint rolls its rows back, while the writes grouped
    in the same commit land and chain on."""
    db = tmp_path / "s.db"

    async def go() -> list[object]:
        store = Store(db)
        store.start()
        good = {"id": "good", "type": "curtail", "limit_kw": 5.0, "_ends_at": 4e11}
        bad = {"id": "bad", "type": "curtail", "limit_kw": 5.0, "_ends_at": "soon"}
        try:
            done = await asyncio.gather(
                store.record("telemetry", {"i": 1}),
                store.add_signals([good, bad], "simple", "w-bad", "{}", 9e9),
                store.add_signals([{**good, "id": "ok"}], "simple", "w-ok", "{}", 9e9),
                store.record("telemetry", {"i": 2}),
                return_exceptions=True,
            )
            return list(done)
        finally:
            store.close()

    out = asyncio.run(go())
    assert isinstance(out[1], ValueError) and out[2] == (True, ["ok"])
    store = Store(db)
    v = store.verify()
    assert v.ok and v.records == 3, v.problems
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT id FROM signals")] == ["ok"]
    assert [r[0] for r in con.execute("SELECT id FROM webhook_ids")] == ["w-ok"]


def test_signals_read_while_signals_are_written_see_no_false_tampering(tmp_path: Path) -> None:
    """The signals table and the records it is checked against are read in one snapshot: a
    signal committed between the two reads is not taken for a row no record wrote."""
    db = tmp_path / "s.db"
    seen: list[str] = []

    async def go() -> None:
        store = Store(db)
        store.start()
        done = asyncio.Event()

        async def writer() -> None:
            for k in range(0, 300, 10):
                evs = [
                    {"id": f"s{i}", "type": "curtail", "limit_kw": 5.0, "_ends_at": 4e11}
                    for i in range(k, k + 10)
                ]
                await asyncio.gather(
                    *(store.add_signals([e], "simple", None, "{}", 9e9) for e in evs)
                )
            done.set()

        async def reader() -> None:
            while not done.is_set():
                store.signals()
                seen.extend(p.text for p in store.signal_problems)
                await asyncio.sleep(0)

        try:
            await asyncio.gather(writer(), reader())
        finally:
            store.close()

    asyncio.run(go())
    assert not seen, seen[:3]
    assert len(Store(db).signals()) == 300


def test_a_cancel_of_every_interval_of_an_openadr_event(tmp_path: Path) -> None:
    """``oadr:e1:*`` cancels every interval of event e1 and nothing else (not e10's, whose
    id shares the first characters), in the table and in the chain's replay; an interval
    un-cancelled in the file, or forged under the cancelled event, is named."""
    db = tmp_path / "s.db"
    ids = ["oadr:e1:0", "oadr:e1:1", "oadr:e10:0", "oadr:e2:0"]

    async def go() -> None:
        store = Store(db)
        store.start()
        try:
            for eid in ids:  # records 1-4
                ev = {"id": eid, "type": "curtail", "limit_kw": 5.0, "_ends_at": 4e11}
                await store.add_signals([ev], "openadr", None, "{}", 9e9, at=1000.0)
            cancel = [{"id": "oadr:e1:*", "type": "cancel"}]  # record 5
            await store.add_signals(cancel, "openadr", None, "{}", 9e9, at=2000.0)
            never = [{"id": "oadr:zz:*", "type": "cancel"}]  # record 6: an event never stored
            await store.add_signals(never, "openadr", None, "{}", 9e9, at=2100.0)
        finally:
            store.close()

    asyncio.run(go())
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT id, cancelled_at FROM signals")) == {
        "oadr:e1:0": 2000.0,
        "oadr:e1:1": 2000.0,
        "oadr:e10:0": None,
        "oadr:e2:0": None,
    }
    store = Store(db)
    assert [e["id"] for e in store.signals()] == ["oadr:e10:0", "oadr:e2:0"]
    assert store.verify(now=3000.0).ok
    con.execute("UPDATE signals SET cancelled_at = NULL WHERE id = 'oadr:e1:1'")
    for forged in ("oadr:e1:9", "oadr:e10:9"):
        con.execute(
            "INSERT INTO signals(id, received_at, source, event, ends_at) "
            "VALUES (?, 1000.0, 'openadr', '{}', 4e11)",
            (forged,),
        )
    con.commit()
    con.close()
    store = Store(db, migrate=False)
    v = store.verify(now=3000.0)
    assert [(p.kind, p.seq, p.text) for p in v.problems] == [
        ("signal", 5, "signals row 'oadr:e1:1' differs from record 5 in cancelled_at"),
        ("signal", 5, "signals row 'oadr:e1:9' is in force, but record 5 cancelled it"),
        (
            "signal",
            None,
            "signals row 'oadr:e10:9' is in force but was written by no record in the chain",
        ),
    ]
    # the daemon enforces the chain's version: still only e10's and e2's intervals, and
    # its reads (rows in force only) name the same rows
    assert [e["id"] for e in store.signals()] == ["oadr:e10:0", "oadr:e2:0"]
    assert [(p.kind, p.seq, p.text) for p in store.signal_problems] == [
        ("signal", 5, "signals row 'oadr:e1:1' is in force, but record 5 ended it"),
        ("signal", 5, "signals row 'oadr:e1:9' is in force, but record 5 cancelled it"),
        (
            "signal",
            None,
            "signals row 'oadr:e10:9' is in force but was written by no record in the chain",
        ),
    ]


def test_a_cancel_and_a_new_event_in_one_notification_are_both_applied(tmp_path: Path) -> None:
    """One delivery may cancel one signal and carry another (or cancel twice, or cancel an
    id never stored): every event of it counts, the first cancel's time stands, and the
    table and the chain's replay agree (no false tampering)."""
    db = tmp_path / "s.db"
    cap = {"id": "a", "type": "curtail", "limit_kw": 5.0, "_ends_at": 4e11}
    new = {"id": "b", "type": "curtail", "limit_kw": 7.0, "_ends_at": 5000.0}

    async def go() -> None:
        store = Store(db)
        store.start()
        try:
            await store.add_signals([cap], "simple", None, "{}", 9e9, at=1000.0)
            cancel = {"id": "a", "type": "cancel"}
            await store.add_signals([cancel, new], "simple", None, "{}", 9e9, at=2000.0)
            ghost = {"id": "ghost", "type": "cancel"}
            await store.add_signals([cancel, ghost], "simple", None, "{}", 9e9, at=3000.0)
        finally:
            store.close()

    asyncio.run(go())
    con = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in con.execute("SELECT id, cancelled_at, ends_at FROM signals")}
    con.close()
    assert rows == {"a": (2000.0, 4e11), "b": (None, 5000.0)}
    store = Store(db)
    assert store.verify(now=4000.0).ok
    assert [e["id"] for e in store.signals()] == ["b"]  # not cancelled (ended ones too)
    # b is in force until 5000 and not at 5000: the record that wrote it is kept till then
    assert store.in_force_seqs(4999.0) == [2] and store.in_force_seqs(5000.0) == []


def _curtail(eid: str, limit_kw: float) -> dict[str, object]:
    return {"id": eid, "type": "curtail", "limit_kw": limit_kw, "_ends_at": 4e11}


def _four_signal_records(db: Path) -> list[list[str]]:
    """Records 1-4: a (5 kW), b (7 kW), a cancelled, c (9 kW); what the store's reads
    enforced after each of the first three."""
    seen: list[list[str]] = []

    async def go() -> None:
        store = Store(db)
        store.start()
        try:
            for at, events in (
                (1000.0, [_curtail("a", 5.0)]),
                (1100.0, [_curtail("b", 7.0)]),
                (1200.0, [{"id": "a", "type": "cancel"}]),
                (1300.0, [_curtail("c", 9.0)]),
            ):
                await store.add_signals(events, "simple", None, "{}", 9e9, at=at)
                seen.append([str(e["id"]) for e in store.signals()])
        finally:
            store.close()

    asyncio.run(go())
    return seen


def test_each_read_sees_the_signals_written_since_the_last(tmp_path: Path) -> None:
    """The store replays the chain incrementally between reads (each record read once):
    every signal written after a read is in the next one, and a cancel takes effect."""
    seen = _four_signal_records(tmp_path / "s.db")
    assert seen == [["a"], ["a", "b"], ["b"], ["b", "c"]]


def test_verify_checks_rows_no_longer_in_force_too(tmp_path: Path) -> None:
    """``audit verify`` compares every row, not only those in force (what the daemon's
    reads compare): an edit of a cancelled signal's row is named."""
    db = tmp_path / "s.db"
    _four_signal_records(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE signals SET event = replace(event, '5.0', '500.0') WHERE id = 'a'")
    con.commit()
    con.close()
    v = Store(db, migrate=False).verify(now=2000.0)
    assert [(p.kind, p.seq, p.text) for p in v.problems] == [
        ("signal", 3, "signals row 'a' differs from record 3 in event")
    ]


def test_an_edited_signal_record_is_named_and_its_cap_still_enforced(tmp_path: Path) -> None:
    """Record 2 (b's cap) edited in the file: the chain names it, the signals check names
    the record and does not replay its events (so b's row, which it wrote, is now a row
    no record wrote), and the records after it are still replayed: c is enforced. Fail
    safe: b's row is a cap in force that no record vouches for, and a tampered file must
    not lift a cap the site accepted, so the daemon enforces it as the row has it (named)."""
    db = tmp_path / "s.db"
    _four_signal_records(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE log SET payload = replace(payload, '7.0', '700.0') WHERE seq = 2")
    con.commit()
    con.close()
    store = Store(db, migrate=False)
    v = store.verify(now=2000.0)
    assert [(p.kind, p.seq, p.text) for p in v.problems] == [
        ("edited", 2, "hash does not match the record's content"),
        ("signal", 2, "signal record 2 was edited: its events are not trusted"),
        (
            "signal",
            None,
            "signals row 'b' is in force but was written by no record in the chain;"
            " its cap is enforced all the same (fail safe)",
        ),
    ]
    got = store.signals()
    assert [(e["id"], e["limit_kw"]) for e in got] == [("b", 7.0), ("c", 9.0)]
    assert [p.seq for p in store.signal_problems] == [2, None]


def test_the_daemons_reads_fetch_a_row_the_table_ended_but_the_chain_did_not(
    tmp_path: Path,
) -> None:
    """The daemon's reads take the rows in force by the table; one the chain keeps in
    force but the table shows cancelled or ended is read too, named, and enforced."""
    db = tmp_path / "s.db"
    _four_signal_records(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE signals SET cancelled_at = 1150.0 WHERE id = 'b'")
    con.execute("UPDATE signals SET ends_at = 1.0 WHERE id = 'c'")
    con.commit()
    con.close()
    store = Store(db, migrate=False)
    assert [e["id"] for e in store.signals()] == ["b", "c"]
    assert [(p.kind, p.seq, p.text) for p in store.signal_problems] == [
        ("signal", 2, "signals row 'b' differs from record 2 in cancelled_at"),
        ("signal", 4, "signals row 'c' differs from record 4 in ends_at"),
    ]


def test_the_signals_check_reads_the_same_inside_a_callers_transaction(tmp_path: Path) -> None:
    """``check`` opens its own snapshot, or reads in the caller's transaction: the same
    answer either way, every row (``full``) or those in force, and a replay it is given
    is advanced, not rebuilt."""
    db = tmp_path / "s.db"
    _four_signal_records(db)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE signals SET event = replace(event, '5.0', '500.0') WHERE id = 'a'")
    outside, found = signal_rows.check(con, 0, 2000.0)
    assert [p.text for p in found] == ["signals row 'a' differs from record 3 in event"]
    con.execute("BEGIN")
    try:
        inside, again = signal_rows.check(con, 0, 2000.0)
        assert again == found and inside.rows == outside.rows and inside.upto == 4
        live, none = signal_rows.check(con, 0, 2000.0, inside, full=False)
        assert live is inside and none == []  # a's row is over: the daemon's reads skip it
    finally:
        con.execute("COMMIT")
    con.close()
