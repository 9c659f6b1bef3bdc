"""The TCP server of a simulated miner's JSON API, with injected faults.

The wire protocol is the cgminer one that LuxOS, bmminer (stock Antminer), BOSminer
(Braiins OS+) and btminer (Whatsminer) all serve on port 4028: the client writes one JSON
object ``{"command": "summary", "parameter": "..."}``, the miner answers one JSON object
(NUL-terminated) and closes the connection. What each command answers is the family's
command table (:mod:`adapters.sim.luxos`, :mod:`adapters.sim.antminer`, ...); this module
serves it, and takes the miner off the network or mangles its answers on demand.

Faults are injected per miner (:class:`Fault`): connection refused, hanging, slow replies,
malformed JSON, a reboot in the middle of a command, dropping out for a while; and, of the
firmware itself, a command answered as done that does nothing, a valid answer in a shape
the client cannot parse, and a setting that takes effect late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from adapters.sim.physics import MinerPhysics


class FaultKind(StrEnum):
    REFUSE = "refuse"  # nothing listens: connection refused
    HANG = "hang"  # accepts and reads, never answers
    SLOW = "slow"  # answers after `delay_s`
    MALFORMED = "malformed"  # answers with broken JSON
    REBOOT = "reboot"  # the next command drops the connection and the miner reboots
    DROPOUT = "dropout"  # gone from the network for `duration_s`, then back as it was
    IGNORE = "ignore"  # control commands are answered success and change nothing
    GARBLE = "garble"  # answers valid JSON in a shape the client cannot parse
    SLOW_WRITE = "slow-write"  # a setting takes effect `delay_s` after the write's answer


@dataclass
class Fault:
    kind: FaultKind
    until: float = math.inf  # monotonic time the fault ends
    delay_s: float = 2.0  # for SLOW


@dataclass
class MinerServer(MinerPhysics):
    """A simulated miner's API on ``host:port``; a subclass answers (:meth:`answer`)."""

    port: int = 4028
    faults: list[Fault] = field(default_factory=list)
    commands_seen: int = 0
    last_curtail: tuple[str, float] | None = None  # (sleep|wakeup, unix time received)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._server: asyncio.AbstractServer | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._active: set[asyncio.Task[None]] = set()

    def answer(self, raw: bytes) -> dict[str, Any]:
        """The reply to one request, as the miner would send it."""
        raise NotImplementedError

    # -- faults -----------------------------------------------------------------------------

    def inject(
        self, kind: FaultKind | str, duration_s: float = math.inf, delay_s: float = 2.0
    ) -> None:
        """Start a fault now; ``duration_s`` bounds it (a reboot ends by itself)."""
        kind = FaultKind(kind)
        until = self.clock() + duration_s
        if kind is FaultKind.DROPOUT or kind is FaultKind.REFUSE:
            self.faults = [
                f for f in self.faults if f.kind not in (FaultKind.DROPOUT, FaultKind.REFUSE)
            ]
            self.faults.append(Fault(kind, until))
            self._stop_listening(duration_s)
            return
        self.faults = [f for f in self.faults if f.kind is not kind]
        self.faults.append(Fault(kind, until, delay_s))

    def clear_faults(self) -> None:
        self.faults.clear()
        if self._server is None:
            self._restart_listening()

    def _fault(self, kind: FaultKind) -> Fault | None:
        now = self.clock()
        self.faults = [f for f in self.faults if f.until > now]
        return next((f for f in self.faults if f.kind is kind), None)

    def _reboot(self) -> None:
        self._power_off()
        self._stop_listening(self.reboot_s, after=self._boot)

    # -- serving ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, backlog=64
        )

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._active):
            task.cancel()
        if self._active:
            await asyncio.gather(*self._active, return_exceptions=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _stop_listening(self, duration_s: float, after: Callable[[], None] | None = None) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if math.isfinite(duration_s):
            loop = asyncio.get_running_loop()

            def reopen() -> None:
                self._reopen = None
                if after is not None:
                    after()
                self._restart_listening()

            self._reopen = loop.call_later(duration_s, reopen)

    def _restart_listening(self) -> None:
        async def go() -> None:
            with contextlib.suppress(OSError):
                await self.start()

        asyncio.get_running_loop().create_task(go())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        try:
            raw = await _read_request(reader)
            self.commands_seen += 1
            if self._fault(FaultKind.REBOOT) is not None:
                self.faults = [f for f in self.faults if f.kind is not FaultKind.REBOOT]
                self._reboot()
                return  # connection dropped without an answer
            if self._fault(FaultKind.HANG) is not None:
                while self._fault(FaultKind.HANG) is not None and self._server is not None:
                    await asyncio.sleep(0.05)
                return  # the fault ended or the miner stopped: drop the connection unanswered
            slow = self._fault(FaultKind.SLOW)
            if slow is not None:
                await asyncio.sleep(slow.delay_s)
            if self._fault(FaultKind.MALFORMED) is not None:
                writer.write(b'{"STATUS":[{"STATUS":"S","When":' + b"\xff\xfe" + b'"Msg":')
            else:
                writer.write(json.dumps(self.answer(raw), separators=(",", ":")).encode() + b"\x00")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one JSON request: clients write it and keep the socket open for the answer."""
    buf = b""
    while True:
        async with asyncio.timeout(10.0):
            chunk = await reader.read(4096)
        if not chunk:
            return buf
        buf += chunk
        text = buf.rstrip(b"\x00\n ")
        if text.endswith(b"}"):
            try:
                json.loads(text)
            except ValueError:
                continue
            return text
