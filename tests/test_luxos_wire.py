"""The lean LuxOS transport (adapters.luxos_wire) against real loopback servers: what it
sends is what pyasic sends, it reads what pyasic reads (however the reply is cut into TCP
segments, with or without its NUL), and each failure is the kind the adapter reports:
no connection unreachable, no JSON unreadable, an error STATUS rejected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters import luxos, luxos_wire
from adapters.base import BadReply, ControlRejected, DeviceUnreachable, contain
from adapters.payloads import LUXOS_TELEMETRY
from adapters.sim.luxos import LuxosSim
from tests.support.simfleet import loopback_host

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serving(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _ok(body: dict[str, Any]) -> bytes:
    status = {"STATUS": "S", "When": 1, "Code": 22, "Msg": "ok", "Description": "LUXminer"}
    return json.dumps({"STATUS": [status], **body}).encode()


async def _request_of(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(4096), 5.0)


class _Rpc:
    """What the adapter's LuxOS calls take from pyasic's RPC object: address and session."""

    def __init__(self, port: int, session: str | None = None) -> None:
        self.ip, self.port, self.session_token = "127.0.0.1", port, session


def test_the_request_is_byte_for_byte_what_pyasic_sends() -> None:
    from pyasic.rpc.luxminer import LUXMinerRPCAPI

    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _request_of(reader))
        writer.write(_ok({"CURTAIL": [{"Action": "sleep mode"}]}) + b"\x00")
        await writer.drain()
        writer.close()

    async def go() -> None:
        server, port = await _serving(handler)
        async with server:
            rpc = LUXMinerRPCAPI("127.0.0.1", port=port)
            for args in (("curtail", "abcd", "sleep"), (LUXOS_TELEMETRY,), ("logon",)):
                await rpc.send_command(*args)
                await luxos_wire.ask("127.0.0.1", port, *args)

    asyncio.run(go())
    assert len(seen) == 6
    for pyasic_sent, ours in zip(seen[::2], seen[1::2], strict=True):
        assert ours == pyasic_sent


def test_a_reply_in_many_segments_with_no_nul_closed_by_the_peer_reads_whole() -> None:
    body = _ok({"POWER": [{"PSU": True, "Watts": 3250}], "pad": "x" * 5000})

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_of(reader)
        for i in range(0, len(body), 97):  # each written and drained on its own
            writer.write(body[i : i + 97])
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()  # no NUL: the close ends the reply

    async def go() -> Any:
        server, port = await _serving(handler)
        async with server:
            return await luxos_wire.ask("127.0.0.1", port, "power")

    assert asyncio.run(go())["POWER"][0]["Watts"] == 3250


def test_a_reply_ends_at_its_nul_while_the_connection_stays_open() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_of(reader)
        writer.write(_ok({"SESSION": [{"SessionID": "ab12"}]}) + b"\x00")
        await writer.drain()
        await release.wait()  # the miner has not closed yet
        writer.close()

    async def go() -> Any:
        server, port = await _serving(handler)
        async with server:
            try:
                return await asyncio.wait_for(luxos_wire.ask("127.0.0.1", port, "session"), 5)
            finally:
                release.set()

    assert asyncio.run(go())["SESSION"][0]["SessionID"] == "ab12"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"STATUS":[{"STATUS":"S","Msg":"ok"}],"POWER":[{"Watts":"inf"}]}\x00',  # pyasic: 0
        b'{"STATUS":[{"STATUS":"S","Msg":"ok"}],"POWER":[{"Watts":3100}{"Watts":9}]}\x00',
        b'{"STATUS":[{"STATUS":"S","Msg":"ok"}],"POWER":[{"Watts":3100}]}',  # no NUL
    ],
)
def test_replies_read_exactly_as_pyasic_reads_them(raw: bytes) -> None:
    from pyasic.rpc.base import BaseMinerRPCAPI

    assert luxos_wire.decode(raw) == BaseMinerRPCAPI._load_api_data(raw)


def _serve_raw(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_of(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handler


def test_a_truncated_reply_is_unreadable_and_an_error_status_rejected() -> None:
    power = _ok({"POWER": [{"PSU": True, "Watts": 3250}]})
    refused = json.dumps(
        {"STATUS": [{"STATUS": "E", "Code": 400, "Msg": "Invalid session id"}], "id": 1}
    ).encode()

    async def go() -> None:
        cut, port = await _serving(_serve_raw(power[: len(power) // 2]))
        async with cut:
            with pytest.raises(luxos_wire.Unparsable):
                await luxos_wire.ask("127.0.0.1", port, "power")
            # Through the adapter's edge: a reading that cannot be parsed is unreadable.
            with pytest.raises(BadReply):
                await contain("m", "telemetry", luxos.ask(_Rpc(port), LUXOS_TELEMETRY), 5.0)
        silent, port = await _serving(_serve_raw(b""))  # closed unanswered (a reboot)
        async with silent:
            with pytest.raises(luxos_wire.Unparsable):
                await luxos_wire.ask("127.0.0.1", port, "power")
        no, port = await _serving(_serve_raw(refused + b"\x00"))
        async with no:
            with pytest.raises(luxos_wire.Refused, match="Invalid session id"):
                await luxos_wire.ask("127.0.0.1", port, "curtail", "x", "sleep")
            with pytest.raises(ControlRejected, match="Invalid session id"):
                await luxos.curtail("m", _Rpc(port, "x"), "sleep", 5.0)

    asyncio.run(go())


def test_a_refused_connection_is_unreachable() -> None:
    host = loopback_host()  # nothing listens there

    async def go() -> None:
        with pytest.raises(ConnectionRefusedError):
            await luxos_wire.ask(host, 4028, "power")
        rpc = _Rpc(4028)
        rpc.ip = host
        with pytest.raises(DeviceUnreachable):
            await contain("m", "telemetry", luxos.ask(rpc, LUXOS_TELEMETRY), 5.0)
        with pytest.raises(DeviceUnreachable):
            await luxos.curtail("m", rpc, "sleep", 5.0)

    asyncio.run(go())


def test_a_timed_out_request_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_of(reader)
        await reader.read()  # never answers; returns when the client closes
        closed.set()
        writer.close()

    async def go() -> None:
        server, port = await _serving(handler)
        async with server:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(luxos_wire.ask("127.0.0.1", port, "power"), 0.2)
            await asyncio.wait_for(closed.wait(), 5.0)

    asyncio.run(go())


def test_the_simulator_reads_a_request_in_segments_and_answers_a_bare_close() -> None:
    """The simulator's API port (a Protocol, no task per request): a request cut into
    pieces is answered once whole; a client that closes without a request gets the
    firmware's invalid-JSON status; one left open without a request is ended by stop()."""
    host = loopback_host()

    async def go() -> None:
        sim = LuxosSim(host)
        await sim.start()
        try:
            reader, writer = await asyncio.open_connection(host, 4028)
            for piece in (b'{"comm', b'and": "pow', b'er"}'):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            reply = await asyncio.wait_for(reader.read(), 5.0)
            writer.close()
            assert reply.endswith(b"\x00")
            assert json.loads(reply[:-1])["POWER"][0]["Watts"] > 2000
            reader, writer = await asyncio.open_connection(host, 4028)
            writer.write_eof()
            bare = json.loads((await asyncio.wait_for(reader.read(), 5.0)).rstrip(b"\x00"))
            writer.close()
            assert bare["STATUS"][0]["STATUS"] == "E" and bare["STATUS"][0]["Msg"] == "Invalid JSON"
            # A connection left open without a request is ended by stop().
            reader, writer = await asyncio.open_connection(host, 4028)
            await asyncio.sleep(0.05)
        finally:
            await sim.stop()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()

    asyncio.run(go())


