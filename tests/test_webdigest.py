"""The lean HTTP/1.1 digest client a stock Antminer's web CGI is read and written through
(adapters/webdigest.py), against loopback servers on OS-chosen ports (no root needed).

The digest is checked by the simulator's lighttpd rules (``AntminerSim._authorised``,
after lighttpd1.4 ``src/mod_auth.c``), and the request is compared with what pyasic's own
web client (httpx) sends for the same call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters import antminer, webdigest
from adapters.base import BadReply, DeviceUnreachable
from adapters.sim.antminer import AntminerSim
from adapters.sim.antminer_web import REALM
from adapters.sim.web_port import read_http_request, write_http_reply

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _loops() -> list[Any]:
    loops: list[Any] = [pytest.param(None, id="asyncio")]
    try:
        import uvloop

        loops.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:  # the daemon runs on uvloop where it is installed
        pass
    return loops


def _run(coro: Any, loop_factory: Any = None) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


async def _serve(handler: Handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, int(port)


def _lighttpd(sim: AntminerSim, seen: list[tuple[str, dict[str, str], bytes]]) -> Handler:
    """A CGI behind the simulator's digest check: 401 (stale or not) with a challenge,
    else the request's JSON body echoed (``{}`` for a GET)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, headers, body = await read_http_request(reader)
        seen.append((target, headers, body))
        status, stale = sim._authorised(method, target, headers.get("authorization"))
        if status == 401:
            sim.stale_answers += stale
            extra = [f"WWW-Authenticate: {sim._challenge(stale)}"]
            await write_http_reply(writer, 401, b"<h1>401 Unauthorized</h1>", None, extra)
        else:
            await write_http_reply(writer, status, json.loads(body or b"{}"))
        writer.close()

    return handle


@pytest.mark.parametrize("loop_factory", _loops())
def test_a_reply_split_across_reads_is_read_whole(loop_factory: Any) -> None:
    """The head and the body arrive in pieces, one with a chunked body: the client waits
    for the whole answer (Content-Length, or the last chunk) before parsing it."""
    payload = json.dumps({"STATS": [{"chain": list(range(300))}]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _m, target, _h, _b = await read_http_request(reader)
        if target.endswith("chunked.cgi"):
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            parts = [head, b"%x\r\n" % 10, payload[:10] + b"\r\n"]
            parts += [b"%x\r\n" % (len(payload) - 10), payload[10:] + b"\r\n", b"0\r\n\r\n"]
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload)
            parts = [head[:9], head[9:], payload[:7], payload[7:100], payload[100:]]
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.005)  # separate segments, each its own read
        writer.close()

    async def go() -> None:
        server, port = await _serve(handle)
        async with server:
            client = webdigest.DigestClient("127.0.0.1", port, "root", "root")
            for path in ("/cgi-bin/stats.cgi", "/cgi-bin/chunked.cgi"):
                reply = await client.request("GET", path)
                assert reply.status == 200 and reply.json() == json.loads(payload)

    _run(go(), loop_factory)


@pytest.mark.parametrize("loop_factory", _loops())
def test_the_challenge_is_kept_and_a_stale_nonce_is_answered_once_more(
    loop_factory: Any,
) -> None:
    """One 401 for the first request; then each request once, with the next nc; a nonce
    past lighttpd's 600 s is answered 401 stale=true and the request is sent again."""
    sim = AntminerSim("127.0.0.1")
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def go() -> None:
        server, port = await _serve(_lighttpd(sim, seen))
        async with server:
            client = webdigest.DigestClient("127.0.0.1", port, "root", "root")
            assert (await client.request("GET", "/cgi-bin/summary.cgi")).status == 200
            assert len(seen) == 2  # challenged once
            for n in range(3):
                reply = await client.request("POST", "/cgi-bin/x.cgi", {"miner-mode": n})
                assert reply.status == 200 and reply.json() == {"miner-mode": n}
            assert len(seen) == 5  # one request each
            ncs = [h["authorization"].split("nc=")[1][:8] for _t, h, _b in seen[1:]]
            assert ncs == ["00000001", "00000002", "00000003", "00000004"]
            sim.web_clock = lambda: time.time() + 601.0  # the kept nonce is now stale
            assert (await client.request("GET", "/cgi-bin/summary.cgi")).status == 200
            assert len(seen) == 7 and sim.stale_answers == 1
            wrong = webdigest.DigestClient("127.0.0.1", port, "root", "nope")
            assert (await wrong.request("GET", "/cgi-bin/summary.cgi")).status == 401

    _run(go(), loop_factory)


