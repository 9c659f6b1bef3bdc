"""What the store answers about what it holds, each pinned after mutating
``scheduler/audit/store.py`` showed that no audit test checked it: which signal ids a
cancel or a retried delivery names, the status the daemon reports about the chain, the
records read back by time and kind, and the documents kept beside the chain.

Real SQLite files in ``tmp_path``; every figure worked out by hand.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from scheduler.audit.store import SCHEMA_VERSION, Store, body_digest, head_path

KEY = b"k" * 32


def _cap(eid: str, limit_kw: float, ends_at: float = 4e11) -> dict[str, Any]:
    return {"id": eid, "type": "curtail", "limit_kw": limit_kw, "_ends_at": ends_at}


def _store_signals(db: Path, *deliveries: tuple[list[dict[str, Any]], str | None, float]) -> None:
    """Each delivery (events, webhook id, received at) stored, webhook ids kept till 5000."""

    async def go() -> None:
        store = Store(db, key=KEY)
        store.start()
        try:
            for events, webhook_id, at in deliveries:
                raw = f"body of {webhook_id}"
                await store.add_signals(events, "simple", webhook_id, raw, 5000.0, at=at)
        finally:
            store.close()

    asyncio.run(go())


def test_known_ids_names_stored_signals_exactly_or_by_an_events_prefix(tmp_path: Path) -> None:
    """A cancel names what it cancels by id, or every interval of an OpenADR event by
    ``oadr:EVENT:*``: the API answers 404 for a cancel of nothing known, so a prefix must
    match only ids that begin with it (``oadr:e1:*`` is not ``oadr:e10:0``'s), and a plain
    id only itself."""
    db = tmp_path / "s.db"
    _store_signals(db, ([_cap("dr-1", 5.0), _cap("oadr:e10:0", 6.0)], "msg-1", 1000.0))
    store = Store(db, key=KEY)
    asked = ["dr-1", "dr-", "dr-2", "oadr:e10:*", "oadr:e1:*", "oadr:e1", "oadr:*", "dr-1:*"]
    found, seen = store.known_ids(asked, "msg-1")
    assert found == {"dr-1", "oadr:e10:*", "oadr:*"} and seen is True
    assert store.known_ids([], "msg-2") == (set(), False)
    assert store.known_ids(["dr-1"], None) == ({"dr-1"}, False)
    # a cancelled signal is still known (a repeated cancel is not a 404)
    _store_signals(db, ([{"id": "dr-1", "type": "cancel"}], None, 1100.0))
    assert Store(db, key=KEY).known_ids(["dr-1"], None) == ({"dr-1"}, False)


def test_a_retried_delivery_and_its_body_digest(tmp_path: Path) -> None:
    """The digest of the body a webhook id delivered is kept (an id reused for another
    body is told from a retry), and a retry stores nothing a second time."""
    db = tmp_path / "s.db"
    _store_signals(db, ([_cap("a", 5.0)], "msg-1", 1000.0), ([_cap("b", 7.0)], "msg-2", 1001.0))
    store = Store(db, key=KEY)
    assert store.webhook_body("msg-1") == body_digest("body of msg-1")
    assert store.webhook_body("msg-2") == body_digest("body of msg-2")
    assert store.webhook_body("msg-3") is None

    async def retry() -> tuple[bool, list[str]]:
        s = Store(db, key=KEY)
        s.start()
        try:
            return await s.add_signals([_cap("x", 1.0)], "simple", "msg-1", "other", 5000.0)
        finally:
            s.close()

    assert asyncio.run(retry()) == (False, ["a"])
    # the chained record of a delivery: the evidence of what was received, and from whom
    assert [p for *_, p, _h in Store(db, key=KEY).records(0.0, 1e9, ("signal",))] == [
        {"source": "simple", "webhook_id": "msg-1", "events": [_cap("a", 5.0)],
         "raw": "body of msg-1"},
        {"source": "simple", "webhook_id": "msg-2", "events": [_cap("b", 7.0)],
         "raw": "body of msg-2"},
    ]  # fmt: skip
    assert [e["id"] for e in Store(db, key=KEY).signals()] == ["a", "b"]


def test_forgotten_webhook_ids_are_those_kept_until_before_now(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _store_signals(db, ([_cap("a", 5.0)], "msg-1", 1000.0))

    async def prune(now: float) -> bool:
        store = Store(db, key=KEY)
        store.start()
        try:
            await store.prune_webhook_ids(now)
            return store.known_ids([], "msg-1")[1]
        finally:
            store.close()

    assert asyncio.run(prune(5000.0)) is True  # kept until 5000: still a retry at 5000
    assert asyncio.run(prune(5000.5)) is False
    assert Store(db, key=KEY).verify().ok  # not chained: forgetting one is no tampering


def test_the_audit_status_the_daemon_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/v1/status``'s audit part: the last checkpoint with the witness an operator copies
    for ``audit verify --expect-head``, whether checkpoints are signed, the schema, and
    the signal rows the chain does not back, by their text."""
    monkeypatch.delenv("GRIDSCHED_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GRIDSCHED_AUDIT_KEY_FILE", raising=False)
    db = tmp_path / "s.db"
    empty = Store(db).audit_status()
    assert empty == {
        "head": None,
        "signed": False,
        "schema_version": SCHEMA_VERSION,
        "error": None,
        "signal_problems": [],
    }
    _store_signals(db, ([_cap("a", 5.0)], None, 1000.0))  # signed with KEY
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES "
        '(\'forged\', 1000.0, \'simple\', \'{"id":"forged","type":"curtail"}\', 4e11)'
    )
    con.commit()
    con.close()
    store = Store(db, key=KEY)
    store.signals()  # the daemon's read: it finds the forged row
    status = store.audit_status()
    head = status.pop("head")
    seq, digest = 1, store.hash_at(1)
    assert head["seq"] == seq and head["hash"] == digest and head["witness"] == f"1:{digest}"
    assert isinstance(head["mac"], str) and isinstance(head["at"], float)
    assert status == {
        "signed": True,
        "schema_version": SCHEMA_VERSION,
        "error": None,
        "signal_problems": [
            "signals row 'forged' is in force but was written by no record in the chain"
        ],
    }
    assert Store(db).audit_status()["signed"] is False  # no key in the environment


