"""The VEN's polling path: an event created at the VTN is handed on within the polling period.

Against the VTN double (every request and response checked against the 3.1.0 definition).
A listing is paged with ``skip``/``limit``; an event the VTN deletes while the VEN pages
shifts the later pages, so an event missing from one listing is cancelled only once the VTN
says it no longer has it. Skipped when ../shared/openadr3 is absent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.ven import Ven  # noqa: E402
from scheduler.service.ven_poll import SHED_ALLOWANCE_S, PollCadence  # noqa: E402
from tests.test_ven import Sink, config, limit_event, run, vtn  # noqa: E402
from tests.vtn_double import VtnDouble  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")
__all__ = ["vtn"]  # the fixture, imported for pytest


def create_events(vtn: VtnDouble, n: int) -> list[str]:
    """``n`` events created by the utility's side (in the VTN's listing order)."""
    form = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": "bl-secret"}
    token = httpx.post(f"{vtn.url}/auth/token", data=form).json()["access_token"]
    with httpx.Client(base_url=vtn.url, headers={"Authorization": f"Bearer {token}"}) as c:
        pid = c.post("/programs", json={"programName": "dr"}).json()["id"]
        return [c.post("/events", json=limit_event(pid, 100.0 + k)).json()["id"] for k in range(n)]


def skip_of(request: httpx.Request) -> int | None:
    if request.method != "GET" or request.url.path != "/events":
        return None
    return int(request.url.params.get("skip", "0"))


def test_an_event_shifted_out_of_a_listing_by_a_deletion_is_not_cancelled(
    vtn: VtnDouble,
) -> None:
    """The VTN deletes its first event while the VEN pages: the event that was 51st moves
    to the first page, already read, and is absent from this listing. It is still at the
    VTN: never cancelled. The deleted one is cancelled (by this listing or the next)."""
    ids = create_events(vtn, 60)  # two pages of at most 50
    armed = False

    async def on_request(request: httpx.Request) -> None:
        nonlocal armed
        if armed and skip_of(request) == 50:
            armed = False
            vtn.objects["event"].pop(ids[0])  # as a DELETE at the VTN, between two pages

    sink = Sink()

    async def go() -> None:
        http = httpx.AsyncClient(timeout=10, event_hooks={"request": [on_request]})
        ven = Ven(config(vtn), sink, http=http)
        await ven.start()
        assert sorted(sink.events()) == sorted(ids)
        nonlocal armed
        armed = True
        await ven.poll_once()
        await ven.poll_once()
        assert not armed  # the second page was asked for after the deletion
        await ven.stop()
        await http.aclose()

    run(go())
    assert sink.events("DELETE") == [ids[0]]  # ids[50] never cancelled


def test_new_events_are_handed_on_page_by_page_and_a_failed_page_cancels_nothing(
    vtn: VtnDouble,
) -> None:
    """A listing whose second page fails: the events of the first page are handed on now
    (not at the next complete poll), and nothing is cancelled on an incomplete listing."""
    sink = Sink()
    fail = False

    async def on_request(request: httpx.Request) -> None:
        if fail and (skip_of(request) or 0) >= 50:
            raise httpx.ConnectError("refused (test)", request=request)

    async def go() -> None:
        http = httpx.AsyncClient(timeout=10, event_hooks={"request": [on_request]})
        ven = Ven(config(vtn), sink, http=http)
        await ven.start()
        assert ven.status()["polls"] == 1
        nonlocal fail
        ids = await asyncio.to_thread(create_events, vtn, 60)
        fail = True
        assert not await ven._attempt(ven.poll_once, "poll")
        assert sorted(sink.events()) == sorted(ids[:50])  # the first page's, handed on
        st = ven.status()
        assert st["poll_failures"] == 1 and st["polls"] == 1  # not a complete listing
        fail = False
        assert await ven._attempt(ven.poll_once, "poll")
        assert sorted(sink.events()) == sorted(ids) and sink.events("DELETE") == []
        await ven.stop()
        await http.aclose()

    run(go())


def test_polls_start_early_enough_to_hand_on_within_the_period() -> None:
    """Start-to-start, the next poll begins the slowest recent poll (with a quarter more,
    and room for the shed) before the period is out: an event created just after a poll
    began is in the next listing, handed on before one period has passed."""
    c = PollCadence(2.0)
    assert c.interval_s() == 2.0  # nothing measured yet
    for took_s in (0.3, 0.7, 0.4):
        c.record(took_s)
    # created just after a poll began; the next poll, as slow as the slowest, hands it on
    assert c.interval_s() + 0.7 * 1.25 + SHED_ALLOWANCE_S <= 2.0 + 1e-9
    assert c.within_period
    slow = PollCadence(2.0)
    slow.record(2.5)  # a VTN slower than the period: polled a tenth of it apart, and said
    assert slow.interval_s() == pytest.approx(0.2) and not slow.within_period
    for _ in range(8):  # the slow poll has left the window: the period holds again
        slow.record(0.1)
    assert slow.within_period


def test_a_slow_vtn_is_polled_earlier_and_status_says_the_interval(vtn: VtnDouble) -> None:
    """The VEN's own loop against a VTN that takes 0.3 s a page: the interval between poll
    starts is shorter than the period by at least that, and status shows both."""
    create_events(vtn, 3)
    polls = 0

    async def on_request(request: httpx.Request) -> None:
        nonlocal polls
        if skip_of(request) is not None:
            polls += 1
            await asyncio.sleep(0.3)

    async def go() -> dict[str, Any]:
        http = httpx.AsyncClient(timeout=10, event_hooks={"request": [on_request]})
        ven = Ven(config(vtn, poll_s=1.5), Sink(), http=http)
        await ven.start()
        while polls < 2:
            await asyncio.sleep(0.01)
        st = ven.status()
        await ven.stop()
        await http.aclose()
        return st

    st = run(go())
    assert st["poll_took_s"] >= 0.3
    assert st["poll_interval_s"] <= 1.5 - 0.3 * 1.25 - SHED_ALLOWANCE_S + 1e-9
    # within the period unless this host took over 0.9 s for a local poll: what status
    # says follows from the time the poll took, never assumed from the wall clock
    lead_s = st["poll_took_s"] * 1.25 + SHED_ALLOWANCE_S
    assert st["poll_within_period"] is (1.5 - lead_s >= 1.5 / 10)
