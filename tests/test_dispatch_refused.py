"""A device that refuses the mode dispatch sends it is sent it again after a wait that
doubles with each refusal, not at every poll: a VNish miner that kept its preset was sent
the same refused write 17 times in 5 minutes (field re-check, session 22, 3). Another mode,
or a command it takes, starts afresh; the fast path's sheds are never held back."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from adapters.base import Applied, ControlRejected, Health, ModeRequest
from models.signals import EventType, GridEvent
from scheduler.service.daemon import Daemon
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon
from tests.support.memfleet import run_open as _run
from tests.support.sitefile import DAEMON, site_text


class Refuses(MemoryDevice):
    """Refuses every ``action`` request (a firmware that keeps its own preset) while
    ``refuse``."""

    refuse = True
    action = "run"
    tries = 0

    async def apply(self, request: ModeRequest) -> Applied:
        if self.refuse and request.action == self.action:
            self.tries += 1
            raise ControlRejected(self.device_id, "set preset: the firmware kept its own")
        return await super().apply(request)


def _daemon(tmp_path: Path, clock: FakeClock) -> tuple[Daemon, Refuses]:
    text = site_text(
        "refused",
        site={"base_load_kw": 0},
        hashprice=1.0,
        inference={"committed_tokens_s": 500.0},
        daemon={**DAEMON, "poll_s": 15, "cap_margin_pct": 0},
    )
    d, devices = memory_daemon(text, tmp_path, clock, asleep=True)
    dev = devices["new/0"]
    dev.__class__ = Refuses  # the same device, refusing
    d.planning.request = lambda *a, **k: None  # type: ignore[method-assign]
    d.shedder.request = lambda *a, **k: None  # type: ignore[method-assign]
    return d, dev  # type: ignore[return-value]


def test_a_refused_mode_is_sent_again_after_a_doubling_wait(tmp_path: Path) -> None:
    clock = FakeClock()
    d, dev = _daemon(tmp_path, clock)

    async def body() -> None:
        await d.poll(dispatch=False)
        await d.replan("test")  # every miner wanted: new/0 refuses its wake
        first = dev.tries
        assert first >= 1
        await d.dispatch()  # at once: not again
        assert dev.tries == first
        sent_at = []
        for _ in range(16):  # 4 minutes of 15 s polls
            clock.advance(15)
            before = dev.tries
            await d.dispatch()
            if dev.tries > before:
                sent_at.append(clock.monotonic())
        gaps = [b - a for a, b in pairwise(sent_at)]
        assert len(sent_at) <= 5 and gaps == sorted(gaps) and gaps[-1] >= 60
        dev.refuse = False  # it takes the wake at the next try: no wait after that
        clock.advance(600)
        await d.dispatch()
        assert dev.state == "running"

    _run(d, body)


def test_a_refusal_the_plan_no_longer_asks_for_is_cleared_by_the_mode_it_is_in(
    tmp_path: Path,
) -> None:
    """Field re-check (session 22): a VNish miner stayed ``rejected`` 3.5 minutes after its
    fault cleared, because the plan no longer asked for what it had refused and nothing else
    was sent. Dispatch sends such a device the mode it is in, and its health follows what
    the device does now."""
    clock = FakeClock()
    d, dev = _daemon(tmp_path, clock)
    dev.action = "sleep"  # refuses sleeps; takes runs

    async def body() -> None:
        await d.poll(dispatch=False)
        await d.replan("test")  # every miner wanted: new/0 wakes
        assert dev.state == "running"
        await d.poll(dispatch=False)
        out = await d.fleet.apply({"new/0": ModeRequest("sleep")})  # a shed it refuses
        assert out[0].kind.value == "rejected"
        assert d.fleet.status["new/0"].health is Health.REJECTED
        told = len(dev.told)
        await d.dispatch()  # the plan wants it where it is: sent that, and it takes it
        assert len(dev.told) == told + 1 and dev.told[-1].action == "run"
        assert d.fleet.status["new/0"].health is not Health.REJECTED
        await d.dispatch()  # once: nothing more to send
        assert len(dev.told) == told + 1

    _run(d, body)


def test_a_refusal_is_forgotten_when_the_plan_stops_asking_for_it(tmp_path: Path) -> None:
    """A refused mode's wait holds only while the plan keeps asking for it: a plan that
    wants the device where it is sends it that mode (its health says rejected), which it
    takes, and the wait is forgotten; a later plan asking for the refused mode again is a
    new request, sent at once, not held back by a wait doubled to minutes (a curtail that
    came and went between two refusals of a wake would keep the miner asleep up to 10 more
    minutes after the release). Session 22's note feared this; it holds, and this keeps it."""
    clock = FakeClock()
    d, dev = _daemon(tmp_path, clock)

    async def body() -> None:
        await d.poll(dispatch=False)
        await d.replan("test")  # wants it running: refused
        for _ in range(12):  # 3 minutes of polls: the wait has doubled past a minute
            clock.advance(15)
            await d.dispatch()
        assert dev.tries >= 3 and d.dispatcher.refused["new/0"][2] >= 60
        now = clock.time()
        dr = GridEvent(id="dr", type=EventType.CURTAIL, start=now, duration="1h", limit_kw=0)
        d.signals.book().put(dr)
        await d.replan("test")  # wants it asleep, where it is: nothing to send
        clock.advance(15)
        await d.dispatch()
        d.signals.book().drop("dr")
        dev.refuse = False  # its fault cleared meanwhile
        clock.advance(15)
        await d.replan("test")  # asks for the wake again: sent at once
        assert dev.state == "running"

    _run(d, body)
