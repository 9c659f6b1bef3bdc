"""Which firmware families the asic-rs back-end (:mod:`adapters.asic_rs`) drives, what
asic-rs 0.8 reads and sets on each, and why the others are refused: the policy, as data,
beside the adapter that applies it. The families are those the conformance suite
(tests/test_families.py) passed through asic-rs:

- **LuxOS** and **stock Antminer**: sleep and wake, read back. asic-rs 0.8 cannot set a
  LuxOS profile (its ``supports_set_power_limit`` is False), so a wake at a target is the
  wake alone, reported as such; it reads no LuxOS hashrate, and reports a curtailed LuxOS
  miner as mining, so a reading's state comes from its power there (as the pyasic
  adapter does for LuxOS).
- **Whatsminer** (refused): asic-rs 0.8.6 encrypts btminer API v2 writes as
  ``{"command": ...}`` where pyasic, MicroBT's community client (whatsminer-api) and the
  simulator use ``{"cmd": ...}``; the write is refused, and asic-rs's ``pause`` still
  answers True.
- **Braiins OS+**: sleep, wake and an exact power target, read back. asic-rs reads the
  model and version only from the web GraphQL API on port 80 (``POST /graphql``), and
  drives a miner below 25.07 through it (``bosminer { stop }``, ``start``,
  ``updateAutotuning``), logging on with ``root`` and an empty password unless the site
  file gives the password (``password_env`` / ``password_file``).
- **VNish**: sleep, wake and its tuned presets (named by their watts: a target maps to
  the highest at or below it, the rounding reported), read back; asic-rs unlocks with
  the site file's password.
"""

from __future__ import annotations

import dataclasses

from models.firmware import CAPABILITIES, Capabilities, Family, PowerTarget, Reading

USE_PYASIC = "use kind = 'pyasic' for it"
#: Families the conformance suite passed through asic-rs (tests/test_families.py).
DRIVEN = frozenset({Family.LUXOS, Family.ANTMINER_STOCK, Family.BRAIINS, Family.VNISH})
#: Why the others are refused, where it is known.
REFUSED: dict[Family, str] = {
    Family.WHATSMINER: (
        "asic-rs 0.8.6 sends Whatsminer's encrypted writes as {'command': ...} where "
        "MicroBT's API V2.0.4 document (and pyasic, whatsminer-api) has {'cmd': ...}, and "
        "answers True for a pause the firmware refused"
    ),
    Family.OTHER: "firmware asic-rs identified but gridsched has no family for",
}
#: What asic-rs 0.8 does not read or set per family, against the family's capabilities
#: (temperatures: not asked for, as each asic-rs data field costs requests).
NO_TARGET: dict[Family, str] = {
    Family.LUXOS: "no power target through asic-rs 0.8, which cannot set a LuxOS profile",
}
NOT_READ: dict[Family, frozenset[Reading]] = {
    Family.LUXOS: frozenset({Reading.HASHRATE, Reading.TEMPERATURE, Reading.MINING}),
    Family.ANTMINER_STOCK: frozenset({Reading.TEMPERATURE}),
    Family.BRAIINS: frozenset({Reading.TEMPERATURE}),
    Family.VNISH: frozenset({Reading.TEMPERATURE}),
}


def family_of_rs(firmware: str, make: str) -> Family:
    """The family of what asic-rs identified: its firmware name ("LuxOS", "AntMiner
    Stock", "WhatsMiner Stock", "VNish", "BraiinsOS" ...) and make."""
    fw = firmware.strip().lower()
    mk = make.strip().lower()
    if "luxos" in fw:
        return Family.LUXOS
    if "braiins" in fw or "bos" in fw:
        return Family.BRAIINS
    if "vnish" in fw:
        return Family.VNISH
    if "auradine" in mk:  # whatever asic-rs names its firmware (FluxOS)
        return Family.AURADINE
    if "stock" in fw and "antminer" in mk:
        return Family.ANTMINER_STOCK
    if "stock" in fw and "whatsminer" in mk:
        return Family.WHATSMINER
    return Family.OTHER


def refusal(family: Family) -> str | None:
    """Why this back-end does not drive ``family``; None where it does."""
    if family in DRIVEN:
        return None
    return REFUSED.get(
        family, f"asic-rs on {family.value} is not verified by the conformance suite"
    )


def capabilities(family: Family) -> Capabilities:
    """The family's capabilities as asic-rs 0.8 drives them (fewer than pyasic's)."""
    caps = CAPABILITIES[family]
    if family in NO_TARGET:
        caps = dataclasses.replace(caps, power_target=PowerTarget.NONE)
    gone = NOT_READ.get(family, frozenset())
    return dataclasses.replace(caps, readings=caps.readings - gone)
