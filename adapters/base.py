"""One async interface for every device gridsched controls.

An adapter connects to one device, reads its telemetry and applies a mode. Whatever the
vendor library or the device does (odd replies, hangs, any exception), an adapter method
either returns a typed value or raises one of the narrow :class:`AdapterError` kinds
below; :func:`contain` is the edge that enforces this. Retries, timeouts, concurrency and
health live one level up, in :mod:`adapters.fleet`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal, TypeVar

from adapters.neterrors import describe
from adapters.replywords import said

T = TypeVar("T")

#: A reading's SM clock lock when the adapter cannot tell which is in force (NVML sets and
#: resets a locked range but has no call that reads one back).
CLOCKS_UNKNOWN: Final = "unknown"
#: The SM clock lock in force: (min, max) MHz, None for the driver's own clocks, or
#: :data:`CLOCKS_UNKNOWN`.
ClockLock = tuple[int, int] | Literal["unknown"] | None


class Health(StrEnum):
    """One device's state as the fleet last saw it; the members below UNREACHABLE were
    added later, and code that knows only the first three still reads them as not ok."""

    OK = "ok"
    DEGRADED = "degraded"  # a transient failure (timeout, refused) below the limit, or errors
    UNREACHABLE = "unreachable"  # no connection: consecutive failures past the limit
    UNREADABLE = "unreadable"  # answers, but what it says cannot be parsed
    REJECTED = "rejected"  # answered and refused the last command
    UNCONFIRMED = "unconfirmed"  # accepted the last command, the read-back never showed it


class AdapterError(Exception):
    """A device operation failed; ``device`` names the device, the message says why."""

    retryable = True

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.reason = message


class DeviceUnreachable(AdapterError):
    """Connection refused, reset, or nothing answered."""


class DeviceTimeout(AdapterError):
    """The device accepted the request and did not answer in time."""


class BadReply(AdapterError):
    """The device answered something that cannot be parsed or makes no sense."""


class ControlRejected(AdapterError):
    """The device answered and refused the command (wrong session, invalid value)."""


class Unsupported(AdapterError):
    """The device or library cannot do this at all (no NVML, no permission); never retried."""

    retryable = False


class NotConfirmed(AdapterError):
    """The command was accepted but read-back did not show it in time."""


@dataclass(frozen=True)
class ModeRequest:
    """What one device should do: ``run`` at a power target (W) or ``sleep``.

    For an ASIC the target is the firmware power target or profile watts; for a GPU it is
    the NVML power limit. ``None`` keeps the device's current target.
    """

    action: Literal["run", "sleep"]
    power_w: float | None = None
    #: GPUs: lock the SM clock to (min, max) MHz; None runs with the driver's clocks.
    clocks_mhz: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.action not in ("run", "sleep"):
            raise ValueError(f"action {self.action!r}: valid are 'run' and 'sleep'")
        if self.power_w is not None and not self.power_w > 0:
            raise ValueError(f"power_w {self.power_w!r} must be > 0 W")
        if self.clocks_mhz is not None and not 0 < self.clocks_mhz[0] <= self.clocks_mhz[1]:
            raise ValueError(f"clocks_mhz {self.clocks_mhz!r}: (min, max) MHz, 0 < min <= max")

    def describe(self) -> str:
        if self.action == "sleep":
            return "sleep"
        text = "run" if self.power_w is None else f"run@{self.power_w:g}W"
        if self.clocks_mhz is not None:
            text += f"@{self.clocks_mhz[0]}-{self.clocks_mhz[1]}MHz"
        return text


@dataclass(frozen=True)
class Applied:
    """A control call's outcome as the device took it."""

    request: ModeRequest
    target_w: float | None  # what the device was set to (a preset may differ)
    note: str = ""  # e.g. the preset rounding, in words


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    kind: Literal["asic", "gpu"]
    address: str
    make: str = ""
    model: str = ""
    firmware: str = ""
    firmware_version: str = ""
    family: str = ""  # models.firmware.Family value for miners; "" where it does not apply
    serial: str = ""  # a GPU's UUID, a miner's serial number where it reports one
    power_targets_w: tuple[float, ...] = ()  # presets; empty when any target in range works
    min_power_w: float | None = None
    max_power_w: float | None = None


@dataclass(frozen=True)
class Telemetry:
    """One reading of one device. Units are in the names; ``None`` means not reported."""

    device_id: str
    at: float  # unix seconds of the reading
    state: Literal["running", "sleeping", "transition", "unknown"]
    power_w: float | None = None
    target_w: float | None = None  # power target, preset watts or GPU power limit
    hashrate_ths: float | None = None
    tokens_s: float | None = None
    energy_j: float | None = None  # device's own cumulative counter
    temperatures_c: tuple[float, ...] = ()
    utilisation_pct: float | None = None
    sm_clock_mhz: float | None = None
    errors: tuple[str, ...] = ()
    #: GPUs: the SM clock lock in force as the adapter knows it: (min, max) MHz; None: the
    #: driver's own clocks (and devices without one); CLOCKS_UNKNOWN: the adapter cannot
    #: tell (a lock left by an earlier run, one reset behind its back, a call timed out).
    #: A GPU adapter that can lock clocks must set it: a reading's mode depends on it.
    sm_clock_lock_mhz: ClockLock = None

    @property
    def max_temp_c(self) -> float | None:
        return max(self.temperatures_c) if self.temperatures_c else None


