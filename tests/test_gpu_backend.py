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