def test_records_read_back_by_time_window_and_kind(tmp_path: Path) -> None:
    """``records(start, end, kinds)``: the half-open window ``start <= at < end``, in chain
    order, the payload decoded and each record's hash as chained."""
    db = tmp_path / "s.db"

    async def go() -> None:
        store = Store(db, key=KEY)
        store.start()
        try:
            await store.record("telemetry", {"n": 1}, at=100.0)
            await store.record("commands", {"n": 2}, at=200.0)
            await store.record("telemetry", {"n": 3}, at=150.0)  # out of time order
            await store.record("telemetry", {"n": 4}, at=300.0)
            said = "^signal records are written by add_signals, with their rows$"
            with pytest.raises(ValueError, match=said):
                await store.record("signal", {"n": 5})
        finally:
            store.close()

    asyncio.run(go())
    store = Store(db, key=KEY)
    got = list(store.records(100.0, 300.0))
    assert [(s, at, k, p) for s, at, k, p, _ in got] == [
        (1, 100.0, "telemetry", {"n": 1}),
        (2, 200.0, "commands", {"n": 2}),
        (3, 150.0, "telemetry", {"n": 3}),
    ]
    assert [h for *_, h in got] == [store.hash_at(s) for s in (1, 2, 3)]
    assert [s for s, *_ in store.records(0.0, 1e9, ("telemetry",))] == [1, 3, 4]
    assert [s for s, *_ in store.records(150.0, 1e9, ("commands", "telemetry"))] == [2, 3, 4]
    assert list(store.records(0.0, 1e9, ())) == []
    assert store.hash_at(5) is None and store.verify().records == 4


