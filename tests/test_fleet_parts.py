"""The fleet's parts on their own, without sockets: the health book (what each call's
result makes of a device's health) and the read-back (an accepted command confirmed by a
later reading, or unconfirmed past its deadline). The fleet over real simulators is
tested in test_adapters_*.py, test_antminer.py and test_families.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field

import pytest

from adapters.base import (
    Applied,
    BadReply,
    ControlRejected,
    DeviceAdapter,
    DeviceInfo,
    DeviceTimeout,
    Health,
    ModeRequest,
    Telemetry,
)
from adapters.fleet_health import HealthBook
from adapters.gc_hold import CollectorHold
from adapters.outcomes import DeviceStatus, Outcome, OutcomeKind, RetryPolicy
from adapters.readback import ReadBack

SLEEP = ModeRequest("sleep")


@dataclass
class _Device(DeviceAdapter):
    """A device whose read-back rules are the base class's; it is never called over the
    network here (the read-back only asks it for its deadline and to forget a command)."""

    forgot: list[Applied] = field(default_factory=list)

    async def connect(self) -> DeviceInfo:
        raise NotImplementedError

    async def read(self) -> Telemetry:
        raise NotImplementedError

    async def apply(self, request: ModeRequest) -> Applied:
        raise NotImplementedError

    def confirm_deadline_s(self) -> float:
        return 10.0

    def unconfirmed(self, applied: Applied) -> None:
        self.forgot.append(applied)


def _health(st: DeviceStatus) -> Health:
    return st.health  # read afresh: each call changes it


def test_health_follows_each_calls_result() -> None:
    book = HealthBook(RetryPolicy(attempts=3), unreachable_after=2, probe_max_s=8.0)
    st = DeviceStatus("m1", "s19")
    book.ok(st)
    assert _health(st) is Health.OK and st.last_error is None
    # one timeout: degraded; the second in a row: unreachable, probed after a backoff
    book.fail(st, DeviceTimeout("m1", "no answer in 2 s"))
    assert _health(st) is Health.DEGRADED and st.failures == 1
    assert book.attempts(st) == 3
    msg = book.fail(st, DeviceTimeout("m1", "no answer in 2 s"))
    assert _health(st) is Health.UNREACHABLE and msg == st.last_error == "m1: no answer in 2 s"
    assert not st.connected and st.next_probe > 0
    assert book.attempts(st) == 1  # a retry would get the same
    book.ok(st, op="read")
    assert _health(st) is Health.OK and st.failures == 0 and st.next_probe == 0.0
    # an unparseable answer and a refusal are named as such
    book.fail(st, BadReply("m1", "not JSON"))
    assert _health(st) is Health.UNREADABLE and book.attempts(st) == 1
    book.fail(st, ControlRejected("m1", "profile unknown"))
    assert _health(st) is Health.REJECTED
    book.ok(st, op="read")  # reads work; the refused command still stands refused
    assert _health(st) is Health.REJECTED
    book.ok(st, op="apply")
    assert _health(st) is Health.OK
    # a device that reports errors in its reading is degraded, with them as the reason
    st.telemetry = Telemetry("m1", 0.0, "running", errors=("fan 2 stopped",))
    book.ok(st)
    assert _health(st) is Health.DEGRADED


def _readback() -> tuple[ReadBack, _Device, DeviceStatus, list[Outcome]]:
    dev = _Device("m1", "127.0.0.1")
    st = DeviceStatus("m1", "s19", health=Health.OK, connected=True)
    seen: list[Outcome] = []
    rb = ReadBack({"m1": dev}, {"m1": st}, HealthBook(), seen.append)
    return rb, dev, st, seen


def test_a_reading_sent_after_the_command_confirms_it() -> None:
    rb, _, st, seen = _readback()
    applied = Applied(SLEEP, None)
    rb.accepted(Outcome("m1", SLEEP, True, 1, 0.5, applied, at=100.5))
    assert rb.pending["m1"].sent_at == 100.0 and rb.pending["m1"].deadline == 110.0
    assert rb.waiting("m1")
    # a reading taken before the command went out proves nothing, even if it sleeps
    rb.settle("m1", Telemetry("m1", 99.0, "sleeping"), now=101.0)
    assert "m1" in rb.pending and seen == []
    rb.settle("m1", Telemetry("m1", 103.0, "sleeping"), now=103.5)
    assert "m1" not in rb.pending and not rb.waiting("m1")
    assert [(o.kind, o.latency_s) for o in seen] == [(OutcomeKind.CONFIRMED, 3.0)]
    assert st.health is Health.OK


def test_a_command_not_seen_by_its_deadline_is_unconfirmed_until_a_later_one_shows() -> None:
    rb, dev, st, seen = _readback()
    applied = Applied(SLEEP, None)
    rb.accepted(Outcome("m1", SLEEP, True, 1, 0.0, applied, at=100.0))
    rb.settle("m1", Telemetry("m1", 105.0, "running"), now=105.0)  # not yet due
    assert seen == []
    rb.settle("m1", Telemetry("m1", 111.0, "running"), now=111.0)
    assert [o.kind for o in seen] == [OutcomeKind.UNCONFIRMED]
    assert "it reads running" in (seen[0].error or "")
    assert rb.unconfirmed == {"m1": SLEEP} and dev.forgot == [applied]
    assert st.health is Health.UNCONFIRMED and st.failures == 0  # it answers
    # sent again and accepted: health stays unconfirmed until a read-back shows it
    rb.accepted(Outcome("m1", SLEEP, True, 1, 0.0, applied, at=120.0))
    assert rb.unconfirmed == {} and st.health is Health.UNCONFIRMED
    rb.settle("m1", Telemetry("m1", 121.0, "sleeping"), now=121.0)
    assert seen[-1].kind is OutcomeKind.CONFIRMED and _health(st) is Health.OK


def test_the_collector_is_held_off_and_comes_back() -> None:
    if not gc.isenabled():
        pytest.skip("the collector is off in this process")

    async def go() -> None:
        hold = CollectorHold(max_s=60.0)
        hold.hold()
        try:
            assert not gc.isenabled()
        finally:
            hold.release()
        assert gc.isenabled()
        CollectorHold(max_s=0.0).hold()  # 0: never held
        assert gc.isenabled()
        # past max_s it comes back by itself (a batch stuck on dead devices)
        short = CollectorHold(max_s=0.01)
        short.hold()
        async with asyncio.timeout(10):
            while not gc.isenabled():
                await asyncio.sleep(0.005)

    asyncio.run(go())


@dataclass
class _Hangs(_Device):
    """A connected device whose reading never answers (an event loop far behind, or a
    device that accepted the request and went quiet)."""

    async def read(self) -> Telemetry:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_call_past_the_fleets_last_resort_bound_is_a_timeout_not_an_adapter_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from adapters.fleet import Fleet

    async def go() -> tuple[DeviceStatus, str | None]:
        fleet = Fleet([_Hangs("m1", "127.0.0.1")], op_timeout_s=0.01, retry=RetryPolicy(attempts=1))
        fleet.status["m1"].connected = True
        fleet.status["m1"].health = Health.OK  # read before: one timeout makes it degraded
        got = await fleet.read_all()
        assert got == {}
        return fleet.status["m1"], fleet.status["m1"].last_error

    with caplog.at_level(logging.DEBUG, logger="gridsched.fleet"):
        st, err = asyncio.run(go())
    # a timeout, named as one, and health as for any device timeout: no traceback logged
    assert err is not None and "no answer within" in err, err
    assert st.health is Health.DEGRADED
    assert not [r for r in caplog.records if r.exc_info], caplog.text
