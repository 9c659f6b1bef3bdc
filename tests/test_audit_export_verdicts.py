"""``gridsched audit export`` says each command outcome's kind: a superseded sleep was
exported as ``"ok": true`` beside ``read-back``, which reads as a confirmed sleep for a
miner that never slept (field re-check, session 22, 4)."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

from adapters.base import Applied, ModeRequest
from adapters.outcomes import Outcome, OutcomeKind
from scheduler.audit.store import Store
from scheduler.cli.main import main
from scheduler.service.daemon.counters import Counters
from scheduler.service.daemon.recorder import Recorder

AT = 1_786_363_200.0  # 2026-12-03T00:00:00Z


def _export(tmp_path: Path, outcomes: list[Outcome]) -> list[dict[str, str]]:
    db = tmp_path / "state.db"

    async def write() -> None:
        store = Store(db)
        try:
            recorder = Recorder(store, Counters())
            await recorder.outcomes("read-back", outcomes, count=False)
            await recorder.flush_verdicts()
        finally:
            store.close()

    asyncio.run(write())
    out = tmp_path / "evidence.csv"
    span = ["--from", "2026-12-02T00:00:00Z", "--to", "2026-12-04T00:00:00Z"]
    assert main(["audit", "export", "--db", str(db), *span, "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["kind"] == "commands"]


def test_a_superseded_sleep_is_exported_as_superseded_with_its_note(tmp_path: Path) -> None:
    sleep, run = ModeRequest("sleep"), ModeRequest("run", power_w=2450.0)
    note = f"superseded by {run.describe()} before a read-back showed it"
    outcomes = [
        Outcome(
            "s21/1",
            sleep,
            True,
            0,
            2.0,
            Applied(sleep, None, note),
            at=AT,
            kind=OutcomeKind.SUPERSEDED,
        ),
        Outcome(
            "s21/2", sleep, True, 0, 1.0, Applied(sleep, None), at=AT, kind=OutcomeKind.CONFIRMED
        ),
        Outcome(
            "s21/3",
            sleep,
            False,
            0,
            120.0,
            None,
            "did not show sleep within 120 s",
            at=AT,
            kind=OutcomeKind.UNCONFIRMED,
        ),
    ]
    rows = {r["subject"]: json.loads(r["detail"]) for r in _export(tmp_path, outcomes)}
    assert rows["s21/1"]["kind"] == "superseded" and rows["s21/1"]["note"] == note
    assert rows["s21/2"]["kind"] == "confirmed" and rows["s21/2"]["note"] is None
    assert rows["s21/3"]["kind"] == "unconfirmed"
    assert rows["s21/3"]["error"] == "did not show sleep within 120 s"
