"""A garbled device reply is a BadReply (or the firmware's refusal) in words: it names the
device, the command and what was wrong with the reply, never a Python exception's name,
and it is never logged as a bug in gridsched with a traceback.

First through the firmware simulators over TCP (their ``garble`` fault: valid JSON in a
shape the client cannot use; ``malformed``: broken JSON), for every family they simulate;
then, for replies the simulators cannot shape, against a small hand-written LuxOS server
answering one malformed body (a field audit found LuxOS's logon reply read with a bare
``reply["SESSION"]``: ``KeyError: 'SESSION'`` in the audit trail, and a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any, cast

import pytest

from adapters import luxos, luxos_atm
from adapters.asic import PyasicMiner
from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceUnreachable,
    Health,
    ModeRequest,
)
from adapters.fleet import Outcome, OutcomeKind
from adapters.luxos_atm import AtmState
from adapters.sim.fleet import SimFleetThread
from adapters.sim.server import FaultKind
from tests.support.simfleet import can_bind_80, firmware_fleet, one_device_fleet
from tests.support.words import assert_no_python_names

#: Each simulated family and the ports its simulator listens on.
FAMILIES = {
    "luxos": (4028,),
    "antminer": (4028, 80),
    "braiins": (4028, 50051, 80),
    "whatsminer": (4028,),
    "vnish": (4028, 80),
    "whatsminer3": (4433, 4028),
    "auradine": (4028, 8080),
}
NEEDS_80 = {f for f, ports in FAMILIES.items() if 80 in ports}


def _in_words(err: BaseException, device_id: str) -> None:
    """An adapter's own error, naming the device, with no Python exception name in it."""
    assert isinstance(err, AdapterError), f"{type(err).__name__}: {err}"
    text = str(err)
    assert text.startswith(f"{device_id}: "), text
    assert_no_python_names(text)


@contextlib.contextmanager
def _one_miner(firmware: str) -> Iterator[tuple[SimFleetThread, Any]]:
    """One simulated miner of ``firmware`` on its own thread, and the miner."""
    fleet = cast(Generator[SimFleetThread], firmware_fleet(1, firmware, FAMILIES[firmware]))
    sim = next(fleet)
    try:
        yield sim, sim.fleet.miners[0]
    finally:
        fleet.close()


def _no_bug_logged(caplog: pytest.LogCaptureFixture) -> None:
    ours = [r for r in caplog.records if r.name.startswith("gridsched")]
    bugs = [r for r in ours if "a bug in gridsched" in r.getMessage() or r.exc_info]
    assert not bugs, [r.getMessage() for r in bugs]


def _garbled_apply(
    firmware: str, request: ModeRequest, caplog: pytest.LogCaptureFixture | None = None
) -> tuple[AdapterError | None, str]:
    """One simulated miner of ``firmware``, connected and read (a LuxOS session held),
    told ``request`` while it answers garbled: the adapter's error (None: taken as done)
    and the miner's phase after it (a garbled answer does nothing)."""
    with _one_miner(firmware) as (sim, m):
        dev = PyasicMiner(f"{firmware}/0", m.host, timeout_s=5.0)

        async def go() -> AdapterError | None:
            await dev.connect()
            await dev.read()
            if dev._luxos:
                assert dev._need().rpc.session_token, "the adapter holds a session"
            sim.call(m.inject, FaultKind.GARBLE)
            try:
                await dev.apply(request)
            except AdapterError as exc:
                return exc
            finally:
                sim.call(m.clear_faults)
                await dev.close()
            return None

        with contextlib.nullcontext() if caplog is None else caplog.at_level(logging.INFO):
            err = asyncio.run(go())
        return err, sim.call(lambda: m.state.phase)


# -- every simulated family, under its garble and malformed faults -------------------------


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> Iterator[tuple[str, SimFleetThread]]:
    firmware: str = request.param
    if firmware in NEEDS_80 and not can_bind_80():
        pytest.skip("cannot bind port 80 on loopback")
    for sim in firmware_fleet(1, firmware, FAMILIES[firmware]):
        yield firmware, sim