def test_the_request_is_the_one_pyasic_sends_but_for_connection_and_agent() -> None:
    """The same call through pyasic's AntminerModernWebAPI (httpx, DigestAuth) and through
    the kept session: request line, header names in order, Host, Accept, Accept-Encoding,
    Content-Type and -Length, the JSON body byte for byte, and the Authorization fields in
    httpx's order and quoting. Only Connection (close) and User-Agent differ."""
    from pyasic.web.antminer import AntminerModernWebAPI

    sim = AntminerSim("127.0.0.1")
    seen: list[tuple[str, dict[str, str], bytes]] = []
    body: dict[str, Any] = {
        "pools": [{"url": "stratum+tcp://pool:3333", "user": "ü"}],
        "miner-mode": 1,
    }

    async def go() -> None:
        server, port = await _serve(_lighttpd(sim, seen))
        async with server:
            web = AntminerModernWebAPI("127.0.0.1")
            web.port = port
            assert await web.send_command("set_miner_conf", **body) == body
            ours = antminer.WebSession(AntminerModernWebAPI("127.0.0.1"), 5.0)
            ours.web.port = port
            assert await ours.send_command("set_miner_conf", **body) == body

    _run(go())
    raw = _raw_heads(seen)
    theirs, mine = raw[1], raw[3]  # each first challenged, then sent with the digest
    assert seen[1][2] == seen[3][2]  # the JSON body, byte for byte
    assert [k for k, _ in theirs] == [k for k, _ in mine]
    same = {"host", "accept", "accept-encoding", "content-length", "content-type"}
    assert {k: v for k, v in theirs if k in same} == {k: v for k, v in mine if k in same}
    assert dict(mine)["connection"] == "close"

    def fields(auth: str) -> list[str]:
        return [f.split("=", 1)[0] + ("=" if '"' in f else "") for f in auth[7:].split(", ")]

    assert fields(dict(theirs)["authorization"]) == fields(dict(mine)["authorization"])
    assert f'realm="{REALM}"' in dict(mine)["authorization"]


def _raw_heads(seen: list[tuple[str, dict[str, str], bytes]]) -> list[list[tuple[str, str]]]:
    # read_http_request keeps header order (dicts keep insertion order)
    return [list(h.items()) for _t, h, _b in seen]


@pytest.mark.parametrize("loop_factory", _loops())
def test_refused_is_unreachable_and_garbage_or_a_non_json_body_is_unreadable(
    loop_factory: Any,
) -> None:
    """No connection: the miner is unreachable. Something that answers and is not HTTP, or
    an answer whose body is not JSON: it is unreadable, and the message shows the bytes."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\x16\x03\x01 this is no web server\n")
        await writer.drain()
        writer.close()

    async def html(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_http_request(reader)
        await write_http_reply(writer, 200, b"<html>Antminer login</html>")
        writer.close()

    async def hangup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_http_request(reader)
        writer.close()

    async def session_on(port: int) -> antminer.WebSession:
        from pyasic.web.antminer import AntminerModernWebAPI

        web = AntminerModernWebAPI("127.0.0.1")
        web.port = port
        return antminer.WebSession(web, 5.0)

    async def go() -> None:
        probe, port = await _serve(html)
        probe.close()
        await probe.wait_closed()  # nothing listens on that port now
        kept = await session_on(port)
        got = await kept.send_command("summary")
        with pytest.raises(DeviceUnreachable, match="summary: HTTP error"):
            antminer._raise_web_error("am/x", "summary", got)

        server, port = await _serve(garbage)
        async with server:
            got = await (await session_on(port)).send_command("summary")
            with pytest.raises(BadReply, match=r"not an HTTP .*no web server"):
                antminer._raise_web_error("am/x", "summary", got)
        server, port = await _serve(html)
        async with server:
            got = await (await session_on(port)).send_command("summary")
            with pytest.raises(BadReply, match="not JSON: b'<html>Antminer login"):
                antminer._raise_web_error("am/x", "summary", got)
        server, port = await _serve(hangup)
        async with server:
            got = await (await session_on(port)).send_command("summary")
            with pytest.raises(DeviceUnreachable, match="without an answer"):
                antminer._raise_web_error("am/x", "summary", got)

    _run(go(), loop_factory)
