"""The firmware capability model: every family pyasic reports maps to one, and the table
in docs/hardware.md carries every family with a source for each cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.firmware import CAPABILITIES, Family, PowerTarget, Reading, capabilities, family_of

ROOT = Path(__file__).resolve().parent.parent


def test_every_family_has_capabilities() -> None:
    assert set(CAPABILITIES) == set(Family)
    for fam, caps in CAPABILITIES.items():
        assert caps.family is fam and caps.confirm_within_s > 0 and caps.sleep_wake
    stock = CAPABILITIES[Family.ANTMINER_STOCK]
    assert stock.power_target is PowerTarget.NONE and not stock.reads_power
    assert Reading.MINING in stock.readings
    # stock writes restart bmminer: tens of seconds, more before it hashes
    assert stock.confirm_within_s >= 60
    assert CAPABILITIES[Family.LUXOS].power_target is PowerTarget.PRESETS


@pytest.mark.parametrize(
    ("firmware", "make", "family"),
    [
        ("LuxOS", "AntMiner", Family.LUXOS),
        ("BOS+", "AntMiner", Family.BRAIINS),
        ("Stock", "AntMiner", Family.ANTMINER_STOCK),
        ("Stock", "WhatsMiner", Family.WHATSMINER),
        ("VNish", "AntMiner", Family.VNISH),
        ("ePIC", "AntMiner", Family.OTHER),
        ("Stock", "Goldshell", Family.OTHER),
        ("", "", Family.OTHER),
    ],
)
def test_family_of_what_pyasic_reports(firmware: str, make: str, family: Family) -> None:
    assert family_of(firmware, make) is family
    assert capabilities(firmware, make).family is family


def test_the_names_are_pyasics_own() -> None:
    from pyasic.device.firmware import MinerFirmware
    from pyasic.device.makes import MinerMake

    assert family_of(str(MinerFirmware.LUXOS), str(MinerMake.ANTMINER)) is Family.LUXOS
    assert family_of(str(MinerFirmware.BRAIINS_OS), str(MinerMake.ANTMINER)) is Family.BRAIINS
    assert family_of(str(MinerFirmware.VNISH), str(MinerMake.ANTMINER)) is Family.VNISH
    assert family_of(str(MinerFirmware.STOCK), str(MinerMake.ANTMINER)) is Family.ANTMINER_STOCK
    assert family_of(str(MinerFirmware.STOCK), str(MinerMake.WHATSMINER)) is Family.WHATSMINER


def test_hardware_doc_has_a_row_with_sources_for_every_family() -> None:
    text = (ROOT / "docs" / "hardware.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for fam in Family:
        row = next((r for r in rows if r.startswith(f"| `{fam.value}`")), None)
        assert row is not None, f"docs/hardware.md has no row for {fam.value}"
        caps = CAPABILITIES[fam]
        assert caps.power_target.value in row
        assert f"{caps.confirm_within_s:g} s" in row
        assert "[" in row  # a source reference in every row
