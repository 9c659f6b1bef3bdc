"""0 events lost across a VTN restart (here), a broker restart
(``test_ven.py::test_broker_restart_loses_no_event``) and a gridsched kill -9
(``test_ven.py::test_daemon_killed_loses_no_event``,
``test_ven_programs.py::test_killed_daemon_restarted_without_its_vtn_still_reads_units_from_the_program``).
Skipped when ../shared/openadr3 is absent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.ven import Ven  # noqa: E402
from tests.test_ven import (  # noqa: E402
    Sink,
    bl,
    config,
    limit_event,
    make_program,
    run,
    until,
)
from tests.vtn_double import VtnDouble  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


@pytest.fixture(name="vtn")
def _vtn() -> Iterator[VtnDouble]:
    v = VtnDouble().start()
    yield v
    v.close()
    assert v.violations == [], "\n".join(v.violations)


def test_vtn_restart_loses_no_event() -> None:
    """The VEN's own loop (polling, back-off) across a VTN restart: the events it held are
    not cancelled while the VTN is silent, and what the VTN holds after it is back (an event
    created before the outage, one created after) is handed on, each once."""
    vtn = VtnDouble().start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        before = client.create_event(limit_event(pid, 300.0)).json()["id"]
        sink = Sink()

        async def go() -> dict[str, object]:
            ven = Ven(config(vtn, poll_s=0.2, max_backoff_s=0.4), sink)
            await ven.start()
            assert sink.events() == [before]
            vtn.stop()
            await until(lambda: ven.status()["poll_failures"] >= 2)
            vtn.start()  # the same port, the same objects
            after = (await asyncio.to_thread(client.create_event, limit_event(pid))).json()["id"]
            # the poll that hands an event on may count its success after the hand-on: wait
            # for both, not a snapshot at the instant the event shows (a loaded-host race)
            await until(
                lambda: after in sink.events() and ven.status()["consecutive_failures"] == 0
            )
            st = ven.status()
            await ven.stop()
            assert sink.events() == [before, after], "each event handed on once"
            return st

        st = run(go())
        assert sink.events("DELETE") == [], "nothing cancelled while the VTN was away"
        assert st["consecutive_failures"] == 0 and st["events_known"] == 2
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations


def test_an_event_deleted_while_the_daemon_was_down_is_cancelled_after_it_restarts(
    vtn: VtnDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator's walk (session 24, D1): the events the VEN checks for deletion were
    held in memory only, so an event the VTN deleted while gridsched was down (an upgrade, a
    crash, a reboot) was never asked for again: the restarted daemon kept its cap in force
    for its whole length, for an event the utility had cancelled."""
    from tests.test_daemon import OADR_TOKEN, DaemonProc, status, wait_for

    client = bl(vtn)
    pid = make_program(client)
    d = DaemonProc(tmp_path)
    d.site.write_text(d.site.read_text() + '\n[openadr]\nven_name = "gridsched-down"\n')
    for k, v in {**vtn.ven_env(), "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GRIDSCHED_VTN_POLL_S", "1")
    d.start()
    try:
        eid = client.create_event(limit_event(pid, kw=55.0)).json()["id"]
        wait_for(lambda: status(d)["cap_kw"] == 55, 30)
        d.stop()
        assert client.delete_event(eid).status_code == 200
        d.start()

        def cancelled() -> bool:
            held = [e["id"] for e in status(d)["active_events"]]
            return not any(i.startswith(f"oadr:{eid}:") for i in held)

        wait_for(cancelled, 30)
        assert ("GET", f"/events/{eid}", 404) in vtn.requests
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_a_vtn_that_pages_shorter_than_asked_loses_no_event(vtn: VtnDouble) -> None:
    """The aggregator's walk (session 24, D2): the VEN took any page shorter than the 50 it
    asked for as the end of the listing. A VTN that pages by 5 (the OpenAPI's `limit` is a
    maximum) hid every event past its first page, new and changed alike, while the VEN's
    status said its polls were fine."""
    client = bl(vtn)
    pid = make_program(client)
    ids = [client.create_event(limit_event(pid, 100.0 + k)).json()["id"] for k in range(12)]
    vtn.page_cap = 5
    sink = Sink()

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        await ven.start()
        assert sorted(sink.events()) == sorted(ids)
        assert sink.events("DELETE") == []
        await ven.stop()

    run(go())


