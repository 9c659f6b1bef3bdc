"""VNish sleep and wake: the verdict of each write comes from the firmware's answer, read
by the adapter (``adapters.vnish.command``), not from pyasic's True/False.

pyasic 0.79's ``VNish.stop_mining`` / ``resume_mining`` post ``mining/stop`` /
``mining/resume`` and return ``data["success"]`` (an empty answer counts as success, any
other answer without ``success`` as a refusal); its ``VNishWebAPI.send_command`` answers
a status other than 200 by unlocking again and giving up the call ("Failed to send
command"), which the adapter could only call unreadable, after sending the write twice.
Here: no connection or no answer is unreachable, an answer outside 2xx (or one that says
``"success": false``) the firmware's refusal, sent once; a 200 that is not JSON is
unreadable; any other 200 is accepted and the read-back decides (asic-rs,
``vnish/src/backends/v1_2_0``, takes any 2xx JSON answer to ``mining/stop`` as done).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import BadReply, ControlRejected, DeviceUnreachable, ModeRequest
from adapters.fleet import Outcome, OutcomeKind
from adapters.sim.fleet import SimFleetThread
from adapters.sim.server import FaultKind
from adapters.sim.vnish import VnishSim
from tests.support.simfleet import (
    miner_of,
    one_device_fleet,
    reset_each,
    run,
    settle,
    skip_without_port_80,
    web_fleet,
)

pytestmark = skip_without_port_80()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    yield from web_fleet(3, "vnish", "Antminer S19j Pro")


def _miner(sim: SimFleetThread, i: int) -> VnishSim:
    return miner_of(sim, i, VnishSim)


@pytest.fixture(autouse=True)
def _clean(sim: SimFleetThread) -> Iterator[None]:
    yield
    reset_each(sim, VnishSim, _reset)


def _reset(m: VnishSim) -> None:
    m.clear_faults()
    m.command_answer = None
    m.resume_starts_stopped = True
    m.set_profile("default")
    m.conf_preset = m.preset_name()
    m.state.phase, m.state.ramp = "mining", None


def _calls(sim: SimFleetThread, m: VnishSim, since: int = 0) -> list[tuple[str, str]]:
    return sim.call(lambda: list(m.web_calls))[since:]


def _connected(sim: SimFleetThread, i: int) -> tuple[VnishSim, PyasicMiner, int]:
    m = _miner(sim, i)
    dev = PyasicMiner(f"vn/{i}", m.host, timeout_s=10.0)
    run(dev.connect())
    return m, dev, len(_calls(sim, m))


def test_an_error_answer_to_a_stop_is_a_refusal_sent_once(sim: SimFleetThread) -> None:
    """Before: pyasic unlocked again, gave up, the adapter sent it all once more and
    called the miner unreadable (BadReply) after two writes and two unlocks."""
    m, dev, before = _connected(sim, 0)
    answer = (500, {"err": "miner is busy"})
    sim.call(lambda: setattr(m, "command_answer", answer))
    with pytest.raises(ControlRejected, match=r"HTTP 500.*miner is busy"):
        run(dev.apply(ModeRequest("sleep")))
    assert _calls(sim, m, before) == [("POST", "mining/stop")]
    assert sim.call(m.miner_state) == "mining"


def test_an_answer_saying_success_false_is_a_refusal(sim: SimFleetThread) -> None:
    m, dev, before = _connected(sim, 1)
    sim.call(lambda: setattr(m, "command_answer", (200, {"success": False})))
    with pytest.raises(ControlRejected, match="success"):
        run(dev.apply(ModeRequest("sleep")))
    assert _calls(sim, m, before) == [("POST", "mining/stop")]


def test_a_json_answer_without_success_is_accepted_and_read_back(sim: SimFleetThread) -> None:
    """pyasic reads a non-empty answer without ``success`` as False: a stop the firmware
    took would have been called refused. Accepted here; the read-back says done."""
    m, dev, _ = _connected(sim, 2)
    sim.call(lambda: setattr(m, "command_answer", (200, {"restart_required": False})))
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED, out[0].error
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]

    run(go())
    assert sim.call(m.miner_state) in ("shutting-down", "stopped")


def test_a_stop_answered_in_garbage_is_unreadable(sim: SimFleetThread) -> None:
    m, dev, _ = _connected(sim, 0)
    sim.call(m.inject, FaultKind.MALFORMED)
    with pytest.raises(BadReply):
        run(dev.apply(ModeRequest("sleep")))


def test_a_stop_whose_connection_closes_unanswered_is_unreachable(sim: SimFleetThread) -> None:
    """The web server takes the request and closes without an answer (a hang that ends)."""
    m, dev, _ = _connected(sim, 1)
    sim.call(lambda: m.inject(FaultKind.HANG, 0.3))
    with pytest.raises(DeviceUnreachable):
        run(dev.apply(ModeRequest("sleep")))


def test_a_stop_to_a_stale_token_unlocks_once_and_is_sent_again(sim: SimFleetThread) -> None:
    """A token the web server forgot (it restarted) is answered 401: one unlock, the
    write once more, and it is done."""
    m, dev, before = _connected(sim, 2)
    sim.call(m._tokens.clear)
    applied = run(dev.apply(ModeRequest("sleep")))
    assert applied.request.action == "sleep"
    calls = _calls(sim, m, before)
    assert calls == [("POST", "mining/stop"), ("POST", "unlock"), ("POST", "mining/stop")]


def test_a_refused_password_on_renewal_is_a_rejection(sim: SimFleetThread) -> None:
    m, dev, before = _connected(sim, 0)

    def change() -> None:
        m._tokens.clear()
        m.password = "changed"

    sim.call(change)
    try:
        with pytest.raises(ControlRejected, match="password"):
            run(dev.apply(ModeRequest("sleep")))
    finally:
        sim.call(lambda: setattr(m, "password", "admin"))
    assert ("POST", "mining/stop") in _calls(sim, m, before)
    assert sim.call(m.miner_state) == "mining"


def test_wake_posts_resume_and_reads_back(sim: SimFleetThread) -> None:
    m, dev, before = _connected(sim, 1)
    seen: list[Outcome] = []

    async def go() -> Any:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await settle(fleet, dev.device_id)
        out = await fleet.apply({dev.device_id: ModeRequest("run")})
        assert out[0].ok, out[0].error
        await settle(fleet, dev.device_id)
        return seen[-1]

    last = run(go())
    assert last.kind is OutcomeKind.CONFIRMED, last
    posts = [p for meth, p in _calls(sim, m, before) if meth == "POST"]
    assert posts == ["mining/stop", "mining/resume"]


def test_a_preset_write_answered_with_an_error_is_a_refusal_sent_once(
    sim: SimFleetThread,
) -> None:
    """The settings write of a preset: an error answer is the firmware's refusal, the write
    sent once (pyasic unlocked again and gave up; the adapter sent it all again and called
    the miner unreadable)."""
    m, dev, before = _connected(sim, 0)
    sim.call(lambda: setattr(m, "command_answer", (400, {"err": "invalid preset"})))
    with pytest.raises(ControlRejected, match=r"HTTP 400.*invalid preset"):
        run(dev.apply(ModeRequest("run", 2600.0)))
    posts = [p for meth, p in _calls(sim, m, before) if meth == "POST"]
    assert posts == ["settings"]
    assert sim.call(lambda: m.conf_preset) == "3050"


def test_a_preset_is_written_read_back_and_woken_in_four_calls(sim: SimFleetThread) -> None:
    """A wake at a preset: the settings read, the write of the preset, the settings read
    back, ``mining/resume``; the body is the overclock section pyasic posts."""
    m, dev, _ = _connected(sim, 1)
    run(dev.apply(ModeRequest("sleep")))
    before = len(_calls(sim, m))
    applied = run(dev.apply(ModeRequest("run", 2600.0)))
    assert applied.target_w == 2592.0
    assert _calls(sim, m, before) == [
        ("GET", "settings"),
        ("POST", "settings"),
        ("GET", "settings"),
        ("POST", "mining/resume"),
    ]
    assert sim.call(lambda: m.conf_preset) == "2592"


def test_a_wake_never_confirmed_is_sent_as_the_other_documented_variant(
    sim: SimFleetThread,
) -> None:
    """pyasic wakes with ``mining/resume``, asic-rs with ``mining/start``; no source says
    whether ``mining/resume`` starts a miner ``mining/stop`` stopped. On a firmware where
    it does not, the wake ends unconfirmed, the next is sent as ``mining/start``, and the
    variant the read-back confirmed is kept."""
    m = _miner(sim, 2)
    sim.call(lambda: setattr(m, "resume_starts_stopped", False))
    dev = PyasicMiner("vn/2", m.host, timeout_s=10.0, confirm_within_s=0.8)
    seen: list[Outcome] = []

    async def wake() -> Outcome:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("run")})
        assert out[0].ok, out[0].error
        await settle(fleet, dev.device_id)
        return seen[-1]

    async def sleep() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await settle(fleet, dev.device_id)
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]

    try:
        run(sleep())
        before = len(_calls(sim, m))
        assert run(wake()).kind is OutcomeKind.UNCONFIRMED
        assert run(wake()).kind is OutcomeKind.CONFIRMED
        run(sleep())
        assert run(wake()).kind is OutcomeKind.CONFIRMED  # the variant that worked, kept
    finally:
        sim.call(lambda: setattr(m, "resume_starts_stopped", True))
    posts = [p for meth, p in _calls(sim, m, before) if meth == "POST" and p != "unlock"]
    assert posts == ["mining/resume", "mining/start", "mining/stop", "mining/start"]
