"""The simulator's remote GPU back-end never waits forever on its control port."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import DeviceTimeout
from adapters.sim.gpu_backend import RemoteSimBackend


def test_a_control_port_that_never_answers_times_out() -> None:
    async def main() -> None:
        held: list[asyncio.StreamWriter] = []

        async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accept, read nothing, answer nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = RemoteSimBackend("127.0.0.1", port, timeout_s=0.2)
        try:
            with pytest.raises(DeviceTimeout, match="no answer"):
                await asyncio.wait_for(backend.call(0, "power_w"), timeout=10.0)
        finally:
            for w in held:
                w.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
