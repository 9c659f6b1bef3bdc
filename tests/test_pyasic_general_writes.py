"""Writes that still go through pyasic's own ``stop_mining`` / ``resume_mining`` (the
families with no path of their own: Family.OTHER, and Braiins OS+ on pyasic's pre-gRPC
``BOSMiner`` class, where no gRPC channel is kept): no answer is never success nor a
refusal.

pyasic's RPC client (``rpc/base.py`` ``_send_bytes``) answers a connection it could not
open, or a read that timed out, with ``b"{}"``, which ``validate_command_output`` passes;
a connection closed without an answer decodes as an ``APIError``, which the backends'
``stop_mining`` turn into False. So "nothing listens" read as a refused or unreadable
command and "closed unanswered" as a refusal. A loopback server here speaks the cgminer
API as pyasic's discovery and backends read it (``miners/factory.py``: ``version``'s
``PROD`` for Avalon, ``devdetails``' ``Model`` for Braiins OS+; ``backends/avalonminer.py``:
``ascset 0,softoff`` answered with "success" in ``Msg``; ``backends/braiins_os.py``
``BOSMiner``: ``pause`` / ``resume`` answered with a ``PAUSE`` / ``RESUME`` section).

ePIC PowerPlay (Family.OTHER on a web API) is sent by the adapter itself
(``adapters/epic.py``): pyasic read ``success`` from an answer that carries ``result``,
and took ``{}`` as success. A loopback server serves its dashboard page on 80 and its
HTTP API on 4028 as pyasic's discovery and ``web/epic.py`` reach them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.asic import PyasicMiner
from adapters.base import (
    BadReply,
    ControlRejected,
    DeviceUnreachable,
    ModeRequest,
    Unsupported,
)
from tests.support.simfleet import loopback_host

STATUS_OK = {"STATUS": "S", "When": 1, "Code": 1, "Msg": "ok", "Description": "cgminer 4.11.1"}
#: What each kind of miner answers to ``version`` (and ``devdetails``) for pyasic to find it.
IDENTITY: dict[str, dict[str, Any]] = {
    "avalon": {
        "version": {
            "STATUS": [STATUS_OK],
            "VERSION": [
                {"CGMiner": "4.11.1", "API": "3.7", "PROD": "AvalonMiner 1246", "MODEL": "1246"}
            ],
            "id": 1,
        },
    },
    "bosminer": {
        "version": {
            "STATUS": [{**STATUS_OK, "Description": "BOSminer 0.2.0"}],
            "VERSION": [{"BOSminer": "0.2.0", "API": "3.7"}],
            "id": 1,
        },
        "devdetails": {
            "STATUS": [{**STATUS_OK, "Description": "BOSminer 0.2.0"}],
            "DEVDETAILS": [{"DEVDETAILS": 0, "Name": "Chain", "Model": "Bitmain Antminer S9"}],
            "id": 1,
        },
    },
    "innosilicon": {
        "version": {
            "STATUS": [{**STATUS_OK, "Description": "innominer 1.0"}],
            "VERSION": [{"API": "3.7"}],
            "id": 1,
        },
    },
}
#: The write each kind's ``stop_mining`` / ``resume_mining`` sends.
WRITES = {"avalon": ("ascset",), "bosminer": ("pause", "resume")}


@dataclass
class CgminerApi:
    """One miner's cgminer-style API on ``host``:4028; ``write`` says how it answers the
    write commands: "ok", "error" (STATUS E), "close" (closes unanswered), "garbage"."""

    kind: str
    host: str
    write: str = "ok"
    seen: list[str] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 4028)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = b""
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                raw += chunk
                try:
                    request = json.loads(raw)
                    break
                except ValueError:
                    continue
            command = str(request.get("command", ""))
            self.seen.append(command)
            writer.write(self._answer(command))
            await writer.drain()
        finally:
            writer.close()

    def _answer(self, command: str) -> bytes:
        if command in WRITES.get(self.kind, ()):
            if self.write == "close":
                return b""
            if self.write == "garbage":
                return b"\xff\xfe<html>busy</html>"
            if self.write == "error":
                status = {**STATUS_OK, "STATUS": "E", "Code": 45, "Msg": "Access denied"}
                return json.dumps({"STATUS": [status], "id": 1}).encode()
            msg = "ASC 0 set info: success softoff" if command == "ascset" else "ok"
            body: dict[str, Any] = {"STATUS": [{**STATUS_OK, "Msg": msg}], "id": 1}
            if command in ("pause", "resume"):
                body[command.upper()] = [{"Msg": f"{command} ok"}]
            return json.dumps(body).encode()
        known = IDENTITY[self.kind].get(command)
        return json.dumps(known or {"STATUS": [STATUS_OK], "id": 1}).encode()


@pytest.fixture
def host() -> Iterator[str]:
    yield loopback_host(ports=(4028,))


async def _connected(api: CgminerApi) -> PyasicMiner:
    await api.start()
    dev = PyasicMiner(f"{api.kind}/0", api.host, timeout_s=5.0)
    info = await dev.connect()
    assert info.family == ("braiins-os" if api.kind == "bosminer" else "other"), info
    return dev


@pytest.mark.parametrize("kind", ["avalon", "bosminer"])
def test_a_write_answered_success_is_accepted(host: str, kind: str) -> None:
    api = CgminerApi(kind, host)

    async def go() -> None:
        dev = await _connected(api)
        try:
            await dev.apply(ModeRequest("sleep"))
            await dev.apply(ModeRequest("run"))
        finally:
            await api.stop()

    asyncio.run(go())
    assert [c for c in api.seen if c in WRITES[kind]] == (
        ["ascset", "ascset"] if kind == "avalon" else ["pause", "resume"]
    )


@pytest.mark.parametrize("kind", ["avalon", "bosminer"])
def test_a_write_to_a_miner_gone_from_the_network_is_unreachable(host: str, kind: str) -> None:
    """Before: pyasic's ``{}`` for a connection it could not open read as a refusal
    (Braiins OS+) or as an unreadable answer (Avalon)."""
    api = CgminerApi(kind, host)

    async def go() -> None:
        dev = await _connected(api)
        await api.stop()
        with pytest.raises(DeviceUnreachable):
            await dev.apply(ModeRequest("sleep"))

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["avalon", "bosminer"])
def test_a_write_closed_unanswered_is_unreachable_not_refused(host: str, kind: str) -> None:
    api = CgminerApi(kind, host, write="close")

    async def go() -> None:
        dev = await _connected(api)
        try:
            with pytest.raises(DeviceUnreachable, match="without an answer"):
                await dev.apply(ModeRequest("sleep"))
        finally:
            await api.stop()

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["avalon", "bosminer"])
def test_a_write_answered_in_garbage_is_unreadable_not_refused(host: str, kind: str) -> None:
    api = CgminerApi(kind, host, write="garbage")

    async def go() -> None:
        dev = await _connected(api)
        try:
            with pytest.raises(BadReply, match="not JSON"):
                await dev.apply(ModeRequest("sleep"))
        finally:
            await api.stop()

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["avalon", "bosminer"])
def test_a_write_answered_with_an_error_status_is_refused(host: str, kind: str) -> None:
    api = CgminerApi(kind, host, write="error")

    async def go() -> None:
        dev = await _connected(api)
        try:
            with pytest.raises(ControlRejected):
                await dev.apply(ModeRequest("sleep"))
        finally:
            await api.stop()

    asyncio.run(go())


def test_a_miner_pyasic_cannot_command_is_unsupported_not_refused(host: str) -> None:
    """A pyasic class without its own ``stop_mining`` (Innosilicon, Iceriver, Hammer...,
    and ``UnknownMiner``) answers False without sending anything: not the firmware's
    refusal (which is retried and marks the miner rejected)."""
    api = CgminerApi("innosilicon", host)

    async def go() -> None:
        await api.start()
        dev = PyasicMiner("inno/0", api.host, timeout_s=5.0)
        try:
            info = await dev.connect()
            assert info.family == "other"
            with pytest.raises(Unsupported, match="no stop_mining"):
                await dev.apply(ModeRequest("sleep"))
        finally:
            await api.stop()

    asyncio.run(go())


#: ePIC PowerPlay's answer to ``POST /miner`` (``{"param": "Stop" | "Autostart",
#: "password": ...}``, as pyasic's ``web/epic.py`` posts it): ``result`` true or false with
#: an ``error``, as asic-rs reads it (``asic-rs-firmwares/epic/src/backends/v1/mod.rs``,
#: ``Pause``/``Resume``). pyasic's ``ePIC.stop_mining`` reads ``success`` instead.
EPIC_ANSWERS: dict[str, bytes | None] = {
    "ok": b'{"result": true, "error": null}',
    "refused": b'{"result": false, "error": "Invalid password"}',
    "empty-object": b"{}",
    "garbage": b"\xff\xfe<html>busy</html>",
    "close": None,
}


@dataclass
class EpicWeb:
    """An ePIC miner's web UI on 80 (the page pyasic's discovery knows it by: "Miner Web
    Dashboard") and its HTTP API on 4028 (``GET /capabilities`` names the model,
    ``POST /miner`` starts and stops it); ``write`` picks the answer to ``/miner``."""

    host: str
    write: str = "ok"
    posts: list[dict[str, Any]] = field(default_factory=list)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)

    async def start(self) -> None:
        for port in (80, 4028):
            self._servers.append(await asyncio.start_server(self._serve, self.host, port))

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
            await s.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(2.0):  # pyasic's socket probe sends no HTTP: dropped
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(h.split(":", 1)[1])
                        for h in rest
                        if h.lower().startswith("content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
            method, path = line.split(" ")[:2]
            answer = self._answer(method, path, body)
            if answer is not None:
                status, ctype, data = answer
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}"
                    "\r\nConnection: close\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, method: str, path: str, body: bytes) -> tuple[str, str, bytes] | None:
        if path == "/":
            page = b"<html><head><title>Miner Web Dashboard</title></head></html>"
            return "200 OK", "text/html", page
        if method == "GET" and path == "/capabilities":
            return "200 OK", "application/json", b'{"Model": "Antminer S19j Pro"}'
        if method == "POST" and path == "/miner":
            self.posts.append(json.loads(body))
            data = EPIC_ANSWERS[self.write]
            return None if data is None else ("200 OK", "application/json", data)
        return "404 Not Found", "application/json", b'{"result": false, "error": "not found"}'


@pytest.fixture
def epic_host() -> Iterator[str]:
    yield loopback_host(ports=(4028, 80))


def _epic(
    epic_host: str, write: str, expect: type[Exception] | None, match: str | None = None
) -> EpicWeb:
    web = EpicWeb(epic_host, write)

    async def go() -> None:
        await web.start()
        try:
            dev = PyasicMiner("epic/0", epic_host, timeout_s=5.0)
            info = await dev.connect()
            assert info.family == "other" and info.firmware == "ePIC", info
            if expect is None:
                await dev.apply(ModeRequest("sleep"))
            else:
                with pytest.raises(expect, match=match):
                    await dev.apply(ModeRequest("sleep"))
        finally:
            await web.stop()

    asyncio.run(go())
    return web


def test_epic_a_stop_answered_result_true_is_accepted(epic_host: str) -> None:
    """pyasic reads ``success`` from an answer that has ``result``: every stop ePIC took
    read as refused."""
    web = _epic(epic_host, "ok", None)
    assert web.posts == [{"param": "Stop", "password": "letmein"}]


def test_epic_a_stop_answered_result_false_is_refused_in_its_words(epic_host: str) -> None:
    _epic(epic_host, "refused", ControlRejected, "Invalid password")


def test_epic_an_empty_answer_is_never_success(epic_host: str) -> None:
    """pyasic's ePIC client answers ``{}`` with ``{"success": True}``."""
    _epic(epic_host, "empty-object", BadReply, "result")


def test_epic_a_stop_closed_unanswered_is_unreachable(epic_host: str) -> None:
    _epic(epic_host, "close", DeviceUnreachable)


def test_epic_a_stop_answered_in_garbage_is_unreadable(epic_host: str) -> None:
    _epic(epic_host, "garbage", BadReply)
