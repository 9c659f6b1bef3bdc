"""The stock Antminer simulator's web port on its own, at the byte level: the request read
as it comes, one answer, then closed (adapters/sim/antminer.py ``_WebConnection``), and the
digest header read as lighttpd reads it. OS-chosen ports on 127.0.0.1: no root needed."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters import webdigest
from adapters.sim.antminer import REALM, AntminerSim, parse_auth
from adapters.sim.server import FaultKind


async def _sim() -> tuple[AntminerSim, int]:
    sim = AntminerSim(host="127.0.0.1", port=0, web_port=0)
    await sim.start()
    assert isinstance(sim._web, asyncio.Server)
    return sim, int(sim._web.sockets[0].getsockname()[1])


async def _exchange(port: int, pieces: list[bytes]) -> bytes:
    """Write ``pieces`` one at a time, then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)
    async with asyncio.timeout(10):
        got = await reader.read()
    writer.close()
    return got


def test_a_request_sent_byte_by_byte_is_answered_once_and_closed() -> None:
    async def go() -> tuple[bytes, bytes, int]:
        sim, port = await _sim()
        try:
            req = b"GET /cgi-bin/get_miner_conf.cgi HTTP/1.1\r\nHost: x\r\n\r\n"
            whole = await _exchange(port, [req])
            bytewise = await _exchange(port, [req[i : i + 1] for i in range(len(req))])
            return whole, bytewise, sim.web_requests
        finally:
            await sim.stop()

    whole, bytewise, seen = asyncio.run(go())
    for got in (whole, bytewise):
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert f'Digest realm="{REALM}"'.encode() in head
        assert body == b"<h1>401 Unauthorized</h1>"
    assert seen == 2


def test_what_is_not_http_is_closed_unanswered_and_a_body_is_waited_for() -> None:
    async def go() -> tuple[bytes, dict[str, Any]]:
        sim, port = await _sim()
        try:
            junk = await _exchange(port, [b"\x16\x03\x01 hello\r\n\r\n"])
            client = webdigest.DigestClient("127.0.0.1", port, sim.username, sim.password)
            body = {"miner-mode": 1, "pools": []}
            reply = await client.request("POST", "/cgi-bin/set_miner_conf.cgi", body)
            return junk, reply.json()
        finally:
            await sim.stop()

    junk, answer = asyncio.run(go())
    assert junk == b""
    assert answer == {"stats": "success", "code": "M000", "msg": "OK!"}


def test_a_fault_is_served_off_the_fast_path_with_the_same_answer() -> None:
    """Under ``garble`` the answer is made by a task, and is still the fault's."""

    async def go() -> Any:
        sim, port = await _sim()
        try:
            sim.inject(FaultKind.GARBLE)
            client = webdigest.DigestClient("127.0.0.1", port, sim.username, sim.password)
            return (await client.request("GET", "/cgi-bin/summary.cgi")).json()
        finally:
            await sim.stop()

    assert asyncio.run(go()) == [{"code": "M000"}, "summary"]


def test_the_digest_header_is_read_field_by_field_commas_inside_quotes_kept() -> None:
    header = (
        'username="root", realm="antMiner Configuration", nonce="6a2b:ff", '
        'uri="/cgi-bin/x.cgi?a=1,b=2", response="ab", algorithm=MD5, qop=auth, '
        'nc=00000001 , cnonce="c d"'
    )
    assert parse_auth(header) == {
        "username": "root",
        "realm": "antMiner Configuration",
        "nonce": "6a2b:ff",
        "uri": "/cgi-bin/x.cgi?a=1,b=2",
        "response": "ab",
        "algorithm": "MD5",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c d",
    }
