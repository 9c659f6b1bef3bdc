"""The power-accounting and compliance rules by hand (scheduler/service/power.py): an
unread device is never 0 kW, PUE and base load apply once, and the cap is met, not met or
unverified for the reasons given. Pure functions; tests/test_power_truth.py drives the same
rules through simulated miners."""

from __future__ import annotations

import pytest

from scheduler.service.power import (
    CAP_TOLERANCE_KW,
    ComplianceState,
    DevicePower,
    SitePower,
    estimate_kw,
    judge,
    site_power,
)


def test_an_unread_device_counts_at_what_is_known_never_zero() -> None:
    assert estimate_kw(2.0, 3.0, 3.5) == (2.0, 3.5)  # its last reading; at most its top mode
    assert estimate_kw(4.0, 3.0, 3.5) == (4.0, 4.0)  # read above its top mode once
    assert estimate_kw(None, 3.0, 3.5) == (3.0, 3.5)  # never read: its mode's nameplate
    assert estimate_kw(None, 4.0, 3.5) == (4.0, 4.0)
    assert estimate_kw(None, None, 3.5) == (3.5, 3.5)  # nothing known: its top mode
    assert estimate_kw(0.0, 3.0, 3.5) == (0.0, 3.5)  # a reading of 0 W is a reading


def test_site_power_applies_pue_and_base_load_once() -> None:
    devices = {
        "m1": ("asic", DevicePower(3.0, True, 3.0)),
        "m2": ("asic", DevicePower(2.0, False, 3.5)),
        "g1": ("gpu", DevicePower(0.5, True, 0.5)),
    }
    p = site_power(devices, unmanaged_kw=1.0, pue=1.2, base_load_kw=10.0, unmanaged_worst_kw=4.0)
    assert p.asic_kw == 5.0 and p.gpu_kw == 0.5 and p.unmanaged_kw == 1.0
    assert p.devices_import_kw == pytest.approx(1.2 * 6.5 + 10.0)
    assert p.estimated_kw == pytest.approx(1.2 * (2.0 + 1.0))  # m2 and the unmanaged
    # the worst: m2 at 3.5 (+1.5) and the unmanaged at 4.0 (+3.0), at the meter
    assert p.worst_import_kw == pytest.approx(1.2 * 6.5 + 10.0 + 1.2 * 4.5)
    assert p.devices_unread == 1 and p.unmanaged_worst_kw == 4.0


def test_site_power_never_lowers_the_worst_for_a_device_above_its_worst() -> None:
    p = site_power({"m": ("asic", DevicePower(3.0, False, 2.0))}, 0.0, 1.0, 0.0)
    assert p.worst_import_kw == 3.0 and p.estimated_kw == 3.0
    p = site_power({}, 2.0, 1.0, 0.0, unmanaged_worst_kw=1.0)
    assert p.worst_import_kw == 2.0  # the unmanaged as planned, never less


def _power(read_kw: float, unread_kw: float = 0.0, worst_kw: float = 0.0) -> SitePower:
    devices = {"r": ("asic", DevicePower(read_kw, True, read_kw))}
    if unread_kw or worst_kw:
        devices["u"] = ("asic", DevicePower(unread_kw, False, max(worst_kw, unread_kw)))
    return site_power(devices, 0.0, 1.0, 0.0)


def test_every_device_read_meets_or_misses_the_cap_with_float_slack() -> None:
    met = judge(10.0, _power(10.0))
    assert met.state is ComplianceState.MET and met.source == "devices"
    assert met.reason == "every device read: import 10.000 kW, at or under the cap of 10.000 kW"
    assert judge(10.0, _power(10.0 + CAP_TOLERANCE_KW)).state is ComplianceState.MET
    missed = judge(10.0, _power(10.01))
    assert missed.state is ComplianceState.NOT_MET and "above the cap" in missed.reason
    assert missed.import_kw == pytest.approx(10.01) and missed.meter_kw is None


