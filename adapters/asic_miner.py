"""What both ASIC back-ends share (pyasic: :mod:`adapters.asic`, asic-rs:
:mod:`adapters.asic_rs`): how a miner is reached, the firmware family's read-back
deadlines unless the site sets its own, the identity ``connect`` reports, and what a
reading makes the adapter believe the miner is doing (asleep, awake, at which target), so
that an apply sends only what is not already in effect. The identity's ``min_power_w`` /
``max_power_w`` are the presets' bounds, or the range an exact target may take where the
firmware says it (Braiins OS+: :func:`adapters.braiins.tuner_range`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from adapters.base import (
    AdapterError,
    DeviceAdapter,
    DeviceInfo,
    DeviceUnreachable,
    Telemetry,
    contain,
)
from adapters.secrets import Secret
from models.firmware import CAPABILITIES, Capabilities, Family

#: After a sleep command, readings of "running" are not believed for this long (LuxOS
#: sleeps in about 5 s; a reading sent before the command can still come back).
SLEEP_SETTLE_S = 30.0
#: A reconnect reuses the miner the library identified unless discovery is older than
#: this (a miner re-flashed to other firmware is noticed within it).
REDISCOVER_S = 600.0


@dataclass
class AsicMiner(DeviceAdapter):
    """One miner through a library; ``address`` is its IP. A subclass finds the miner
    (``_miner``) and its family's capabilities (``_caps``) at connect."""

    timeout_s: float = 3.0
    username: str | None = None
    password: Secret | None = None
    #: Read-back deadline; None: the firmware family's (models.firmware).
    confirm_within_s: float | None = None
    _miner: Any = field(default=None, init=False, repr=False)
    _caps: Capabilities = field(default=CAPABILITIES[Family.OTHER], init=False)
    _discovered_at: float = field(default=-math.inf, init=False)  # monotonic
    _sleeping: bool | None = field(default=None, init=False)
    _target_w: float | None = field(default=None, init=False)  # as last read or set
    _slept_at: float | None = field(default=None, init=False)  # sleep sent, not yet seen

    def confirm_deadline_s(self) -> float:
        if self.confirm_within_s is not None:
            return self.confirm_within_s
        return self._caps.confirm_within_s

    def readback_after_s(self) -> float:
        return self._caps.settle_s  # the fleet's read-back bounds it by the deadline

    def _need(self) -> Any:
        if self._miner is None:
            raise DeviceUnreachable(self.device_id, "not connected")
        return self._miner

    async def _version(self, aw: Awaitable[Any]) -> str:
        """The firmware version ``aw`` reads, or "": identity only, a miner that will not
        say is still driven."""
        try:
            return str(await contain(self.device_id, "version", aw, self.timeout_s) or "")
        except AdapterError:
            return ""

    def _identity(
        self,
        make: str,
        model: str,
        firmware: str,
        version: str,
        family: Family,
        presets: tuple[float, ...],
        range_w: tuple[float, float] | None = None,
    ) -> DeviceInfo:
        """What ``connect`` reports: the miner, its firmware and the power targets it
        offers (``presets``, ascending; ``range_w``: the least and most an exact target
        may be, where the firmware says, as Braiins OS+'s tuner does; else the presets')."""
        lo, hi = range_w or ((presets[0], presets[-1]) if presets else (None, None))
        return DeviceInfo(
            device_id=self.device_id,
            kind="asic",
            address=self.address,
            make=make,
            model=model,
            firmware=firmware,
            firmware_version=version,
            family=family.value,
            power_targets_w=presets,
            min_power_w=lo,
            max_power_w=hi,
        )

    def _believe(self, t: Telemetry, now: float) -> None:
        """What a reading taken at ``now`` shows the miner doing. A miner still ramping
        down (or a reading sent before the sleep) reads as running: believing it awake
        would make the next wake skip its resume and leave it asleep, reported as applied."""
        if t.state == "sleeping":
            self._sleeping, self._slept_at = True, None
        elif t.state == "running" and (
            self._slept_at is None or now - self._slept_at > SLEEP_SETTLE_S
        ):
            self._sleeping = False
        self._target_w = t.target_w

    def _target_in_place(self, target: float) -> bool:
        return self._target_w is not None and abs(self._target_w - target) <= 0.5
