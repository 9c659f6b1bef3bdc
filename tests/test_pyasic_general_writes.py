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
