"""The GPU agent's authentication and allow-list, pinned against the protocol as documented
in ``adapters.gpu_wire`` (not against the module's own functions): both ends share that
module, so a change to a MAC formula made on both sides at once would pass every round-trip
test and break every agent already deployed. Written from mutmut's survivors (docs/testing.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from adapters import gpu_wire as wire
from adapters.gpu_agent import GpuAgent, check_secret
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.errors import ConfigError

SECRET = Secret("agent-auth-test-secret-0123456789")
KEY = SECRET.reveal().encode()
CHALLENGE, NONCE = "c" * 64, "n" * 64


def _hmac_hex(key: bytes, text: bytes) -> str:
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await coro

    asyncio.run(bounded())


# --- the wire, by the documented formulas ---------------------------------------------------


def test_the_proofs_and_session_key_are_the_documented_hmacs_and_differ() -> None:
    proto = "gridsched-gpu-agent/1"
    client = _hmac_hex(KEY, f"{proto}|client|{CHALLENGE}|{NONCE}".encode())
    agent = _hmac_hex(KEY, f"{proto}|agent|{CHALLENGE}|{NONCE}".encode())
    assert wire.client_proof(KEY, CHALLENGE, NONCE) == client
    assert wire.agent_proof(KEY, CHALLENGE, NONCE) == agent
    assert client != agent  # a client's proof replayed back is not the agent's
    session = bytes.fromhex(_hmac_hex(KEY, f"{proto}|session|{CHALLENGE}|{NONCE}".encode()))
    assert wire.Channel.session(KEY, CHALLENGE, NONCE, agent=True).key == session


def test_each_line_carries_the_mac_of_its_direction_and_sequence_number() -> None:
    client = wire.Channel.session(KEY, CHALLENGE, NONCE, agent=False)
    key = client.key
    assert key is not None
    for seq in range(3):
        line = client.encode({"op": "gpu", "index": seq, "call": "limit_w"})
        body = json.dumps({"op": "gpu", "index": seq, "call": "limit_w"}, separators=(",", ":"))
        want = _hmac_hex(key, f"c2a|{seq}|{body}".encode())
        assert line == f"{want} {body}\n".encode()
    agent = wire.Channel.session(KEY, CHALLENGE, NONCE, agent=True)
    for seq in range(3):
        body = json.dumps({"ok": True, "result": seq})
        line = f"{_hmac_hex(key, f'a2c|{seq}|{body}'.encode())} {body}\n".encode()
        assert client.decode(line) == {"ok": True, "result": seq}
        with pytest.raises(wire.WireError, match=r"^line MAC does not match \(altered"):
            agent.decode(line)  # the agent's own direction is not accepted back


def test_nonces_are_64_hex_characters_and_fresh() -> None:
    a, b = wire.nonce(), wire.nonce()
    assert len(a) == 64 and int(a, 16) >= 0 and a != b


def test_lines_that_are_not_objects_are_named_in_60_bytes() -> None:
    long = b"x" * 100
    with pytest.raises(wire.WireError) as exc:
        wire.parse_json(long)
    assert str(exc.value) == f"not a JSON line: {long[:60]!r}"
    with pytest.raises(wire.WireError) as exc:
        wire.parse_json(b"[" + b"1," * 50 + b"1]")
    assert str(exc.value) == f"not a JSON object: {(b'[' + b'1,' * 50)[:60]!r}"


def test_the_allow_list_names_the_bad_field_and_the_index_range() -> None:
    with pytest.raises(ValueError, match=r'^"call" must be a string naming an NVML call$'):
        wire.check_request({"call": 3}, 2)
    with pytest.raises(ValueError, match=r"GPU index 2: this host has 2 GPUs \(0\.\.1\)"):
        wire.check_request({"call": "power_w", "index": 2}, 2)  # one past the last
    assert wire.check_request({"call": "power_w", "index": 1}, 2) == (1, "power_w", ())
    with pytest.raises(ValueError, match=r'^set_limit_w takes 1 numbers in "args", got \[\]$'):
        wire.check_request({"call": "set_limit_w", "index": 0, "args": []}, 2)
    # a host call needs no index and gets -1, never a GPU's
    assert wire.check_request({"call": "driver_version"}, 2) == (-1, "driver_version", ())
    with pytest.raises(wire.NotAllowed) as refused:
        wire.check_request({"call": "nvmlDeviceSetPersistenceMode", "index": 0}, 2)
    assert refused.value.call == "nvmlDeviceSetPersistenceMode"
    assert str(refused.value).endswith("allowed: " + ", ".join(wire.CALLS))
    assert "identity, driver_version, limit_constraints_w" in str(refused.value)


# --- the agent's refusals to start ------------------------------------------------------------


def _backend() -> LocalSimBackend:
    return LocalSimBackend([SimGpu(0, settle_s=0.01)])


def test_a_secret_of_exactly_the_minimum_is_accepted_and_one_short_is_named() -> None:
    check_secret("secret", Secret("s" * wire.MIN_SECRET_CHARS))
    with pytest.raises(ConfigError) as exc:
        GpuAgent(_backend(), "127.0.0.1", 0, Secret("s" * (wire.MIN_SECRET_CHARS - 1)))
    assert exc.value.source == "gpu agent"
    [(field, message)] = exc.value.problems
    assert field == "secret"
    assert message == (
        "the secret is shorter than 16 characters; use a random one (openssl rand -hex 32)"
    )


def test_every_address_without_a_secret_is_refused_with_the_fix_and_bracketed_v6_loopback_is_not(
) -> None:  # fmt: skip
    GpuAgent(_backend(), "[::1]", 0, None)  # loopback in URL brackets
    with pytest.raises(ConfigError) as exc:
        GpuAgent(_backend(), "", 0, None)
    assert exc.value.source == "gpu agent"
    assert exc.value.problems == [
        (
            "listen",
            "refusing to serve NVML on 'every address' without authentication: anyone who "
            "reaches the port could set power limits; give a shared secret (--secret-env or "
            "--secret-file), or listen on 127.0.0.1",
        )
    ]


# --- the handshake over a real loopback agent -------------------------------------------------


async def _hello(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, json.loads(await reader.readline())


async def _answer(port: int, nonce_hex: str | None, mac: str | None) -> dict[str, Any]:
    """One handshake: the client's answer with the given nonce and MAC (None: left out;
    "right": the correct proof over the nonce)."""
    reader, writer, hello = await _hello(port)
    answer: dict[str, str] = {}
    if nonce_hex is not None:
        answer["nonce"] = nonce_hex
    if mac is not None:
        right = wire.client_proof(KEY, hello["challenge"], nonce_hex or "")
        answer["mac"] = right if mac == "right" else mac
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()
    reply = json.loads(await reader.readline())
    writer.close()
    return dict(reply)


def test_each_failed_handshake_is_answered_auth_failed_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gridsched.gpu_agent")

    async def main() -> None:
        agent = GpuAgent(_backend(), "127.0.0.1", 0, SECRET)
        await agent.start()
        # its own agent with a short limit: the others answer at once even on a loaded host
        hasty = GpuAgent(_backend(), "127.0.0.1", 0, SECRET, auth_timeout_s=0.2)
        await hasty.start()
        try:
            short = await _answer(agent.port, "a" * 31, "right")
            assert short == {
                "ok": False,
                "code": "AUTH_FAILED",
                "error": "no nonce of 32 hex characters or more",
            }
            ok = await _answer(agent.port, "a" * 32, "right")  # 32 is enough
            assert ok["ok"] is True
            wrong = await _answer(agent.port, "a" * 64, "0" * 64)
            assert wrong["error"] == "wrong MAC: the client's secret is not this agent's"
            assert (await _answer(agent.port, "a" * 64, None))["code"] == "AUTH_FAILED"
            # silent past the time limit: told so, not left hanging
            reader, writer, _ = await _hello(hasty.port)
            silent = json.loads(await reader.readline())
            assert silent == {"ok": False, "code": "AUTH_FAILED", "error": "no answer in time"}
            writer.close()
            # a client that hangs up instead of answering
            reader, writer, _ = await _hello(agent.port)
            writer.close()
            await _until_logged(caplog, "authentication failed: the client closed the connection")
        finally:
            await agent.stop()
            await hasty.stop()

    run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all(m.startswith("client 127.0.0.1:") for m in warnings)
    assert "client 127.0.0.1:" in warnings[0] and ": authentication failed: no nonce" in warnings[0]


async def _until_logged(caplog: pytest.LogCaptureFixture, words: str) -> None:
    while not any(r.getMessage().endswith(words) for r in caplog.records):
        await asyncio.sleep(0.01)


def test_the_agents_proof_is_its_own_over_the_challenge_and_nonce() -> None:
    async def main() -> None:
        agent = GpuAgent(_backend(), "127.0.0.1", 0, SECRET)
        await agent.start()
        try:
            reader, writer, hello = await _hello(agent.port)
            mac = wire.client_proof(KEY, hello["challenge"], NONCE)
            writer.write(json.dumps({"nonce": NONCE, "mac": mac}).encode() + b"\n")
            reply = json.loads(await reader.readline())
            assert reply == {"ok": True, "mac": wire.agent_proof(KEY, hello["challenge"], NONCE)}
            writer.close()
        finally:
            await agent.stop()

    run(main())


# --- the answers: allow-list, NVML refusals, the backend's own bugs ---------------------------


class Buggy:
    label = "buggy"

    async def count(self) -> int:
        return 1

    async def call(self, index: int, call: str, *args: float) -> Any:
        raise RuntimeError("boom")


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: Any) -> Any:
    writer.write(json.dumps(req).encode() + b"\n")
    await writer.drain()
    return json.loads(await reader.readline())


def test_refusals_and_failures_are_answered_in_the_documented_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus = [SimGpu(0, settle_s=0.01)]
    gpus[0].fault = "clocks_unsupported"

    async def main() -> None:
        agent = GpuAgent(LocalSimBackend(gpus), "127.0.0.1", 0, None)
        await agent.start()
        buggy = GpuAgent(Buggy(), "127.0.0.1", 0, None)
        await buggy.start()
        try:
            reader, writer, _ = await _hello(agent.port)
            assert await _ask(reader, writer, {"op": "reboot"}) == {
                "ok": False,
                "code": "BAD_REQUEST",
                "error": "unknown op 'reboot': count, gpu",
            }
            refused = await _ask(reader, writer, {"op": "gpu", "index": 0, "call": "rm"})
            assert refused == {
                "ok": False,
                "code": "NOT_ALLOWED",
                "error": str(wire.NotAllowed("rm")),
            }
            lock = {"op": "gpu", "index": 0, "call": "set_locked_clocks", "args": [1000, 1400]}
            nvml = await _ask(reader, writer, lock)
            assert set(nvml) == {"ok", "code", "error"} and nvml["ok"] is False
            assert nvml["code"] == "NOT_SUPPORTED"
            writer.close()
            reader, writer, _ = await _hello(buggy.port)
            caplog.set_level(logging.ERROR, logger="gridsched.gpu_agent")
            bug = await _ask(reader, writer, {"op": "gpu", "index": 0, "call": "power_w"})
            assert bug == {
                "ok": False,
                "code": "AGENT_ERROR",
                "class": "BadReply",
                "error": "power_w: boom",  # a backend outside gridsched: its words
            }
            writer.close()
        finally:
            await agent.stop()
            await buggy.stop()

    run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "power_w on GPU 0 failed: boom"
    ]


# --- the connection limit and the line limit (plain lines, before any MAC) -------------------


def test_a_closed_client_frees_its_place_and_the_limits_answer_in_the_documented_shape() -> None:
    async def main() -> None:
        agent = GpuAgent(_backend(), "127.0.0.1", 0, None, max_clients=1)
        await agent.start()
        try:
            for _ in range(3):  # each one closed before the next: the one place is free again
                reader, writer, hello = await _hello(agent.port)
                assert hello["auth"] == "none"
                assert await _ask(reader, writer, {"op": "count"}) == {"ok": True, "gpus": 1}
                writer.close()
                await asyncio.wait_for(reader.read(), 5)  # the agent's side closed too
                async with asyncio.timeout(5):
                    while agent._clients:
                        await asyncio.sleep(0.01)
            reader, writer, _ = await _hello(agent.port)
            writer.write(b"not json\n")
            await writer.drain()
            assert json.loads(await reader.readline()) == {
                "ok": False,
                "code": "BAD_REQUEST",
                "error": "not a JSON line: b'not json'",
            }
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", agent.port)
            busy = json.loads(await busy_reader.readline())
            assert busy == {"ok": False, "code": "BUSY", "error": "1 clients at most"}
            assert await asyncio.wait_for(busy_reader.read(), 5) == b""  # and closed
            busy_writer.close()
            writer.write(b"x" * (wire.MAX_LINE_BYTES + 10) + b"\n")
            await writer.drain()
            too_long = json.loads((await reader.read()).splitlines()[-1])
            assert too_long == {
                "ok": False,
                "code": "BAD_REQUEST",
                "error": f"a line over {wire.MAX_LINE_BYTES} bytes",
            }
            writer.close()
        finally:
            await agent.stop()

    run(main())
