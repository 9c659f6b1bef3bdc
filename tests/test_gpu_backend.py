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


def test_a_gpus_identity_is_its_driver_not_its_uuid() -> None:
    """The UUID is the GPU's own serial; its firmware is the NVIDIA driver, the same for
    every GPU of a host (fleet status showed "16 kinds" of firmware for 16 GPUs)."""
    from adapters.gpu import NvmlGpu
    from adapters.sim.gpu import SimGpu
    from adapters.sim.gpu_backend import SIM_DRIVER, LocalSimBackend

    async def main() -> None:
        sims = [SimGpu(i) for i in range(3)]
        backend = LocalSimBackend(sims)
        infos = [
            await NvmlGpu(f"g{i}", str(i), backend=backend, index=i).connect() for i in range(3)
        ]
        assert {(i.firmware, i.firmware_version) for i in infos} == {("driver", SIM_DRIVER)}
        assert [i.serial for i in infos] == [s.uuid for s in sims]

    asyncio.run(main())


def test_calls_share_a_few_kept_connections() -> None:
    """A sweep of many GPUs through the control port reuses at most ``connections``
    connections (one per call overflowed the port's backlog at 2,048 GPUs)."""
    from adapters.sim.fleet import SimFleet
    from adapters.sim.gpu import SimGpu

    async def main() -> None:
        sim = SimFleet([], [SimGpu(i) for i in range(4)], control_port=0)
        await sim.start()
        try:
            assert sim.control_port is not None
            backend = RemoteSimBackend("127.0.0.1", sim.control_port, timeout_s=10.0, connections=3)
            limits = await asyncio.gather(*(backend.call(i % 4, "limit_w") for i in range(60)))
            assert limits == [sim.gpus[i % 4].limit_w() for i in range(60)]
            assert 1 <= backend.opened <= 3
            await backend.close()
        finally:
            await sim.stop()

    asyncio.run(main())


def test_a_kept_connection_the_server_closed_is_replaced_not_reported() -> None:
    async def main() -> None:
        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()  # one answer, then the server closes the connection
            writer.write(b'{"ok": true, "result": 300.0}\n')
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(once, "127.0.0.1", 0)
        backend = RemoteSimBackend("127.0.0.1", server.sockets[0].getsockname()[1], timeout_s=10.0)
        try:
            for _ in range(3):
                assert await backend.call(0, "limit_w") == 300.0
            assert backend.opened == 3
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
