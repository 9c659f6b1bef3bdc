"""The site meter: import at the point of interconnection, read over Modbus TCP (pymodbus).

A SunSpec meter is found by its map (``models.meter``: the ``SunS`` marker, then models as
ID, L and data, until 0xFFFF); the register of ``W`` and its scale factor ``W_SF`` are
found once and read together afterwards (one request). A meter without SunSpec is read at
the register the site file names. Every failure (no connection, a Modbus exception reply,
no AC meter model in the map, SunSpec's "not implemented" value) is a
:class:`MeterError` saying why; the caller falls back to the devices' sum.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from adapters.neterrors import describe
from models.meter import (
    SUNSPEC_BASES,
    SUNSPEC_FLOAT_METER_MODELS,
    SUNSPEC_FLOAT_W_OFFSET,
    SUNSPEC_METER_MODELS,
    SUNSPEC_W_OFFSET,
    SUNSPEC_W_SF_OFFSET,
    SiteMeter,
)

SUNS = (0x5375, 0x6E53)  # "SunS"
END_ID = 0xFFFF
INT16_NOT_IMPLEMENTED = -0x8000  # SunSpec: int16 and sunssf "not implemented" value
MAX_MODELS = 64  # a map longer than this is not walked further
UNIT_W = {"W": 1.0, "kW": 1e3, "MW": 1e6}


class MeterError(Exception):
    """The meter could not be read; the message says why."""


@dataclass(frozen=True)
class MeterReading:
    import_w: float  # positive: the site draws from the grid
    at: float  # unix seconds


def _int16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class ModbusMeter:
    """One meter over Modbus TCP; connects on first use and after a failure."""

    def __init__(self, config: SiteMeter) -> None:
        # pymodbus logs every failed connection attempt (each poll while a meter is down);
        # the daemon says a meter's failure once per change, with the reason.
        logging.getLogger("pymodbus.logging").setLevel(logging.ERROR)
        self.config = config
        self._client: Any = None
        self._w_at: int | None = None  # SunSpec: address of W (int models: W_SF 4 on)
        self.model: int | None = None  # the SunSpec model found
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def _connect(self) -> Any:
        from pymodbus.client import AsyncModbusTcpClient

        if self._client is not None and self._client.connected:
            return self._client
        c = self.config
        client = AsyncModbusTcpClient(
            c.host, port=c.port, timeout=c.timeout_s, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise MeterError(f"no connection to the meter at {self.address}")
        self._client = client
        return client

    async def _registers(self, address: int, count: int, table: str = "holding") -> list[int]:
        from pymodbus.exceptions import ModbusException

        client = await self._connect()
        read = client.read_input_registers if table == "input" else client.read_holding_registers
        try:
            async with asyncio.timeout(self.config.timeout_s):
                reply = await read(address, count=count, device_id=self.config.unit_id)
        except (ModbusException, TimeoutError, OSError) as exc:
            self.close()
            raise MeterError(
                f"reading {count} registers at {address} from {self.address}: "
                f"{describe(exc, self.config.timeout_s)}"
            ) from None
        if reply.isError():
            raise MeterError(
                f"the meter at {self.address} refused registers {address}-{address + count - 1}: "
                f"{reply}"
            )
        regs = list(reply.registers)
        if len(regs) < count:
            raise MeterError(f"the meter at {self.address} sent {len(regs)} of {count} registers")
        return regs[:count]

    async def _find_sunspec(self) -> int:
        """The address of W in the first SunSpec AC meter model (201-204)."""
        bases = (self.config.base,) if self.config.base is not None else SUNSPEC_BASES
        for base in bases:
            try:
                marker = await self._registers(base, 2)
            except MeterError:
                if self._client is None:  # no connection at all: no use trying others
                    raise
                continue
            if tuple(marker) != SUNS:
                continue
            at = base + 2
            seen: list[int] = []
            for _ in range(MAX_MODELS):
                model, length = await self._registers(at, 2)
                if model == END_ID:
                    break
                seen.append(model)
                if model in SUNSPEC_METER_MODELS:
                    self.model = model
                    return at + 2 + SUNSPEC_W_OFFSET
                if model in SUNSPEC_FLOAT_METER_MODELS:
                    self.model = model
                    return at + 2 + SUNSPEC_FLOAT_W_OFFSET
                at += 2 + length
            known = SUNSPEC_METER_MODELS + SUNSPEC_FLOAT_METER_MODELS
            raise MeterError(
                f"the SunSpec map at {self.address} (base {base}) has models {seen}, "
                f"no AC meter model ({', '.join(map(str, known))})"
            )
        raise MeterError(
            f"no SunSpec marker 'SunS' at {self.address} (tried base "
            f"{', '.join(map(str, bases))}); set [site.meter] base, or kind = 'registers'"
        )

    async def _read_w(self) -> float:
        c = self.config
        if c.kind == "registers":
            from pymodbus.client import AsyncModbusTcpClient

            reg = c.map
            assert reg is not None  # the config checks it
            regs = await self._registers(reg.address, reg.words, reg.table)
            dtype = getattr(AsyncModbusTcpClient.DATATYPE, reg.type.upper())
            raw = AsyncModbusTcpClient.convert_from_registers(
                regs, dtype, word_order=reg.word_order
            )
            if not isinstance(raw, int | float):
                raise MeterError(f"register {reg.address} decoded to {raw!r}, not a number")
            return float(raw) * reg.scale * UNIT_W[reg.unit]
        if self._w_at is None:
            self._w_at = await self._find_sunspec()
        if self.model in SUNSPEC_FLOAT_METER_MODELS:
            from pymodbus.client import AsyncModbusTcpClient

            regs = await self._registers(self._w_at, 2)
            value = AsyncModbusTcpClient.convert_from_registers(
                regs, AsyncModbusTcpClient.DATATYPE.FLOAT32
            )
            if not isinstance(value, float) or math.isnan(value):  # NaN: not implemented
                raise MeterError(f"the meter at {self.address} reports W as not implemented")
            return value
        span = SUNSPEC_W_SF_OFFSET - SUNSPEC_W_OFFSET + 1
        regs = await self._registers(self._w_at, span)
        w, sf = _int16(regs[0]), _int16(regs[-1])
        if INT16_NOT_IMPLEMENTED in (w, sf):
            raise MeterError(f"the meter at {self.address} reports W as not implemented")
        if not -10 <= sf <= 10:
            raise MeterError(f"the meter at {self.address} reports W_SF = {sf} (valid: -10..10)")
        return float(w) * 10.0**sf

    async def read(self) -> MeterReading:
        """Import now; any failure is a :class:`MeterError` (this is the library's edge)."""
        async with self._lock:
            try:
                w = await self._read_w()
            except MeterError:
                raise
            except Exception as exc:  # pymodbus on an odd reply: say so, do not crash a poll
                self.close()
                raise MeterError(f"reading the meter at {self.address}: {describe(exc)}") from None
        return MeterReading(-w if self.config.invert else w, time.time())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