def test_a_meter_reading_decides_and_its_gap_is_reported() -> None:
    p = _power(8.0, unread_kw=2.0, worst_kw=5.0)
    c = judge(11.0, p, meter_kw=10.5)
    assert c.state is ComplianceState.MET and c.source == "meter"
    assert c.import_kw == 10.5 and c.meter_gap_kw == pytest.approx(0.5)
    assert c.reason == "the site meter reads 10.500 kW, at or under the cap of 11.000 kW"
    c = judge(10.0, p, meter_kw=10.5)
    assert c.state is ComplianceState.NOT_MET and "above the cap" in c.reason


def test_unread_devices_make_it_unverified_unless_read_alone_misses_or_worst_fits() -> None:
    p = _power(8.0, unread_kw=2.0, worst_kw=5.0)  # 10 kW estimated, 13 kW at worst
    c = judge(9.0, p)
    assert c.state is ComplianceState.UNVERIFIED
    assert c.reason.startswith("1 device without a power reading (not answering, or a firmware")
    assert "2.000 kW of it" in c.reason
    assert judge(7.9, p).state is ComplianceState.NOT_MET
    assert "what was read alone (8.000 kW) is above" in judge(7.9, p).reason
    fits = judge(13.0, p)
    assert fits.state is ComplianceState.MET and "even at their most (13.000 kW" in fits.reason
    assert judge(8.0, p).state is ComplianceState.UNVERIFIED
    c = judge(9.0, p, meter_error="Modbus timeout")
    assert c.reason.endswith("; the site meter cannot be read (Modbus timeout)")
    assert c.meter_error == "Modbus timeout"


def test_classes_without_adapters_are_never_read() -> None:
    p = site_power({}, 2.0, 1.0, 0.0, unmanaged_worst_kw=3.0)
    c = judge(2.5, p)
    assert c.state is ComplianceState.UNVERIFIED
    assert "0 devices and the classes without adapters (2.000 kW as planned)" in c.reason
    assert judge(3.0, p).state is ComplianceState.MET


def test_plural_and_rounding_in_what_status_shows() -> None:
    devices = {
        "a": ("asic", DevicePower(1.0, False, 1.0)),
        "b": ("asic", DevicePower(1.0, False, 3.0)),
    }
    c = judge(3.0, site_power(devices, 0.0, 1.0, 0.0))
    assert c.reason.startswith("2 devices without a power reading")
    d = c.as_dict()
    assert d["state"] == "unverified" and d["import_kw"] == 2.0 and d["devices_unread"] == 2
    c = judge(1.0 / 3.0, site_power({"a": ("asic", DevicePower(0.1, True, 0.1))}, 0.0, 1.0, 0.0))
    assert c.as_dict()["cap_kw"] == 0.333


def test_the_edges_of_the_rules() -> None:
    p = _power(8.0, unread_kw=2.0, worst_kw=5.0)
    at = judge(10.0, p, meter_kw=10.0 + CAP_TOLERANCE_KW)
    assert at.state is ComplianceState.MET and at.meter_kw == 10.0 + CAP_TOLERANCE_KW
    assert at.devices_import_kw == pytest.approx(10.0)
    # what was read alone exactly at the cap is not yet above it
    assert judge(8.0 - CAP_TOLERANCE_KW, p).state is ComplianceState.UNVERIFIED
    # the worst exactly at the cap fits
    assert judge(13.0 - CAP_TOLERANCE_KW, p).state is ComplianceState.MET
    two = {
        "a": ("asic", DevicePower(1.0, False, 2.0)),
        "b": ("asic", DevicePower(1.5, False, 3.0)),
    }
    s = site_power(two, 0.0, 1.0, 0.0)
    assert s.estimated_kw == 2.5 and s.worst_import_kw == 5.0  # both, summed
    small = site_power({}, 0.2, 1.0, 0.0, unmanaged_worst_kw=0.5)
    assert "classes without adapters (0.200 kW as planned)" in judge(0.3, small).reason