@pytest.mark.parametrize("kind", [FaultKind.GARBLE, FaultKind.MALFORMED])
def test_every_family_says_a_bad_reply_in_words(
    family: tuple[str, SimFleetThread], kind: FaultKind, caplog: pytest.LogCaptureFixture
) -> None:
    """Each call of the adapter (a reading, a sleep, a run at a power target, a new logon
    where the firmware has sessions, a connect) either goes through or fails with the
    adapter's own error in words; what succeeds the read-back judges."""
    firmware, sim = family
    m = sim.fleet.miners[0]
    dev = PyasicMiner(f"{firmware}/0", m.host, timeout_s=5.0)
    failed: list[AdapterError] = []

    async def attempt(aw: Any) -> None:
        try:
            await aw
        except AdapterError as exc:
            _in_words(exc, dev.device_id)
            failed.append(exc)

    async def go() -> None:
        info = await dev.connect()
        await dev.read()
        target = info.power_targets_w[0] if info.power_targets_w else 3000.0
        sim.call(m.inject, kind)
        try:
            await attempt(dev.read())
            await attempt(dev.apply(ModeRequest("sleep")))
            if dev._luxos:  # a session LuxOS ended: the command logs on first
                dev._need().rpc.session_token = None
            await attempt(dev.apply(ModeRequest("run", target)))
            await attempt(dev.connect())
            fresh = PyasicMiner(f"{firmware}/0", m.host, timeout_s=5.0)  # its first connect
            await attempt(fresh.connect())
            await fresh.close()
        finally:
            sim.call(m.clear_faults)
            await dev.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    if kind is FaultKind.GARBLE:  # broken JSON on one port, another may still serve
        assert failed, "a garbled reply went unnoticed by every call"
    _no_bug_logged(caplog)


#: Braiins OS+ answers PauseMining and ResumeMining with an empty message when it acts
#: (``already_paused`` false: proto3 sends no field at its default), so a garbled answer,
#: every field at its default, is that very answer: only the read-back can tell.
WRITES_TELL = sorted(set(FAMILIES) - {"braiins"})


