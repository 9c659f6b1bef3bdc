"""0 events lost across a VTN restart (here), a broker restart
(``test_ven.py::test_broker_restart_loses_no_event``) and a gridsched kill -9
(``test_ven.py::test_daemon_killed_loses_no_event``,
``test_ven_programs.py::test_killed_daemon_restarted_without_its_vtn_still_reads_units_from_the_program``).
Skipped when ../shared/openadr3 is absent."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.ven import Ven  # noqa: E402
from tests.test_ven import Sink, bl, config, limit_event, make_program, run, until  # noqa: E402
from tests.vtn_double import VtnDouble  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


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
