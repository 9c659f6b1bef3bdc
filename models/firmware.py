"""What each miner firmware family can do, as data: sleep/wake, power target, telemetry,
and how long a change takes to show.

The adapter (``adapters.asic``) picks a family from what discovery found and uses this
table to decide what to send (a power target only where the firmware has one), what a
reading can say (no power figure from stock firmware), and how long to wait for a
read-back before a command counts as unconfirmed. docs/hardware.md carries the same
table with the source of every cell; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    LUXOS = "luxos"
    BRAIINS = "braiins-os"
    ANTMINER_STOCK = "antminer-stock"
    WHATSMINER = "whatsminer"
    WHATSMINER_V3 = "whatsminer-v3"  # firmware after 2024-11: API v3 on 4433
    VNISH = "vnish"
    AURADINE = "auradine"  # Auradine Teraflux on FluxOS: web API on 8080
    OTHER = "other"


class PowerTarget(StrEnum):
    EXACT = "exact"  # any watt figure in the firmware's range
    PRESETS = "presets"  # named profiles with known watts; a target maps to one
    NONE = "none"  # no power target: full or asleep


class Reading(StrEnum):
    """What a reading can carry (through pyasic 0.79)."""

    POWER = "power_w"
    TARGET = "target_w"
    HASHRATE = "hashrate_ths"
    TEMPERATURE = "temperatures_c"
    MINING = "is_mining"


@dataclass(frozen=True)
class Capabilities:
    family: Family
    sleep_wake: bool
    power_target: PowerTarget
    readings: frozenset[Reading]
    #: How long after a command a read-back may take to show it; past this it is
    #: unconfirmed. Covers the slowest of sleep, wake and target change.
    confirm_within_s: float
    note: str = ""
    #: How long a write's answer may take. A write that went out and is not answered
    #: within the adapter's timeout is reported sent and left to finish within this;
    #: the read-back decides whether it took effect (adapters.antminer).
    write_timeout_s: float = 30.0
    #: How long a change typically takes to show in a reading: the fleet's targeted
    #: read-back reads the device then, and again at doubling intervals until
    #: ``confirm_within_s`` (adapters.readback). Where no source gives a time, 5 s.
    settle_s: float = 5.0
    #: The highest power target the firmware takes, as a share of the model's standard
    #: (nameplate) power; None: no such limit known. A mode above it is out of reach: the
    #: firmware holds the limit at the standard power and the read-back never shows it.
    target_max_share: float | None = None

    @property
    def reads_power(self) -> bool:
        return Reading.POWER in self.readings


_ALL = frozenset(Reading)

CAPABILITIES: dict[Family, Capabilities] = {
    Family.LUXOS: Capabilities(
        Family.LUXOS,
        sleep_wake=True,
        power_target=PowerTarget.PRESETS,
        readings=_ALL,
        confirm_within_s=60.0,
        note="curtail sleep/wakeup; profiles by frequency step (profileset)",
        settle_s=5.0,  # sleep about 5 s, wake 10 s or more (docs/hardware.md [L1])
    ),
    Family.BRAIINS: Capabilities(
        Family.BRAIINS,
        sleep_wake=True,
        power_target=PowerTarget.EXACT,
        readings=_ALL,
        confirm_within_s=120.0,
        note="pause/resume; power target through the tuner, which retunes for minutes",
    ),
    Family.ANTMINER_STOCK: Capabilities(
        Family.ANTMINER_STOCK,
        sleep_wake=True,
        power_target=PowerTarget.NONE,
        readings=frozenset({Reading.HASHRATE, Reading.TEMPERATURE, Reading.MINING}),
        confirm_within_s=120.0,
        note="miner-mode and bitmain-work-mode 1/0 in set_miner_conf.cgi; answered ~21 s later",
        write_timeout_s=60.0,  # the CGI may answer only once bmminer has restarted
        settle_s=20.0,  # a write answered after ~21 s on an S19j Pro (docs/hardware.md [A4])
    ),
    Family.WHATSMINER: Capabilities(
        Family.WHATSMINER,
        sleep_wake=True,
        power_target=PowerTarget.EXACT,
        readings=_ALL,
        confirm_within_s=120.0,
        note="power_off/power_on; adjust_power_limit (token-encrypted writes)",
        # pyasic rpc/btminer.py adjust_power_limit: "Cannot be higher than the ordinary
        # power of the machine", and the miner reboots to apply it
        target_max_share=1.0,
    ),
    # pyasic 0.79 reads no mining state on API v3 (no is_mining data location) and its
    # board temperatures only as inlet/outlet, not chip temperature (backends/btminer.py).
    Family.WHATSMINER_V3: Capabilities(
        Family.WHATSMINER_V3,
        sleep_wake=True,
        power_target=PowerTarget.EXACT,
        readings=frozenset({Reading.POWER, Reading.TARGET, Reading.HASHRATE}),
        confirm_within_s=120.0,
        note="set.miner.service stop/start; set.miner.power_limit restarts btminer to apply",
        # MicroBT API v3 (docs/hardware.md [W2]): the limit in force is the least of the
        # user's and the machine's standard power
        target_max_share=1.0,
    ),
    Family.VNISH: Capabilities(
        Family.VNISH,
        sleep_wake=True,
        power_target=PowerTarget.PRESETS,
        readings=_ALL,
        confirm_within_s=120.0,
        note="stop/start mining over its web API; presets by watts",
    ),
    # pyasic 0.79 (backends/auradine.py) reads power from the web ``psu``, the target from
    # ``mode``, mining from ``mode``'s Sleep; board temperatures only as ``temp``, not
    # chip temperature. No source gives how long a change takes to show: the others' 120 s.
    Family.AURADINE: Capabilities(
        Family.AURADINE,
        sleep_wake=True,
        power_target=PowerTarget.EXACT,
        readings=frozenset({Reading.POWER, Reading.TARGET, Reading.HASHRATE, Reading.MINING}),
        confirm_within_s=120.0,
        note="POST /mode sleep on/off; mode custom, tune power (token on the web API)",
    ),
    Family.OTHER: Capabilities(
        Family.OTHER,
        sleep_wake=True,
        power_target=PowerTarget.NONE,
        readings=frozenset({Reading.HASHRATE, Reading.MINING}),
        confirm_within_s=180.0,
        note="unknown firmware: sleep/wake attempted, no target; read back before trusting",
    ),
}


#: ``[devices.adapter] sim_firmware`` (models/device_adapter.py) -> the family its simulator
#: is (adapters.sim.fleet.FIRMWARE): what an offline plan or a benchmark knows of a
#: simulated class before any miner answers
SIM_FIRMWARE_FAMILY = {
    "luxos": Family.LUXOS,
    "antminer": Family.ANTMINER_STOCK,
    "braiins": Family.BRAIINS,
    "whatsminer": Family.WHATSMINER,
    "whatsminer3": Family.WHATSMINER_V3,
    "vnish": Family.VNISH,
    "auradine": Family.AURADINE,
}


def family_of(firmware: str, make: str) -> Family:
    """The family of what discovery found: pyasic's ``MinerFirmware`` value ("LuxOS",
    "BOS+", "VNish", "Stock" ...) and ``MinerMake`` ("AntMiner", "WhatsMiner" ...)."""
    fw = firmware.strip().lower()
    mk = make.strip().lower()
    if fw == "luxos":
        return Family.LUXOS
    if fw in ("bos+", "braiins os", "braiins-os", "braiinsos"):
        return Family.BRAIINS
    if fw == "vnish":
        return Family.VNISH
    if fw == "stock" and mk == "antminer":
        return Family.ANTMINER_STOCK
    if fw == "stock" and mk == "whatsminer":
        return Family.WHATSMINER
    if fw == "stock" and mk == "auradine":
        return Family.AURADINE
    return Family.OTHER


def capabilities(firmware: str, make: str) -> Capabilities:
    return CAPABILITIES[family_of(firmware, make)]