def target_tolerance_w(target_w: float) -> float:
    """How far a power target read may be from one set and still be it (W): 1 %, 1 W at
    least (firmware rounds what it reports)."""
    return max(1.0, 0.01 * target_w)


@dataclass
class DeviceAdapter(ABC):
    """One device. Subclasses implement the four operations (and may implement ``stage``);
    all may raise AdapterError."""

    device_id: str
    address: str
    info: DeviceInfo | None = field(default=None, init=False)

    kind: Literal["asic", "gpu"] = field(default="asic", init=False)
    #: Set by the one process that commands the device (the daemon), never by readers
    #: (``gridsched fleet status``): on connect, an adapter may bring a device whose state
    #: it cannot read back to a known one (the GPU adapter resets an SM clock lock).
    controller: bool = field(default=False, init=False)
    #: Set by a reading that found upkeep due (a LuxOS session to renew ahead of the next
    #: command); the fleet then runs :meth:`upkeep` off the sweep's path
    #: (:mod:`adapters.fleet_upkeep`).
    upkeep_wanted: bool = field(default=False, init=False)

    @abstractmethod
    async def connect(self) -> DeviceInfo:
        """Identify the device and learn its limits; called again after failures."""

    @abstractmethod
    async def read(self) -> Telemetry:
        """One telemetry reading."""

    @abstractmethod
    async def apply(self, request: ModeRequest) -> Applied:
        """Send the mode; returns once the device accepted it (not yet reached it)."""

    async def stage(self, request: ModeRequest) -> Applied | None:
        """Set up ahead, without changing what the device does now, what a later
        ``apply(request)`` would have to send first, so that the apply itself is one step.

        Returns what was staged, or None where there is nothing the device can take ahead
        (the default). Staging is best-effort: an apply never relies on it, and re-sends
        whatever the device turns out not to have.
        """
        return None

    def confirm_deadline_s(self) -> float:
        """How long a read-back may take to show a command before it counts as
        unconfirmed (the firmware family's deadline for miners)."""
        return 30.0

    def readback_after_s(self) -> float:
        """How soon after a command a reading may show it: the fleet reads the device back
        then, on its own and ahead of the telemetry sweep, and again at doubling intervals
        until the confirmation deadline (:mod:`adapters.readback`, which alone bounds this
        figure by the deadline: an adapter says its firmware's time as is)."""
        return 1.0

    def unconfirmed(self, applied: Applied) -> None:  # noqa: B027 - optional hook
        """A command was accepted and never showed: forget what was believed sent, so that
        the next apply sends everything again."""

    def not_shown(self, applied: Applied, t: Telemetry) -> str:
        """Why ``t``, a reading made after ``applied`` was sent, does not show it, in words,
        where the adapter knows more than the reading's state (a stock Antminer configured
        asleep and still hashing); "" where the state says it all (the default)."""
        return ""

    def confirms(self, applied: Applied, t: Telemetry) -> bool:
        """Whether a reading shows the applied mode in effect (the read-back check)."""
        if applied.request.action == "sleep":
            return t.state == "sleeping"
        if t.state != "running":
            return False
        if applied.target_w is None or t.target_w is None:
            return True
        return abs(t.target_w - applied.target_w) <= target_tolerance_w(applied.target_w)

    async def upkeep(self) -> None:
        """What the last reading found due, done now (best effort: what it could not do, a
        later reading asks for again). Raises AdapterError when what it tried failed (the
        fleet counts and logs it, and goes on). The default has none."""
        self.upkeep_wanted = False

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""


async def contain(device: str, what: str, aw: Awaitable[T], timeout_s: float) -> T:
    """Await a vendor call; turn a timeout or any exception into an AdapterError.

    This is the adapter's edge: libraries choke on odd replies with any exception (KeyError,
    ValueError, UnicodeDecodeError...), said in words (:func:`adapters.replywords.said`: a
    bug in our own code keeps its name). Cancellation still propagates.
    """
    try:
        async with asyncio.timeout(timeout_s):  # no extra task, unlike wait_for
            return await aw
    except AdapterError:
        raise
    except TimeoutError:
        raise DeviceTimeout(device, f"{what}: no answer within {timeout_s:g} s") from None
    except (ConnectionError, OSError) as exc:  # in words: "gaierror" tells an operator nothing
        raise DeviceUnreachable(device, f"{what}: {describe(exc)}") from None
    except Exception as exc:  # worded only here, off the success path
        raise BadReply(device, f"{what}: {said(exc, f'{device}: {what}')}") from None
