"""Every accepted command gets one read-back verdict (docs/adapters.md), a superseded one
too: a newer command to the same device, accepted while the older still waited for its
read-back, ends the older one's wait with the verdict ``superseded``, naming the newer
command. Before, the older command got no verdict at all. Never ``confirmed`` (no
read-back showed it), never ``unconfirmed`` (the device is not one that did not follow:
it was told something else), and the daemon records and counts it as such."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from adapters.base import Health, ModeRequest
from adapters.fleet import Fleet, Outcome, OutcomeKind
from models.devices import DeviceClass, Mode
from scheduler.audit.store import Store
from tests.support.clock import WallClock
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.sitefile import site_text
from tests.support.wait import until

SITE = site_text("superseded read-back test")
VERDICTS = (OutcomeKind.CONFIRMED, OutcomeKind.UNCONFIRMED, OutcomeKind.SUPERSEDED)


def _dc() -> DeviceClass:
    return DeviceClass(
        name="m", kind="asic", count=1, modes=[Mode(name="stock", power_kw=3.0, hashrate_ths=100)]
    )


def _fleet(deadline_s: float) -> tuple[Fleet, MemoryDevice, list[Outcome]]:
    clock = WallClock()
    dev = MemoryDevice("m/0", "mem", clock=clock, dc=_dc(), target_w=3000.0)
    dev.readback_after_s = lambda: 3600.0  # type: ignore[method-assign]
    dev.confirm_deadline_s = lambda: deadline_s  # type: ignore[method-assign]
    seen: list[Outcome] = []
    return Fleet([dev], clock=clock.time, on_outcome=seen.append), dev, seen


def test_a_command_superseded_before_its_read_back_gets_a_verdict_naming_the_newer() -> None:
    fleet, dev, seen = _fleet(deadline_s=0.5)
    dev.follows = False  # it shows neither command: no read-back settles the first

    async def go() -> None:
        try:
            first = await fleet.apply({"m/0": ModeRequest("sleep")})
            assert first[0].ok and "m/0" in fleet.pending
            second = await fleet.apply({"m/0": ModeRequest("run", 2500.0)})
            assert second[0].ok
            await until(lambda: sum(o.kind in VERDICTS for o in seen) == 2,
                        timeout_s=20, what="a verdict for each command")  # fmt: skip
        finally:
            await fleet.close()

    asyncio.run(go())
    kinds = Counter(o.kind for o in seen)
    assert kinds[OutcomeKind.ACCEPTED] == 2
    verdicts = [o for o in seen if o.kind in VERDICTS]
    assert len(verdicts) == 2  # one each: the first superseded, the second unconfirmed
    old, new = verdicts
    assert old.kind is OutcomeKind.SUPERSEDED and old.request == ModeRequest("sleep")
    assert old.applied is not None and old.error is None
    assert "superseded by run@2500W" in old.applied.note, old.applied.note
    assert "before a read-back showed it" in old.applied.note
    assert new.kind is OutcomeKind.UNCONFIRMED and new.request == ModeRequest("run", 2500.0)
    # in order: the first's verdict before the second's acceptance
    assert [o.kind for o in seen][:3] == [
        OutcomeKind.ACCEPTED,
        OutcomeKind.SUPERSEDED,
        OutcomeKind.ACCEPTED,
    ]


def test_a_superseded_command_does_not_mark_the_device_unconfirmed() -> None:
    """The newer command is shown: the device is ok, and nothing waits."""
    fleet, dev, seen = _fleet(deadline_s=30.0)

    async def go() -> None:
        try:
            dev.follows = False
            await fleet.apply({"m/0": ModeRequest("sleep")})
            dev.follows = True
            await fleet.apply({"m/0": ModeRequest("run", 2500.0)})
            await fleet.read_all()  # shows the second command
        finally:
            await fleet.close()

    asyncio.run(go())
    assert [o.kind for o in seen if o.kind in VERDICTS] == [
        OutcomeKind.SUPERSEDED,
        OutcomeKind.CONFIRMED,
    ]
    assert not fleet.pending and fleet.status["m/0"].health is Health.OK


def _verdicts(store: Store) -> list[dict[str, object]]:
    return [
        row
        for r in store.records(0, 1e12, ("commands",))
        if r[3]["why"] == "read-back"
        for row in r[3]["outcomes"]
    ]


def test_the_daemon_records_and_counts_a_superseded_verdict_apart(tmp_path: Path) -> None:
    """In the audit trail (kind ``superseded``, the newer command in its note), in
    ``/v1/status`` and ``/metrics`` under its own name (0 from the start), and the device
    is not taken for one that did not follow."""
    d, devices = memory_daemon(SITE, tmp_path)
    dev = devices["old/0"]

    async def go() -> None:
        await d.open()
        try:
            rb = d.status()["read_back"]
            assert rb["superseded"] == 0 and rb["confirmed"] == 0 and rb["unconfirmed"] == 0
            dev.readback_after_s = lambda: 3600.0  # type: ignore[method-assign]
            dev.follows = False
            outs = await d.fleet.apply({"old/0": ModeRequest("sleep")})
            d.devices.commanded(outs, {"old/0": "sleep"})
            dev.follows = True
            outs = await d.fleet.apply({"old/0": ModeRequest("run")})
            await until(lambda: any(r["kind"] == "superseded" for r in _verdicts(d.store)),
                        timeout_s=10, what="the superseded verdict in the audit trail")  # fmt: skip
            rb = d.status()["read_back"]
            assert rb["superseded"] == 1 and rb["confirmed"] == 0 and rb["unconfirmed"] == 0
            metrics = d.metrics_snapshot.render()[0].decode()
            assert 'gridsched_readback_verdicts_total{verdict="superseded"} 1.0' in metrics
            assert 'gridsched_readback_verdicts_total{verdict="unconfirmed"} 0.0' in metrics
            assert "old/0" not in d.devices.unfollowed
            assert d.counters.commands == {"ok": 0, "failed": 0}  # a verdict is no command
        finally:
            await d.close()

    asyncio.run(go())
    store = Store(tmp_path / "state.db")
    try:
        rows = [r for r in _verdicts(store) if r["kind"] == "superseded"]
    finally:
        store.close()
    assert len(rows) == 1
    row = rows[0]
    assert row["device"] == "old/0" and row["request"] == "sleep" and row["ok"] is True
    assert "superseded by run" in str(row["note"]), row


def test_a_newer_command_not_accepted_leaves_the_older_waiting_for_its_verdict() -> None:
    """A newer command that fails or is refused supersedes nothing: the device did not
    take it, and may yet show the older one. The fleet dropped the older command's wait
    without a verdict; it now waits on, and gets its verdict at its deadline (here the
    device did not follow it: unconfirmed)."""
    from adapters.base import ControlRejected

    fleet, dev, seen = _fleet(deadline_s=0.3)
    dev.follows = False

    async def refuse(request: ModeRequest) -> None:
        raise ControlRejected("m/0", "the firmware refused it")

    async def go() -> None:
        try:
            await fleet.apply({"m/0": ModeRequest("sleep")})
            dev.apply = refuse  # type: ignore[method-assign,assignment]
            [out] = await fleet.apply({"m/0": ModeRequest("run")})
            assert not out.ok and "m/0" in fleet.pending  # still waiting for the sleep's
            await until(lambda: not fleet.pending, what="the sleep's verdict")
        finally:
            await fleet.close()

    asyncio.run(go())
    verdicts = [o for o in seen if o.kind in VERDICTS]
    assert [(o.kind, o.request.action) for o in verdicts] == [(OutcomeKind.UNCONFIRMED, "sleep")]