def test_the_simulator_closes_a_client_that_sends_no_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a miner's API gives up on a client that never writes (cgminer-style APIs do): one
    connection left silent is closed after REQUEST_TIMEOUT_S; one that asks is answered."""
    from adapters.sim import api_port

    monkeypatch.setattr(api_port, "REQUEST_TIMEOUT_S", 0.3)
    host = loopback_host()

    async def go() -> None:
        sim = LuxosSim(host)
        await sim.start()
        try:
            silent_r, silent_w = await asyncio.open_connection(host, 4028)
            reply = await asyncio.wait_for(luxos_wire.ask(host, 4028, "version"), 5.0)
            assert reply["VERSION"][0]["Type"]
            assert await asyncio.wait_for(silent_r.read(), 5.0) == b""
            silent_w.close()
        finally:
            await sim.stop()

    asyncio.run(go())


def test_a_reply_that_is_json_but_no_object_is_unreadable_on_a_command_too() -> None:
    """pyasic's check walks the reply as a dict and fails with AttributeError, which the
    adapter reads as unreadable, not as the firmware's refusal."""

    async def go() -> None:
        odd, port = await _serving(_serve_raw(b'["STATUS"]\x00'))
        async with odd:
            with pytest.raises(BadReply):
                await luxos.curtail("m", _Rpc(port, "x"), "sleep", 5.0)

    asyncio.run(go())