def test_a_program_s_changed_descriptors_reach_the_events_already_held(vtn: VtnDouble) -> None:
    """The aggregator's walk (session 24, D5): an event without descriptors of its own reads
    its units from its program's (User Guide 7.6). When the program's PRICE units changed
    from KWH to MWH, the events already held kept the old reading (170 USD/MWh where 0.17
    was meant) until the daemon restarted: they were handed on once per their own
    modificationDateTime, and a program's change did not hand them on again."""
    import time as _time

    client = bl(vtn)
    descriptor = {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE",
                  "units": "KWH", "currency": "USD"}  # fmt: skip
    program = {"programName": f"tou-{_time.monotonic_ns()}", "payloadDescriptors": [descriptor]}
    r = client.create_program(program)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    event = limit_event(pid)
    del event["payloadDescriptors"]
    event["intervals"] = [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.17]}]}]
    eid = client.create_event(event).json()["id"]
    other = client.create_event(limit_event(make_program(client))).json()["id"]
    sink = Sink()

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        await ven.start()
        assert sorted(sink.events()) == sorted([eid, other])
        await asyncio.sleep(0.01)  # a later modificationDateTime (ms resolution)
        changed = {**program, "payloadDescriptors": [{**descriptor, "units": "MWH"}]}
        assert client.update_program(pid, changed).status_code == 200
        await ven.poll_once()
        await ven.stop()

    run(go())
    assert sink.events().count(eid) == 2, sink.events()  # read again with the new units
    assert sink.events().count(other) == 1  # another program's event: not again


def test_an_event_the_daemon_refuses_is_said_once_not_at_every_poll(vtn: VtnDouble) -> None:
    """The aggregator's walk (session 24, N4): an invalid event found by polling (a SIMPLE
    level 9, intervals "oops") was handed on, refused and logged at ERROR again at every
    poll, counted as a delivery failure like a full disk, and shown nowhere but the log and
    a last_error the next poll overwrote. It is said once per version of the event, and
    /v1/status's VEN part lists it with why; a change of the event is read again."""
    from scheduler.service.openadr_timing import OpenADRError

    client = bl(vtn)
    pid = make_program(client)
    bad = client.create_event(limit_event(pid, 5.0)).json()["id"]
    tries: list[str] = []

    async def refuse(body: dict[str, object]) -> None:
        obj = body["object"]
        assert isinstance(obj, dict)
        if obj["id"] == bad and body["operation"] != "DELETE":
            tries.append(str(obj.get("modificationDateTime")))
            raise OpenADRError("object.intervals[0].payloads[0].values[0]", "not like that")

    async def go() -> dict[str, object]:
        ven = Ven(config(vtn), refuse)
        await ven.start()
        await ven.poll_once()
        await ven.poll_once()
        assert len(tries) == 1, tries  # once, not at every poll
        st = ven.status()
        ev = client.get_event_by_id(bad).json()
        meta = ("id", "createdDateTime", "modificationDateTime", "objectType")
        await asyncio.sleep(0.01)
        client.update_event(bad, {k: v for k, v in ev.items() if k not in meta})
        await ven.poll_once()
        await ven.stop()
        return st

    st = run(go())
    assert len(tries) == 2, tries  # the changed event is read again
    refused = st["events_refused"]
    assert isinstance(refused, dict) and "not like that" in str(refused.get(bad)), refused
    assert st["delivery_failures"] == 0  # the store did not fail: the event was refused


def test_an_error_is_cleared_once_the_step_that_failed_succeeds(vtn: VtnDouble) -> None:
    """The aggregator's walk (session 24, N3): after the VTN recovered, `last_error` still
    named the old failure, with `consecutive_failures: 0`, while operations.md's check reads
    `last_error: null` as healthy. The error is cleared once the step that failed (a poll
    here) succeeds again; `last_error_at` keeps when it was."""
    client = bl(vtn)
    client.create_event(limit_event(make_program(client)))

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        ven = Ven(config(vtn), Sink())
        await ven.start()
        vtn.failing = True
        assert not await ven._attempt(ven.poll_once, "poll")
        failed = dict(ven.status())
        vtn.failing = False
        assert await ven._attempt(ven.poll_once, "poll")
        recovered = dict(ven.status())
        await ven.stop()
        return failed, recovered

    failed, recovered = run(go())
    assert "HTTP 500" in str(failed["last_error"])
    assert recovered["last_error"] is None, recovered["last_error"]
    assert recovered["last_error_at"] == failed["last_error_at"]
