"""The stock Antminer simulator's web port on its own, at the byte level: the request read
as it comes, one answer, then closed (adapters/sim/lighttpd.py ``WebConnection``), and the
digest header read as lighttpd reads it. OS-chosen ports on 127.0.0.1: no root needed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import types
from typing import Any

from adapters import antminer, webdigest
from adapters.sim.antminer import AntminerSim
from adapters.sim.antminer_web import REALM
from adapters.sim.lighttpd import parse_auth
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


def _rfc7616(user: str, pwd: str, method: str, uri: str, header: str) -> str:
    """The response an RFC 7616 MD5 digest with qop=auth must carry, from the header's own
    nonce, nc and cnonce (computed here from scratch, not by the client's code)."""
    f = parse_auth(header[7:])

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"{user}:{f['realm']}:{pwd}"), md5(f"{method}:{uri}")
    return md5(f"{ha1}:{f['nonce']}:{f['nc']}:{f['cnonce']}:auth:{ha2}")


def test_the_digest_made_once_per_challenge_is_right_for_every_request() -> None:
    """HA1 made once, HA2 once per method and URI: each request's response is still the
    RFC's, with its own cnonce and the next nc, and the simulated lighttpd takes it."""
    sim = AntminerSim(host="127.0.0.1", port=0, web_port=0)
    ch = webdigest.parse_challenge(sim._challenge())
    auth = webdigest.DigestAuth("root", "root", ch)
    seen = set()
    for nc, (method, uri) in enumerate(
        [("GET", "/cgi-bin/a.cgi"), ("POST", "/cgi-bin/a.cgi"), ("GET", "/cgi-bin/b.cgi")] * 2,
        start=1,
    ):
        header = auth.header(method, uri, nc)
        f = parse_auth(header[7:])
        assert f["nc"] == f"{nc:08x}" and f["cnonce"] not in seen
        seen.add(f["cnonce"])
        assert f["response"] == _rfc7616("root", "root", method, uri, header)
        assert sim._authorised(method, uri, header) == (200, False)
        assert header == _httpx_order(f)
    wrong = webdigest.DigestAuth("root", "nope", ch).header("GET", "/cgi-bin/a.cgi", 1)
    assert sim._authorised("GET", "/cgi-bin/a.cgi", wrong) == (401, False)


def _httpx_order(f: dict[str, str]) -> str:
    """The header in httpx's ``DigestAuth._build_auth_header`` order and quoting."""
    return (
        f'Digest username="{f["username"]}", realm="{f["realm"]}", nonce="{f["nonce"]}", '
        f'uri="{f["uri"]}", response="{f["response"]}", algorithm=MD5, qop=auth, '
        f'nc={f["nc"]}, cnonce="{f["cnonce"]}"'
    )


def test_a_configuration_changed_between_writes_is_written_as_read() -> None:
    """The write's body is made once per configuration read: when the miner's pools
    change, the next write carries the new pools, not the body made before."""
    from pyasic.web.antminer import AntminerModernWebAPI

    async def go() -> list[Any]:
        sim, port = await _sim()
        bodies: list[Any] = []
        real_set = sim._cgi_set_miner_conf

        def record(body: bytes) -> dict[str, Any]:
            bodies.append(json.loads(body))
            return real_set(body)

        sim._cgi_set_miner_conf = record  # type: ignore[method-assign]
        web = AntminerModernWebAPI("127.0.0.1")
        web.port = port
        kept = antminer.WebSession(web, 5.0)
        kept.install()
        miner = types.SimpleNamespace(web=web)
        try:
            for mode in (antminer.SLEEP, antminer.NORMAL, antminer.SLEEP):
                await antminer.set_work_mode("am", miner, mode, False, 5.0, kept)
            real_conf = sim._cgi_get_miner_conf

            def other_pool(_: bytes) -> dict[str, Any]:
                conf = real_conf(_)
                conf["pools"][0]["url"] = "stratum+tcp://10.0.0.9:3333"
                return conf

            sim._cgi_get_miner_conf = other_pool  # type: ignore[method-assign]
            await antminer.set_work_mode("am", miner, antminer.NORMAL, False, 5.0, kept)
            return bodies
        finally:
            await sim.stop()

    bodies = asyncio.run(go())
    assert [b["miner-mode"] for b in bodies] == [1, 0, 1, 0]
    assert bodies[0] == bodies[2]
    assert bodies[3]["pools"][0]["url"] == "stratum+tcp://10.0.0.9:3333"
    assert {k: v for k, v in bodies[3].items() if k != "pools"} == {
        k: v for k, v in bodies[1].items() if k != "pools"
    }


def test_a_write_left_unanswered_is_cut_off_at_the_write_timeout_and_the_next_goes_out() -> None:
    """A write sent and not answered within the adapter's timeout is left to finish, but
    only within ``write_timeout_s`` from its start: then it is cut off (its connection
    closed), and the session's next write does not wait on it. The bound is armed only
    for a write left unanswered (adapters/antminer.py ``WebSession.write``)."""
    from pyasic.web.antminer import AntminerModernWebAPI

    async def go() -> tuple[bool, Any, list[Any]]:
        sim, port = await _sim()
        web = AntminerModernWebAPI("127.0.0.1")
        web.port = port
        kept = antminer.WebSession(web, write_timeout_s=0.6)
        miner = types.SimpleNamespace(web=web)
        try:
            sim.conf_answer_s = 30.0  # bmminer restarting: no answer for 30 s
            note = await antminer.set_work_mode("am", miner, antminer.SLEEP, False, 0.2, kept)
            assert antminer.UNANSWERED in note
            left = kept._write
            assert left is not None and not left.done()
            async with asyncio.timeout(10):  # cut off at 0.6 s from its start
                while not left.done():
                    await asyncio.sleep(0.02)
            sim.conf_answer_s = 0.0
            again = await antminer.set_work_mode("am", miner, antminer.NORMAL, False, 5.0, kept)
            return left.cancelled(), again, list(sim.conf_writes)
        finally:
            await kept.close()
            await sim.stop()

    cut_off, again, writes = asyncio.run(go())
    assert cut_off  # not answered: nothing to report but that it ended
    assert again == ""  # the next write answered success
    # the simulator applies a slow write when it answers (30 s on): only the second so far
    assert writes == [0]
