"""Network errors said in words with the host and port, never a Python class name: the
errors come from real sockets (a name under .invalid, which never resolves (RFC 6761), a
loopback port nobody listens on)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from adapters.base import DeviceUnreachable, contain
from adapters.gpu_remote import AgentBackend
from adapters.neterrors import describe
from adapters.secrets import Secret
from tests.support.ports import closed_port

PY_NAMES = ("gaierror", "ConnectionRefusedError", "OSError(", "TimeoutError(", "[Errno")


def _no_python_names(text: str) -> None:
    assert not [n for n in PY_NAMES if n in text], text


def test_a_name_that_does_not_resolve_is_said_so() -> None:
    with pytest.raises(socket.gaierror) as err:
        socket.getaddrinfo("gpu-07.invalid", 7731)
    text = describe(err.value)
    assert "host name" in text and "resolve" in text, text
    _no_python_names(text)


def test_refused_and_timed_out_in_words() -> None:
    with pytest.raises(ConnectionRefusedError) as err, socket.socket() as s:
        s.connect(("127.0.0.1", closed_port()))
    assert describe(err.value).startswith("connection refused")
    assert "ECONNREFUSED" in describe(err.value)
    assert describe(TimeoutError(), 3.0) == "no answer within 3 s"
    many = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 7731), "
        "[Errno 111] Connect call failed ('127.0.0.1', 7731)"
    )  # asyncio's, for a name with two addresses: no errno of its own
    assert describe(many).startswith("connection refused"), describe(many)


def test_the_daemon_says_an_agent_name_does_not_resolve_with_host_and_port() -> None:
    async def main() -> str:
        backend = AgentBackend("gpu-07.invalid", 7731, Secret("s" * 32), timeout_s=10.0)
        with pytest.raises(DeviceUnreachable) as err:
            await backend.call(0, "limit_w")
        return str(err.value)

    text = asyncio.run(main())
    assert "gpu-07.invalid:7731" in text and "resolve" in text, text
    _no_python_names(text)


def test_the_daemon_says_an_agent_refused_the_connection() -> None:
    port = closed_port()

    async def main() -> str:
        backend = AgentBackend("127.0.0.1", port, timeout_s=10.0)
        with pytest.raises(DeviceUnreachable) as err:
            await backend.call(0, "limit_w")
        return str(err.value)

    text = asyncio.run(main())
    assert f"127.0.0.1:{port}" in text and "connection refused" in text, text
    assert "is `gridsched gpu-agent` running there" in text
    _no_python_names(text)


def test_a_vendor_call_that_cannot_connect_is_said_in_words() -> None:
    port = closed_port()

    async def main() -> str:
        with pytest.raises(DeviceUnreachable) as err:
            await contain(
                "s19/127.0.0.1", "telemetry", asyncio.open_connection("127.0.0.1", port), 5
            )
        return str(err.value)

    text = asyncio.run(main())
    assert text.startswith("s19/127.0.0.1: telemetry: connection refused"), text
    _no_python_names(text)


def test_an_http_clients_connect_error_is_said_by_the_os_error_it_wraps() -> None:
    import httpx

    port = closed_port()
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert describe(refused.value).startswith("connection refused"), describe(refused.value)
    with pytest.raises(httpx.ConnectError) as unknown:
        httpx.get("http://vllm-07.invalid:8000/metrics", timeout=5)
    assert "host name" in describe(unknown.value), describe(unknown.value)
    assert describe(KeyError("power")) == "KeyError: 'power'"  # a bug keeps its name


def test_the_async_http_clients_all_attempts_failed_is_said_by_its_cause() -> None:
    import httpx

    port = closed_port()

    async def main() -> BaseException:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError) as err:
                await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        return err.value

    exc = asyncio.run(main())
    assert describe(exc).startswith("connection refused"), (describe(exc), repr(exc))