@pytest.mark.parametrize("firmware", WRITES_TELL)
def test_a_garbled_sleep_is_never_taken_as_done(
    firmware: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A miner that answers a sleep garbled, and does nothing, is unreadable, never
    "accepted" (field24 found LuxOS's taken while a session was held; the same probe then
    found VNish's and Whatsminer API v3's taken: a JSON list answered to ``mining/stop``,
    and ``code`` 0 with a ``msg`` that is not pyasic's ``"ok"``)."""
    if firmware in NEEDS_80 and not can_bind_80():
        pytest.skip("cannot bind port 80 on loopback")
    err, phase = _garbled_apply(firmware, ModeRequest("sleep"), caplog)
    assert phase != "sleeping", "the garbled reply's miner did nothing"
    assert isinstance(err, BadReply), f"a garbled sleep was taken as done: {err!r}"
    _in_words(err, f"{firmware}/0")
    _no_bug_logged(caplog)


def test_a_garbled_braiins_power_target_answer_is_unreadable_not_a_refusal() -> None:
    """Braiins OS+ answers SetPowerTarget with the target it set; a garbled answer (every
    field at its default) names none. Before: "the firmware set 0 W", a refusal, which
    starts the refused-mode wait as if the firmware had said no."""
    err, _ = _garbled_apply("braiins", ModeRequest("run", 3000.0))
    assert isinstance(err, BadReply), repr(err)
    _in_words(err, "braiins/0")
    assert "SetPowerTarget 3000 W" in str(err) and "power_target" in str(err), err


def test_luxos_garbled_logon_names_the_command_and_the_session_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The audit's case: a LuxOS miner whose session must be opened (on-demand sessions, or
    one ended) answers its logon garbled. Before: ``curtail sleep: KeyError: 'SESSION'``,
    logged as a bug in gridsched with a traceback."""
    with _one_miner("luxos") as (sim, m):
        dev = PyasicMiner("lux/0", m.host, timeout_s=5.0, keep_session=False)

        async def go() -> list[AdapterError]:
            await dev.connect()
            sim.call(m.inject, FaultKind.GARBLE)
            errors: list[AdapterError] = []
            for request in (ModeRequest("sleep"), ModeRequest("run", 3050)):
                with pytest.raises(AdapterError) as got:
                    await dev.apply(request)
                errors.append(got.value)
            return errors

        with caplog.at_level(logging.INFO):
            sleep, run = asyncio.run(go())
    for err in (sleep, run):
        assert isinstance(err, BadReply), err
        _in_words(err, "lux/0")
        assert "logon" in str(err) and "SESSION[0].SessionID" in str(err), err
    assert str(sleep).startswith("lux/0: curtail sleep: "), sleep
    _no_bug_logged(caplog)


def test_luxos_garbled_logon_through_the_fleet_is_unreadable_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the daemon hears (and the audit trail's row says): the fleet's outcome, failed
    with the words, the device unreadable, no traceback logged."""
    seen: list[Outcome] = []
    with _one_miner("luxos") as (sim, m):
        dev = PyasicMiner("lux/8", m.host, timeout_s=5.0, keep_session=False)
        fleet = one_device_fleet(dev, seen)

        async def go() -> None:
            await fleet.connect_all()
            sim.call(m.inject, FaultKind.GARBLE)
            try:
                await fleet.apply({"lux/8": ModeRequest("sleep")})
            finally:
                await fleet.close()

        with caplog.at_level(logging.INFO):
            asyncio.run(go())
    out = seen[-1]
    assert out.kind is OutcomeKind.FAILED and out.error, out
    assert "curtail sleep: the logon reply has no SESSION[0].SessionID" in out.error, out.error
    assert_no_python_names(out.error or "")
    assert fleet.status["lux/8"].health is Health.UNREADABLE
    _no_bug_logged(caplog)


def test_luxos_garbled_curtail_in_a_held_session_is_a_bad_reply_not_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The field audit's case (field24): with a session held, a LuxOS miner answers
    ``curtail sleep`` garbled (``{"STATUS":"S","CURTAIL":{"0":"?"}}``) and does nothing.
    Before: the adapter checked only for an error STATUS, so the sleep read as accepted
    and only the read-back, a minute later, found it unconfirmed."""
    err, phase = _garbled_apply("luxos", ModeRequest("sleep"), caplog)
    assert isinstance(err, BadReply), err
    _in_words(err, "luxos/0")
    assert str(err).startswith("luxos/0: curtail sleep: the reply "), err
    assert phase != "sleeping", "the garbled reply's miner did nothing"
    _no_bug_logged(caplog)


# -- LuxOS replies the simulator cannot shape, from a hand-written server ------------------


def _status(code: str = "S", msg: str = "ok") -> dict[str, Any]:
    return {"STATUS": code, "When": 1, "Code": 22, "Msg": msg, "Description": "LUXminer"}


class _Rpc:
    """What the LuxOS calls take of pyasic's RPC object: the address and the session."""

    def __init__(self, port: int, session: str | None = None) -> None:
        self.ip, self.port, self.session_token = "127.0.0.1", port, session


async def _luxos_server(replies: dict[str, bytes]) -> tuple[asyncio.Server, int]:
    """A LuxOS API answering each command with ``replies[command]`` (NUL-terminated), or a
    success with nothing else for one not listed; one request per connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await asyncio.wait_for(reader.read(4096), 5.0))
        default = json.dumps({"STATUS": [_status()], "id": 1}).encode()
        writer.write(replies.get(request["command"], default) + b"\x00")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _error_of(replies: dict[str, bytes], call: Callable[[int], Awaitable[Any]]) -> AdapterError:
    """The adapter's error from ``call(port)`` against a LuxOS API answering ``replies``."""

    async def go() -> AdapterError:
        server, port = await _luxos_server(replies)
        async with server:
            with pytest.raises(AdapterError) as got:
                await call(port)
        return got.value

    return asyncio.run(go())


def _body(**parts: Any) -> bytes:
    return json.dumps({"STATUS": [_status()], **parts, "id": 1}).encode()


LOGONS = {
    "no SESSION": _body(),
    "SESSION not a list": _body(SESSION={"SessionID": "ab12"}),
    "SESSION a string": _body(SESSION="ab12"),
    "SESSION empty": _body(SESSION=[]),
    "no SessionID": _body(SESSION=[{"Session": "ab12"}]),
    "SessionID a list": _body(SESSION=[{"SessionID": ["ab12"]}]),
    "SessionID an object": _body(SESSION=[{"SessionID": {"id": "ab12"}}]),
}


@pytest.mark.parametrize("reply", LOGONS.values(), ids=list(LOGONS))
def test_a_luxos_logon_reply_without_a_session_id_is_a_bad_reply(reply: bytes) -> None:
    async def go() -> list[AdapterError]:
        server, port = await _luxos_server({"logon": reply})
        errors: list[AdapterError] = []
        async with server:
            for call in (
                luxos.curtail("lux/1", _Rpc(port), "sleep", 5.0),
                luxos_atm.set_profile("lux/1", _Rpc(port), "default", AtmState(), 5.0),
                luxos.renew_session("lux/1", _Rpc(port), 5.0),
            ):
                with pytest.raises(AdapterError) as got:
                    await call
                errors.append(got.value)
        return errors

    curtail, profile, renewal = asyncio.run(go())
    for err, what in ((curtail, "curtail sleep"), (profile, "profileset default")):
        assert isinstance(err, BadReply), err
        _in_words(err, "lux/1")
        assert str(err).startswith(f"lux/1: {what}: the logon reply has no "), err
        assert "SESSION[0].SessionID" in str(err), err
    assert isinstance(renewal, BadReply), renewal
    _in_words(renewal, "lux/1")
    assert str(renewal).startswith("lux/1: session renewal: the logon reply has no "), renewal


def test_a_luxos_logon_answered_with_no_session_is_still_refused() -> None:
    """An empty SessionID is LuxOS's own answer that it gave none (as before)."""

    async def go() -> None:
        server, port = await _luxos_server({"logon": _body(SESSION=[{"SessionID": ""}])})
        async with server:
            with pytest.raises(ControlRejected, match="LuxOS gave no session"):
                await luxos.curtail("lux/2", _Rpc(port), "sleep", 5.0)

    asyncio.run(go())


def test_a_luxos_command_answered_with_no_json_is_unreadable_not_refused() -> None:
    """A reply that is not JSON is the reply's fault (unreadable), not the firmware refusing
    the command (before: ControlRejected, and the device marked as having refused)."""

    async def go() -> list[AdapterError]:
        server, port = await _luxos_server(
            {"curtail": b"<html>busy</html>", "profileset": b'{"STATUS":[{"STATUS":"S"'}
        )
        errors: list[AdapterError] = []
        async with server:
            for call in (
                luxos.curtail("lux/3", _Rpc(port, "ab12"), "sleep", 5.0),
                luxos_atm.set_profile("lux/3", _Rpc(port, "ab12"), "default", AtmState(), 5.0),
            ):
                with pytest.raises(AdapterError) as got:
                    await call
                errors.append(got.value)
        return errors

    curtail, profile = asyncio.run(go())
    for err, what in ((curtail, "curtail sleep"), (profile, "profileset default")):
        assert isinstance(err, BadReply), err
        _in_words(err, "lux/3")
        assert str(err).startswith(f"lux/3: {what}: the reply is not JSON"), err


def test_a_luxos_command_closed_unanswered_is_unreachable_not_refused() -> None:
    """No reply at all (a rebooting miner) is a miner not reached (before: a refusal)."""

    err = _error_of(
        {"curtail": b""}, lambda port: luxos.curtail("lux/7", _Rpc(port, "ab12"), "sleep", 5.0)
    )
    assert isinstance(err, DeviceUnreachable), err
    assert str(err) == "lux/7: curtail sleep: no reply (the miner closed the connection unanswered)"


CURTAILS = {
    "STATUS a string": json.dumps({"STATUS": "S", "CURTAIL": {"0": "?"}, "id": 1}).encode(),
    "no STATUS": json.dumps({"CURTAIL": [{"Action": "sleep mode"}], "id": 1}).encode(),
    "STATUS empty": json.dumps({"STATUS": [], "id": 1}).encode(),
    "CURTAIL an object": _body(CURTAIL={"Action": "sleep mode"}),
    "CURTAIL a string": _body(CURTAIL="sleep mode"),
}


@pytest.mark.parametrize("reply", CURTAILS.values(), ids=list(CURTAILS))
def test_a_luxos_curtail_reply_in_no_usable_shape_is_a_bad_reply(reply: bytes) -> None:
    """A success is a STATUS list whose first entry says S (or I), and a CURTAIL, where
    the reply has one, a list (docs.luxor.tech, "curtail"); pyasic's own check passes a
    STATUS given as text, and so did the adapter (field24)."""

    err = _error_of(
        {"curtail": reply}, lambda port: luxos.curtail("lux/10", _Rpc(port, "ab12"), "sleep", 5.0)
    )
    assert isinstance(err, BadReply), err
    _in_words(err, "lux/10")
    assert str(err).startswith("lux/10: curtail sleep: "), err


def test_a_luxos_curtail_answered_as_documented_is_done() -> None:
    """The documented reply, and one with no CURTAIL part (a STATUS alone), are taken."""

    async def go() -> None:
        for reply in (_body(CURTAIL=[{"Action": "sleep mode"}]), _body()):
            server, port = await _luxos_server({"curtail": reply})
            async with server:
                await luxos.curtail("lux/11", _Rpc(port, "ab12"), "sleep", 5.0)

    asyncio.run(go())


PROFILESETS = {
    "no PROFILE": _body(),
    "PROFILE an object": _body(PROFILE={"Profile": "default"}),
    "Profile a number": _body(PROFILE=[{"Profile": 7}]),
}


@pytest.mark.parametrize("reply", PROFILESETS.values(), ids=list(PROFILESETS))
def test_a_luxos_profileset_reply_without_the_profile_is_a_bad_reply(reply: bytes) -> None:
    err = _error_of(
        {"profileset": reply},
        lambda port: luxos_atm.set_profile("lux/4", _Rpc(port, "ab12"), "default", AtmState(), 5.0),
    )
    assert isinstance(err, BadReply), err
    _in_words(err, "lux/4")
    assert str(err).startswith("lux/4: profileset default: the reply has no PROFILE"), err


def test_a_luxos_profileset_answered_with_another_profile_is_refused() -> None:
    err = _error_of(
        {"profileset": _body(PROFILE=[{"Profile": "eco"}])},
        lambda port: luxos_atm.set_profile("lux/5", _Rpc(port, "ab12"), "default", AtmState(), 5.0),
    )
    assert isinstance(err, ControlRejected), err
    assert str(err) == "lux/5: profileset default: the firmware set profile 'eco'", err


PROFILES = {
    "no PROFILES": _body(),
    "PROFILES an object": _body(PROFILES={"Watts": 3000, "Profile Name": "default"}),
    "Watts text": _body(PROFILES=[{"Watts": "lots", "Profile Name": "default"}]),
    "a row a string": _body(PROFILES=["default"]),
}


@pytest.mark.parametrize("reply", PROFILES.values(), ids=list(PROFILES))
def test_a_luxos_profiles_reply_in_no_usable_shape_is_a_bad_reply(reply: bytes) -> None:
    err = _error_of({"profiles": reply}, lambda port: luxos.setup("lux/6", _Rpc(port), 5.0))
    assert isinstance(err, BadReply), err
    _in_words(err, "lux/6")
    assert "profiles" in str(err) and "PROFILES" in str(err), err


def test_a_whatsminer_write_answered_garbled_is_a_bad_reply_not_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """btminer answers a write with ``Msg`` "API command OK"; a garbled answer (no ``Msg``)
    is unreadable, and the simulator, like the others under ``garble``, did nothing."""
    with _one_miner("whatsminer") as (sim, m):
        dev = PyasicMiner("wm/0", m.host, timeout_s=5.0)

        async def go() -> AdapterError:
            await dev.connect()
            sim.call(m.inject, FaultKind.GARBLE)
            with pytest.raises(AdapterError) as got:
                await dev.apply(ModeRequest("sleep"))
            return got.value

        with caplog.at_level(logging.INFO):
            err = asyncio.run(go())
        assert sim.call(lambda: m.state.phase) == "mining"
    assert isinstance(err, BadReply), err
    _in_words(err, "wm/0")
    assert str(err).startswith("wm/0: power_off: the reply has no Msg"), err
    _no_bug_logged(caplog)


def test_a_whatsminer_v3_device_info_in_no_usable_shape_is_a_bad_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The firmware version of API v3 comes from ``get.device.info``'s msg.system.fwversion
    (read by the adapter itself): garbled, it is a BadReply naming the call (before:
    ``TypeError: list indices must be integers``, logged as a bug in gridsched); a connect
    goes on without the version, as when the miner does not say."""
    from adapters import whatsminer3
    from adapters.base import contain

    with _one_miner("whatsminer3") as (sim, m):
        dev = PyasicMiner("wm3/0", m.host, timeout_s=5.0)

        async def go() -> tuple[AdapterError, str]:
            await dev.connect()
            sim.call(m.inject, FaultKind.GARBLE)
            with pytest.raises(AdapterError) as got:
                await contain("wm3/0", "version", whatsminer3.fw_version("wm3/0", dev._need()), 5.0)
            dev.info = None  # as after a rediscovery: the version is read again
            info = await dev.connect()
            return got.value, info.firmware_version

        with caplog.at_level(logging.INFO):
            err, version = asyncio.run(go())
    assert isinstance(err, BadReply), err
    _in_words(err, "wm3/0")
    assert str(err).startswith("wm3/0: get.device.info: the reply has no msg.system"), err
    assert version == ""
    _no_bug_logged(caplog)


# -- a GPU agent answering in no usable shape (a hand-written agent, auth "none") ----------


async def _gpu_agent(results: dict[str, dict[str, Any]]) -> tuple[asyncio.Server, int]:
    """A GPU agent on loopback (no secret) answering each request with
    ``results[call or op]``; a call not listed gets NVML's own good answer shape."""
    from adapters import gpu_wire

    good: dict[str, Any] = {
        "identity": ["H100", "GPU-1"],
        "driver_version": "550.54",
        "limit_constraints_w": [200.0, 700.0],
        "reset_locked_clocks": None,
        "reading": [300.0, 700.0, 1e6, 50.0, 1800.0, 60.0],
    }

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps({"protocol": gpu_wire.PROTOCOL, "auth": "none"}).encode() + b"\n")
        while line := await reader.readline():
            req = json.loads(line)
            name = str(req.get("call", req.get("op")))
            out = results.get(name, {"ok": True, "result": good.get(name), "gpus": 1})
            writer.write(json.dumps(out).encode() + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


GPU_ANSWERS = {
    "count without gpus": ("count", {"ok": True}),
    "count as text": ("count", {"ok": True, "gpus": "eight"}),
    "a call without result": ("reading", {"ok": True}),
    "reading as text": ("reading", {"ok": True, "result": "300 W"}),
    "reading too short": ("reading", {"ok": True, "result": [300.0, 700.0]}),
    "reading with null": ("reading", {"ok": True, "result": [None, 700, 1, 50, 1800, 60]}),
    "identity not a pair": ("identity", {"ok": True, "result": "H100"}),
    "limits as text": ("limit_constraints_w", {"ok": True, "result": ["low", "high"]}),
}


@pytest.mark.parametrize("answer", GPU_ANSWERS.values(), ids=list(GPU_ANSWERS))
def test_a_gpu_agent_answer_in_no_usable_shape_is_a_bad_reply(
    answer: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.gpu import NvmlGpu
    from adapters.gpu_remote import AgentBackend

    call, out = answer

    async def go() -> AdapterError:
        server, port = await _gpu_agent({call: out})
        async with server:
            backend = AgentBackend("127.0.0.1", port, timeout_s=5.0)
            dev = NvmlGpu("g/0", "0", backend, 0, 5.0)
            try:
                with pytest.raises(AdapterError) as got:
                    if call == "count":
                        await backend.count()
                    else:
                        await dev.connect()
                        await dev.read()
            finally:
                await backend.close()
        return got.value

    with caplog.at_level(logging.INFO):
        err = asyncio.run(go())
    assert isinstance(err, BadReply), err
    device = "nvml" if call == "count" else "g/0"
    _in_words(err, device)
    assert f"{call}: " in str(err) and "expected" in str(err), err
    _no_bug_logged(caplog)


@pytest.mark.skipif(not can_bind_80(), reason="cannot bind port 80 on loopback")
@pytest.mark.parametrize("miner", ["overclock", ["overclock"], {"overclock": "2592"}])
def test_a_vnish_settings_reply_in_no_usable_shape_is_a_bad_reply(
    miner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A preset is written into the settings' ``miner.overclock`` as read: settings whose
    ``miner`` is no object (the simulator's own answer replaced for ``settings``) are
    unreadable (before: an AttributeError out of the adapter's apply itself)."""
    with _one_miner("vnish") as (sim, m):
        dev = PyasicMiner("vn/0", m.host, timeout_s=5.0)

        async def go() -> AdapterError:
            info = await dev.connect()
            inner = m.web_get

            def web_get(name: str) -> Any:
                return {"miner": miner} if name == "settings" else inner(name)

            sim.call(lambda: setattr(m, "web_get", web_get))
            try:
                with pytest.raises(AdapterError) as got:
                    await dev.apply(ModeRequest("run", info.power_targets_w[0]))
            finally:
                sim.call(lambda: setattr(m, "web_get", inner))
                await dev.close()
            return got.value

        with caplog.at_level(logging.INFO):
            err = asyncio.run(go())
    assert isinstance(err, BadReply), err
    _in_words(err, "vn/0")
    assert "miner.overclock" in str(err), err
    _no_bug_logged(caplog)
