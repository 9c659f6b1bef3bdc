"""Rows of the ``signals`` table that no record of the chain wrote: which the daemon's
reads still enforce. Fail safe: a tampered file must not lift a cap, so a curtail with a
numeric limit in force is enforced as the row has it (named); anything else no record
vouches for is left out (named). Pins ``signal_rows._is_cap`` through the store.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from scheduler.audit.store import Store

KEY = b"k" * 32
IN_FORCE = 4e11

FORGED = [  # (id, event as stored, enforced)
    ("zero", json.dumps({"id": "zero", "type": "curtail", "limit_kw": 0}), True),
    ("half", json.dumps({"id": "half", "type": "curtail", "limit_kw": 5.5}), True),
    ("nolimit", json.dumps({"id": "nolimit", "type": "curtail"}), False),
    ("text", json.dumps({"id": "text", "type": "curtail", "limit_kw": "5"}), False),
    ("price", json.dumps({"id": "price", "type": "price", "limit_kw": 5}), False),
    ("list", json.dumps([{"type": "curtail", "limit_kw": 5}]), False),
    ("junk", "not json", False),
]


def test_only_caps_no_record_wrote_are_enforced_and_each_is_named(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def go() -> None:
        store = Store(db, key=KEY)
        store.start()
        try:  # one real signal, so the chain and the table are not empty
            cap = {"id": "real", "type": "curtail", "limit_kw": 9.0, "_ends_at": IN_FORCE}
            await store.add_signals([cap], "simple", None, "{}", 9e9, at=1000.0)
        finally:
            store.close()

    asyncio.run(go())
    con = sqlite3.connect(db)
    for n, (eid, event, _) in enumerate(FORGED):
        con.execute(
            "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES (?,?,?,?,?)",
            (eid, 2000.0 + n, "simple", event, IN_FORCE),
        )
    forged_cap = json.dumps({"id": "over", "type": "curtail", "limit_kw": 1})
    con.execute(  # a forged cap that is over, and one cancelled: nothing to enforce
        "INSERT INTO signals(id, received_at, source, event, ends_at) VALUES (?,?,?,?,?)",
        ("over", 3000.0, "simple", forged_cap, 1.0),
    )
    con.execute(
        "INSERT INTO signals(id, received_at, source, event, ends_at, cancelled_at) "
        "VALUES (?,?,?,?,?,?)",
        ("gone", 3001.0, "simple", forged_cap.replace("over", "gone"), IN_FORCE, 2500.0),
    )
    con.commit()
    con.close()

    store = Store(db, key=KEY)
    got = store.signals()
    assert [(e["id"], e["limit_kw"]) for e in got] == [("real", 9.0), ("zero", 0), ("half", 5.5)]
    said = sorted(p.text for p in store.signal_problems)
    expected = sorted(
        f"signals row {eid!r} is in force but was written by no record in the chain"
        + ("; its cap is enforced all the same (fail safe)" if enforced else "")
        for eid, _, enforced in FORGED
    )
    assert said == expected
    assert all(p.kind == "signal" and p.seq is None for p in store.signal_problems)
