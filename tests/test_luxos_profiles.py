"""The LuxOS simulator's profiles are LuxOS's: 25 built-in profiles in 25 MHz / 0.1 V steps
from the default (16 below, 8 above), named by frequency (``520MHz``) beside ``default``;
``profileset`` selects by name, by estimated power or hashrate (``W`` / ``kW`` / ``THs``) or
by relative position (``+1`` / ``-2``), takes the legacy board id, and answers as Luxor's
docs show (Code 321 "Profile Set"); ``atm`` names its bounds by the same names.

Sources: docs.luxor.tech firmware/features ("Preset Profiles"), API pages ``profileset``,
``atm``, ``atmset``; Luxor's luxos-tooling (tests/data/messages/atm.json: "580MHz");
pyasic 0.79 (``rpc/luxminer.py`` atm/atmset docstrings: "395MHz", "145MHz", "+1", "-2";
``MiningPreset.from_luxos``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.sim.luxos import LuxosSim
from adapters.sim.physics import presets_for
from models import catalog


def ask(m: LuxosSim, command: str, parameter: str = "") -> dict[str, Any]:
    req: dict[str, Any] = {"command": command}
    if parameter:
        req["parameter"] = parameter
    return m.answer(json.dumps(req).encode())


def status(reply: dict[str, Any]) -> tuple[str, int, str]:
    s = reply["STATUS"][0]
    return s["STATUS"], s["Code"], s["Msg"]


def _miner() -> tuple[LuxosSim, str]:
    now = [0.0]
    m = LuxosSim("127.0.0.1", clock=lambda: now[0])
    sid = ask(m, "logon")["SESSION"][0]["SessionID"]
    return m, sid


def test_the_ladder_is_luxos_25_profiles_named_by_frequency() -> None:
    presets = presets_for("Antminer S19j Pro")
    names = [p.name for p in presets]
    assert len(presets) == 25
    i = names.index("default")
    assert i == 16 and len(names) - i - 1 == 8  # 16 underclock steps, 8 overclock
    base = presets[i]
    assert (base.frequency_mhz, base.voltage) == (545, 13.4)  # Luxor's S19j Pro example
    for k, p in enumerate(presets):
        assert p.frequency_mhz == 545 + 25 * (k - i)
        assert p.voltage == pytest.approx(13.4 + 0.1 * (k - i))
        if k != i:
            assert p.name == f"{p.frequency_mhz}MHz"
    assert names[0] == "145MHz" and names[-1] == "745MHz"
    # No name reads as a relative selector ("+1", "-2"), which profileset takes as a step.
    assert not any(n[0] in "+-" for n in names)


def test_default_is_the_nameplate_and_the_steps_follow_frequency_and_voltage() -> None:
    spec = catalog.find_asic("Antminer S19j Pro")
    presets = {p.name: p for p in presets_for("Antminer S19j Pro")}
    base = presets["default"]
    assert (base.watts, base.ths) == (spec.power_w, spec.hashrate_ths)
    # Hashrate follows frequency (Luxor: 545 MHz 104 TH/s, 525 100, 505 96).
    assert presets["520MHz"].ths == pytest.approx(spec.hashrate_ths * 520 / 545, abs=0.01)
    # Power follows f * V^2 (CMOS dynamic power).
    p = presets["495MHz"]
    want = spec.power_w * (495 / 545) * (p.voltage / 13.4) ** 2
    assert p.watts == pytest.approx(want, abs=1.0)
    watts = [q.watts for q in presets_for("Antminer S19j Pro")]
    assert watts == sorted(watts) and len(set(watts)) == 25


def test_profiles_lists_the_ladder_in_pyasics_fields() -> None:
    from pyasic.config.mining.presets import MiningPreset

    m, _sid = _miner()
    reply = ask(m, "profiles")
    assert status(reply)[0] == "S"
    rows = reply["PROFILES"]
    assert [r["Profile Name"] for r in rows] == [p.name for p in m.presets]
    parsed = [MiningPreset.from_luxos(r) for r in rows]
    assert [p.name for p in parsed][16] == "default"
    assert {r["Step"] for r in rows} == {str(k) for k in range(-16, 9)}


def test_profileset_by_name_answers_as_luxors_docs_show() -> None:
    m, sid = _miner()
    reply = ask(m, "profileset", f"{sid},520MHz")
    assert status(reply) == ("S", 321, "Profile Set")
    (row,) = reply["PROFILE"]
    assert set(row) == {"Board", "FrequencyStep", "Profile", "VoltageStep"}
    assert row["Profile"] == "520MHz"
    assert m.state.profile == "520MHz"


def test_profileset_by_relative_position_counts_from_default() -> None:
    m, sid = _miner()
    assert ask(m, "profileset", f"{sid},+1")["PROFILE"][0]["Profile"] == "570MHz"
    assert m.state.profile == "570MHz"
    assert ask(m, "profileset", f"{sid},-2")["PROFILE"][0]["Profile"] == "495MHz"
    assert ask(m, "profileset", f"{sid},+8")["PROFILE"][0]["Profile"] == "745MHz"
    assert ask(m, "profileset", f"{sid},-16")["PROFILE"][0]["Profile"] == "145MHz"
    for beyond in ("+9", "-17"):
        assert status(ask(m, "profileset", f"{sid},{beyond}"))[0] == "E"
    assert m.state.profile == "145MHz"


def test_profileset_by_power_or_hashrate_selects_the_nearest_estimate() -> None:
    m, sid = _miner()
    by_w = {p.name: p.watts for p in m.presets}
    by_ths = {p.name: p.ths for p in m.presets}

    def nearest(table: dict[str, float], x: float) -> str:
        return min(table, key=lambda n: (abs(table[n] - x), table[n]))

    for sel, table, x in (
        ("3000W", by_w, 3000.0),
        ("2.5kW", by_w, 2500.0),
        ("1.25kW", by_w, 1250.0),
        ("90THs", by_ths, 90.0),
        ("100.0THs", by_ths, 100.0),
    ):
        reply = ask(m, "profileset", f"{sid},{sel}")
        assert status(reply) == ("S", 321, "Profile Set"), sel
        got = reply["PROFILE"][0]["Profile"]
        assert got == nearest(table, x) and m.state.profile == got, sel
    assert ask(m, "profileset", f"{sid},100.0THs")["PROFILE"][0]["Profile"] == "default"
    assert ask(m, "profileset", f"{sid},3000W")["PROFILE"][0]["Profile"] == "default"


def test_profileset_takes_the_legacy_board_id_before_the_name() -> None:
    m, sid = _miner()
    reply = ask(m, "profileset", f"{sid},0,495MHz")
    assert status(reply) == ("S", 321, "Profile Set")
    assert reply["PROFILE"][0]["Profile"] == "495MHz" and m.state.profile == "495MHz"
    assert ask(m, "profileset", f"{sid},3,-1")["PROFILE"][0]["Profile"] == "520MHz"


def test_profileset_refuses_an_unknown_profile_and_keeps_the_current_one() -> None:
    m, sid = _miner()
    for bad in ("-1x", "turbo", "545MHz ", "xW", ""):
        reply = ask(m, "profileset", f"{sid},{bad}")
        assert status(reply)[:2] == ("E", 327), bad
        assert "PROFILE" not in reply
    assert m.state.profile == "default"


def test_atm_names_its_bounds_by_profile_name() -> None:
    m, sid = _miner()
    atm = ask(m, "atm")["ATM"][0]
    assert (atm["MaxProfile"], atm["MaxProfileStep"], atm["MinProfile"]) == ("default", "0", "")
    reply = ask(m, "atmset", f"{sid},max_profile=+1,min_profile=-2")
    assert status(reply) == ("S", 340, "Advanced Thermal Management configuration updated")
    atm = ask(m, "atm")["ATM"][0]
    assert (atm["MaxProfile"], atm["MaxProfileStep"]) == ("570MHz", "1")
    assert (atm["MinProfile"], atm["MinProfileStep"]) == ("495MHz", "-2")
    assert status(ask(m, "atmset", f"{sid},min_profile="))[0] == "S"  # empty: unbounded
    assert ask(m, "atm")["ATM"][0]["MinProfile"] == ""
    assert status(ask(m, "atmset", f"{sid},max_profile=+9"))[0] == "E"
    assert ask(m, "atm")["ATM"][0]["MaxProfile"] == "570MHz"
