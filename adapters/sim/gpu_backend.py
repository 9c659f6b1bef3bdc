"""The GPU simulator behind the NVML adapter's backend interface (``adapters.nvml.GpuBackend``).

:class:`LocalSimBackend` drives simulated GPUs in this process; :class:`RemoteSimBackend`
those of a ``gridsched fleet simulate`` process over its control port. Both raise the
adapter's own narrow errors from the simulator's NVML-style codes, as the real backend does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.aio import KeptConnections
from adapters.base import DeviceTimeout
from adapters.nvml import nvml_error
from adapters.sim.gpu import SimNvmlError

#: What the simulator answers for nvmlSystemGetDriverVersion: says it is simulated.
SIM_DRIVER = "simulated"


class LocalSimBackend:
    """Simulated GPUs in this process."""

    label = "sim"

    def __init__(self, gpus: list[Any]) -> None:
        self.gpus = gpus

    async def count(self) -> int:
        return len(self.gpus)

    async def call(self, index: int, call: str, *args: float) -> Any:
        gpu = self.gpus[index]
        try:
            if call == "identity":
                return f"NVIDIA {gpu.model} (simulated)", gpu.uuid
            if call == "driver_version":
                return SIM_DRIVER
            return getattr(gpu, call)(*args)
        except SimNvmlError as exc:
            raise nvml_error(f"gpu{index}", call, exc.code, str(exc)) from None


class RemoteSimBackend(KeptConnections[tuple[asyncio.StreamReader, asyncio.StreamWriter]]):
    """Simulated GPUs in a ``gridsched fleet simulate`` process, over its control port.

    The connections are kept and reused (the control port answers one JSON line per request
    line, for as long as the client keeps the connection), up to ``connections`` at once: a
    connection per call made 12,288 connections per sweep of 2,048 GPUs (six NVML calls
    each) to one listening socket, whose backlog overflowed into 1 s SYN retransmissions."""

    label = "sim"

    def __init__(self, host: str, port: int, timeout_s: float = 2.0, connections: int = 16) -> None:
        super().__init__(connections)
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.opened = 0  # connections opened so far

    async def _ask(self, req: dict[str, Any]) -> bytes:
        """One request on a kept connection (a fresh one when none is idle, or when the kept
        one turns out closed); a connection left mid-request is closed, not reused."""
        data = json.dumps(req).encode() + b"\n"
        for reuse in (True, False):
            conn = self._idle.pop() if reuse and self._idle else None
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port, limit=1 << 16)
                self.opened += 1
                reuse = False
            reader, writer = conn
            line = b""
            try:
                writer.write(data)
                await writer.drain()
                line = await reader.readline()
            except ConnectionError:
                if not reuse:
                    raise
            finally:
                if line:
                    self._idle.append(conn)
                else:
                    writer.close()
            if line or not reuse:
                return line
        return b""

    async def _request(self, req: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s), self._pool():
                line = await self._ask(req)
        except TimeoutError:
            raise DeviceTimeout(
                f"gpu{req.get('index', '?')}",
                f"no answer from the simulator at {self.host}:{self.port} in {self.timeout_s} s",
            ) from None
        out = json.loads(line)
        if not out.get("ok"):
            raise nvml_error(
                f"gpu{req.get('index', '?')}",
                str(req.get("call", req.get("op"))),
                str(out.get("code")),
                str(out.get("error")),
            )
        return out

    async def count(self) -> int:
        return int((await self._request({"op": "list"}))["gpus"])

    async def call(self, index: int, call: str, *args: float) -> Any:
        if call == "identity":
            return "NVIDIA GPU (simulated)", f"SIM-{self.host}-{self.port}-{index}"
        if call == "driver_version":
            return SIM_DRIVER
        out = await self._request({"op": "gpu", "index": index, "call": call, "args": list(args)})
        result = out["result"]
        return tuple(result) if isinstance(result, list) else result