def test_signals_read_back_in_order_received_with_their_source(tmp_path: Path) -> None:
    """What the daemon enforces: signals not cancelled, oldest received first, each with
    when it was received and from where; ``include_ended_after`` leaves out those that
    ended at or before it."""
    db = tmp_path / "s.db"
    _store_signals(
        db,
        ([_cap("late", 5.0, ends_at=3000.0)], None, 2000.0),
        ([_cap("early", 7.0, ends_at=2500.0)], None, 1000.0),
        ([_cap("gone", 9.0)], None, 2100.0),
        ([{"id": "gone", "type": "cancel"}], None, 2200.0),
    )
    store = Store(db, key=KEY)
    got = store.signals()
    assert [(e["id"], e["_received_at"], e["_source"]) for e in got] == [
        ("early", 1000.0, "simple"),
        ("late", 2000.0, "simple"),
    ]
    assert got[0]["limit_kw"] == 7.0 and got[1]["limit_kw"] == 5.0
    assert [e["id"] for e in store.signals(include_ended_after=2499.0)] == ["early", "late"]
    assert [e["id"] for e in store.signals(include_ended_after=2500.0)] == ["late"]
    assert store.signals(include_ended_after=3000.0) == []
    assert store.signal_problems == []


def test_documents_kept_beside_the_chain_are_read_back_and_forgotten(tmp_path: Path) -> None:
    """OpenADR programs and discovered identities: stored, read back, a None forgets one;
    neither touches the chain."""
    db = tmp_path / "s.db"

    async def go() -> None:
        store = Store(db, key=KEY)
        store.start()
        try:
            await store.put_openadr_programs({"p1": {"a": 1}, "p2": {"b": 2}})
            assert store.openadr_programs() == {"p1": {"a": 1}, "p2": {"b": 2}}
            await store.put_openadr_programs({"p1": None})
            await store.put_device_identities({"10.0.0.1": {"make": "x"}})
            await store.put_device_identities({})
            assert store.device_identities() == {"10.0.0.1": {"make": "x"}}
        finally:
            store.close()

    asyncio.run(go())
    store = Store(db, key=KEY)
    assert store.openadr_programs() == {"p2": {"b": 2}}
    store.put_device_identities_now({"10.0.0.2": {"make": "y"}, "10.0.0.1": None})
    assert Store(db, key=KEY).device_identities() == {"10.0.0.2": {"make": "y"}}
    assert store.verify().ok and store.verify().records == 0
    head = store.head()  # the checkpoint of the empty chain the new file got, no other
    assert head is not None and head.seq == 0 and len(head_path(db).read_text().splitlines()) == 1


def test_a_signal_row_the_chain_does_not_back_is_logged_once_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon reads signals every few seconds: a tampered row is logged as an error,
    with the file and what is wrong, when it is first seen, not on every read after (three
    reads: one log line, whichever way the check of "new" is turned)."""
    db = tmp_path / "s.db"
    _store_signals(db, ([_cap("a", 5.0)], None, 1000.0))
    con = sqlite3.connect(db)
    con.execute("UPDATE signals SET ends_at = 9e11 WHERE id = 'a'")
    con.commit()
    con.close()
    store = Store(db, key=KEY)
    with caplog.at_level(logging.ERROR, logger="scheduler.audit.store"):
        for _ in range(3):
            store.signals()
    said = [r.getMessage() for r in caplog.records if r.name == "scheduler.audit.store"]
    assert len(said) == 1, said
    assert said[0].startswith(f"{db}: signals row 'a' ") and said[0].endswith(
        "; enforcing what the chain holds"
    ), said
    assert said[0].removeprefix(f"{db}: ").removesuffix("; enforcing what the chain holds") == (
        store.signal_problems[0].text
    )
