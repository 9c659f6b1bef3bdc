"""The wire between a sharded fleet (:mod:`adapters.fleet_shards`) and its worker processes
(:mod:`adapters.fleet_worker`): length-prefixed frames over a socket pair, each one pickled
tuple.

The parent sends ``(request id, op, argument)``; a worker answers ``(request id, ok,
result, Sync)``, request id 0 for news that answers no request (read-back verdicts, connect
progress). Every frame from a worker carries a :class:`Sync`: what changed in its devices'
status, pending and unconfirmed commands, identities and device info since its last frame,
so that the parent's view of the fleet is the worker's as of that frame. Frames are pickled
in one call, so a reading that is both a result and a status's telemetry goes once.

Pickle is used only between the daemon and the workers it started itself, over a socket
pair nobody else holds; it is never read from a network peer.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

from adapters.base import (
    Applied,
    DeviceAdapter,
    DeviceInfo,
    DeviceUnreachable,
    ModeRequest,
    Telemetry,
)
from adapters.outcomes import DeviceStatus, Outcome, Pending

HEADER = struct.Struct("!I")  # frame length, bytes

#: Operations a worker serves.
OPS = ("connect", "read", "apply", "stage", "ping", "close")


@dataclass
class WorkerSpec:
    """The first frame to a worker: its shard's adapters (not yet connected), their
    classes, and the :class:`~adapters.fleet.Fleet` settings it runs them with."""

    index: int
    adapters: list[DeviceAdapter]
    groups: dict[str, str]
    settings: dict[str, Any]
    log_level: int = logging.WARNING  # the daemon's, for the fleet's loggers


@dataclass
class Sync:
    """What changed in a worker's shard since its previous frame."""

    statuses: list[DeviceStatus] = field(default_factory=list)
    events: list[Outcome] = field(default_factory=list)  # on_outcome, in order
    pending: dict[str, Pending] = field(default_factory=dict)  # new or replaced
    settled: list[str] = field(default_factory=list)  # no longer pending
    unconfirmed: dict[str, ModeRequest] = field(default_factory=dict)  # new or replaced
    resent: list[str] = field(default_factory=list)  # no longer unconfirmed
    infos: dict[str, tuple[DeviceInfo | None, float]] = field(default_factory=dict)
    connected: int = 0  # connects ended (connect_all's progress)
    identities: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: the worker's upkeep since its previous frame: (made, failed, queued now); None: same
    upkeep: tuple[int, int, int] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.statuses or self.events or self.pending or self.settled or self.unconfirmed
            or self.resent or self.infos or self.connected or self.identities
            or self.upkeep is not None
        )  # fmt: skip


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at end of file (the other side is gone)."""
    try:
        head = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return pickle.loads(body)


@dataclass
class ShardDevice(DeviceAdapter):
    """The parent's stand-in for a device a worker process drives: its identity, its info
    and read-back deadline as the worker last reported them. The fleet never calls it; the
    calls go to the worker."""

    shard: int = 0
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        self.kind = "asic"

    def _elsewhere(self) -> DeviceUnreachable:
        return DeviceUnreachable(self.device_id, f"driven by fleet worker {self.shard}")

    async def connect(self) -> DeviceInfo:
        raise self._elsewhere()

    async def read(self) -> Telemetry:
        raise self._elsewhere()

    async def apply(self, request: ModeRequest) -> Applied:
        raise self._elsewhere()

    def confirm_deadline_s(self) -> float:
        return self.deadline_s
