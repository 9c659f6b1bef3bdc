"""Site power as the daemon counts it (scheduler/service/daemon/measure.py), by hand: each
device at its reading from the latest poll, else at its last known power or its mode's
nameplate (never 0 kW), at its commanded mode when the fast path and dispatch ask what to
expect, the meter's figure where there is one, classes without adapters as planned, and
the compliance verdict the audit trail keeps.

In-process, no sockets: a real ``Fleet`` of devices in memory, the daemon's own
``DeviceModes`` and ``CurrentPlan``, readings handed to ``Power.note`` as a poll hands
them. Mutation testing (docs/testing.md) showed what the daemon-level tests left unchecked.

Site: PUE 1.25, base load 2 kW. Two miners "m" (full 3 kW, eco 2 kW, asleep 0.25 kW), one
GPU "g" (full 0.75 kW, low 0.5 kW, asleep 0.125 kW); with ``UNMANAGED``, two classes
without adapters: "u", 3 miners (1 kW or 1.5 kW each), and "v", 2 miners of 0.5 kW. At the
meter: IT kW x 1.25 + 2.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path

import pytest

from adapters.base import ModeRequest, Telemetry
from adapters.fleet import Fleet, OutcomeKind
from adapters.meter import MeterError, MeterReading
from models.site import parse_site
from scheduler.service.daemon.devices import DeviceModes
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.power import ComplianceState, DevicePower
from tests.conftest import T0, solve
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_fleet
from tests.support.sitefile import DAEMON, device_classes, site_text

SITE = site_text(
    "measure",
    pue=1.25,
    site={"base_load_kw": 2},
    hashprice=1.0,
    inference={"committed_tokens_s": 0, "committed_usd_per_mtok": 0.6},
    daemon={**DAEMON, "failsafe_cap_kw": 4, "failsafe_posture": "hold"},
    devices=device_classes(
        {
            "name": "m",
            "kind": "asic",
            "count": 2,
            "idle_power_kw": 0.25,
            "modes": [
                {"name": "full", "power_kw": 3.0, "hashrate_ths": 100},
                {"name": "eco", "power_kw": 2.0, "hashrate_ths": 75},
            ],
        },
        {
            "name": "g",
            "kind": "gpu",
            "count": 1,
            "idle_power_kw": 0.125,
            "modes": [
                {"name": "full", "power_kw": 0.75, "throughput_tokens_s": 1000},
                {"name": "low", "power_kw": 0.5, "throughput_tokens_s": 600},
            ],
        },
    ),
)

UNMANAGED = device_classes(
    {
        "name": "u",
        "kind": "asic",
        "count": 3,
        "modes": [
            {"name": "a", "power_kw": 1.0, "hashrate_ths": 40},
            {"name": "b", "power_kw": 1.5, "hashrate_ths": 50},
        ],
    },
    {
        "name": "v",
        "kind": "asic",
        "count": 2,
        "modes": [{"name": "a", "power_kw": 0.5, "hashrate_ths": 20}],
    },
)


class Site:
    """The parts ``Power`` reads, over devices in memory ("m/0", "m/1", "g/0")."""

    def __init__(self, tmp_path: Path, unmanaged: bool = False, start_s: float = T0) -> None:
        text = SITE + (UNMANAGED if unmanaged else "")
        self.config = parse_site(tomllib.loads(text), "site.toml", str(tmp_path))
        self.clock = FakeClock(start_s)
        managed = tuple(dc for dc in self.config.devices if dc.name not in ("u", "v"))
        built, self.devs = memory_fleet(managed, self.clock)
        self.fleet = Fleet(built.adapters, groups=built.groups, clock=self.clock.time)
        self.modes = DeviceModes(self.config, self.fleet, self.clock)
        self.plans = CurrentPlan()
        self.power = Power(self.fleet, self.modes, self.plans, None)
        self.fleet.on_reading = self.power.heard  # as the daemon wires them

    @property
    def now(self) -> float:
        return self.clock.time()

    def poll(self, **watts: float | None) -> None:
        """A poll in which the devices named answered (``m_0=3000.0``: "m/0" read at 3 kW;
        None: answered without a power figure); the others did not. As the fleet does, each
        reading is also the device's latest, and heard as it arrives."""
        self.clock.advance(1.0)
        self.power.sweep_started()
        readings = {}
        for key, w in watts.items():
            device_id = key.replace("_", "/")
            asleep = w is not None and w < 1000.0 and device_id[0] == "m"
            t = Telemetry(device_id, self.now, "sleeping" if asleep else "running", power_w=w)
            readings[device_id] = t
            self.hear(t)
        self.power.note(readings)

    def hear(self, t: Telemetry) -> None:
        """A reading arrives (a sweep's or a read-back's), as the fleet hands it over."""
        self.fleet.status[t.device_id].telemetry = t
        assert self.fleet.on_reading is not None
        self.fleet.on_reading(t)

    def command(self, device_id: str, mode: str, request: ModeRequest) -> None:
        """A command the device accepts and does not follow: it waits for its read-back."""
        self.devs[device_id].follows = False
        out = asyncio.run(self.fleet.apply({device_id: request}))
        assert out[0].kind is OutcomeKind.ACCEPTED and device_id in self.fleet.pending
        self.modes.commanded(out, {device_id: mode})

    def measured(self, expect: bool = False) -> dict[str, float]:
        return self.power.measured(self.now, expect)


def _at_meter(it_kw: float) -> float:
    return it_kw * 1.25 + 2.0


# -- each device's power ----------------------------------------------------------------------


def test_each_device_counts_at_its_reading_from_the_latest_poll(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=2000.0, g_0=750.0)
    assert s.power.device("m/0", False) == DevicePower(3.0, True, 3.0)
    assert s.power.device("m/1", True) == DevicePower(2.0, True, 2.0)
    assert s.power.device("g/0", False) == DevicePower(0.75, True, 0.75)
    assert s.measured() == {
        "asic_kw": 5.0,
        "gpu_kw": 0.75,
        "unmanaged_kw": 0.0,
        "import_kw": _at_meter(5.75),
        "devices_import_kw": _at_meter(5.75),
        "estimated_kw": 0.0,
        "devices_unread": 0.0,
    }
    assert s.measured(expect=True) == s.measured()
    s.poll(m_0=0.0, m_1=2000.0, g_0=750.0)  # a reading of 0 W is a reading, not a gap
    assert s.power.device("m/0", False) == DevicePower(0.0, True, 0.0)
    assert s.power.last_kw["m/0"] == 0.0


def test_a_device_not_read_counts_at_its_last_power_else_its_modes_never_zero(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    s.poll(m_0=2800.0, g_0=750.0)
    s.modes.modes["m/1"] = "eco"  # commanded once, never read
    s.poll(m_0=None)  # m/0 answers without a power figure; g/0 does not answer
    assert s.power.answered == {"m/0"} and s.power.fresh == set()
    # its last reading; at most its class's top mode (3 kW)
    assert s.power.device("m/0", False) == DevicePower(2.8, False, 3.0)
    assert s.power.device("m/0", True) == DevicePower(2.8, False, 3.0)
    assert s.power.device("m/1", False) == DevicePower(2.0, False, 3.0)  # eco's nameplate
    assert s.power.device("g/0", False) == DevicePower(0.75, False, 0.75)
    m = s.measured()
    assert (m["asic_kw"], m["gpu_kw"], m["devices_unread"]) == (4.8, 0.75, 3.0)
    assert m["import_kw"] == pytest.approx(_at_meter(5.55))
    assert m["estimated_kw"] == pytest.approx(5.55 * 1.25)
    s.poll(m_1=1900.0)  # m/0 silent now: still its last power, not 0
    assert s.power.device("m/0", False) == DevicePower(2.8, False, 3.0)
    assert s.power.device("m/1", False) == DevicePower(1.9, True, 1.9)


def test_a_device_never_read_in_no_known_mode_counts_at_its_classs_top_mode(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    assert s.power.answered == set() and s.power.fresh == set()  # no poll yet
    assert s.power.device("m/0", False) == DevicePower(3.0, False, 3.0)
    assert s.power.device("g/0", True) == DevicePower(0.75, False, 0.75)
    assert s.measured()["import_kw"] == _at_meter(6.75)


def test_expecting_a_command_counts_its_mode_until_a_reading_shows_it(tmp_path: Path) -> None:
    """What the fast path and dispatch decide on: a second curtail right after a first must
    not shed the same kW twice. What status, metrics and compliance report stays read."""
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)
    before = s.measured()
    s.command("m/0", "sleep", ModeRequest("sleep"))
    s.command("g/0", "low", ModeRequest("run", 500.0))
    assert s.power.device("m/0", True) == DevicePower(0.25, True, 0.25)  # asleep, as told
    assert s.power.device("g/0", True) == DevicePower(0.5, True, 0.5)
    assert s.power.device("m/0", False) == DevicePower(3.0, True, 3.0)  # as read
    assert s.measured() == before
    expected = s.measured(expect=True)
    assert (expected["asic_kw"], expected["gpu_kw"]) == (3.25, 0.5)
    assert expected["import_kw"] == _at_meter(3.75)
    assert s.measured() == before  # each figure kept apart, whichever was asked first
    # a device not read, told: counted at its mode, and still unread
    s.poll(m_1=3000.0, g_0=750.0)
    assert s.power.device("m/0", True) == DevicePower(0.25, False, 0.25)
    assert s.measured(expect=True)["devices_unread"] == 1.0


def test_a_device_read_back_since_the_poll_counts_at_that_reading(tmp_path: Path) -> None:
    """Issue 21: a reading taken after the poll (a command's read-back) counts at once, in
    what is reported (status, metrics, compliance) as in what is expected: at 30,000
    miners the next poll is minutes away."""
    s = Site(tmp_path)
    s.poll(m_0=3000.0, g_0=750.0)
    s.clock.advance(2.0)
    s.hear(Telemetry("m/0", s.now, "sleeping", power_w=250.0))
    s.hear(Telemetry("m/1", s.now, "running", power_w=2000.0))
    assert s.power.device("m/0", True) == DevicePower(0.25, True, 0.25)
    assert s.power.device("m/0", False) == DevicePower(0.25, True, 0.25)
    # not in the poll's readings, read back since: that reading, read
    assert s.power.device("m/1", True) == DevicePower(2.0, True, 2.0)
    assert s.power.device("m/1", False) == DevicePower(2.0, True, 2.0)
    assert s.measured()["devices_unread"] == 0.0
    # an older reading arriving late (two reads crossing) does not undo the newer one
    s.hear(Telemetry("m/1", s.now - 1, "running", power_w=3000.0))
    assert s.power.device("m/1", False) == DevicePower(2.0, True, 2.0)
    # a newer reading without a power figure: it answers, its power is not known, so it is
    # estimated at its last known power (never 0 kW)
    s.hear(Telemetry("m/0", s.now + 1, "sleeping", power_w=None))
    assert s.power.device("m/0", False) == DevicePower(0.25, False, 3.0)
    # the next poll: whatever neither its sweep nor a read-back since read is not read
    s.poll(g_0=750.0)
    assert s.power.device("m/1", False) == DevicePower(2.0, False, 3.0)
    assert s.power.answered == {"g/0"}


def test_a_new_poll_or_command_is_summed_again(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)
    assert s.measured()["asic_kw"] == 6.0
    s.poll(m_0=2000.0, m_1=3000.0, g_0=750.0)
    assert s.measured()["asic_kw"] == 5.0
    assert s.measured(expect=True)["asic_kw"] == 5.0
    s.command("m/1", "sleep", ModeRequest("sleep"))  # the devices' listener drops the sums
    assert s.measured(expect=True)["asic_kw"] == 2.25


# -- the meter --------------------------------------------------------------------------------


def test_with_a_meter_import_is_its_reading_moved_by_what_commands_change(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)  # 10.4375 kW from the devices
    s.power.meter_reading = MeterReading(12000.0, s.now)
    assert s.power.meter_kw() == 12.0
    m = s.measured()
    assert m["import_kw"] == 12.0 and m["devices_import_kw"] == _at_meter(6.75)
    s.command("m/0", "sleep", ModeRequest("sleep"))  # 3 kW -> 0.25 kW: 3.4375 at the meter
    m = s.measured(expect=True)
    assert m["import_kw"] == pytest.approx(12.0 - 3.4375)
    assert m["devices_import_kw"] == _at_meter(4.0)
    # a meter that cannot be read now: the devices' sum, its last reading kept aside
    s.power.meter_error = "Modbus timeout"
    s.power.invalidate()
    assert s.power.meter_kw() is None
    assert s.measured()["import_kw"] == _at_meter(6.75)


class _Meter:
    """The site meter's ``read`` as the daemon calls it: each answer in turn."""

    def __init__(self, *answers: MeterReading | MeterError) -> None:
        self.answers = list(answers)

    async def read(self) -> MeterReading:
        a = self.answers.pop(0)
        if isinstance(a, MeterError):
            raise a
        return a


def test_a_meter_failure_is_said_once_per_change_and_its_last_reading_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Site(tmp_path)
    good, later = MeterReading(9000.0, T0), MeterReading(9500.0, T0 + 5)
    timeout, refused = MeterError("Modbus timeout"), MeterError("connection refused")
    s.power.meter = _Meter(good, timeout, timeout, refused, later)  # type: ignore[assignment]

    async def go() -> list[tuple[float | None, str | None]]:
        seen = []
        for _ in range(5):
            await s.power.read_meter()
            seen.append((s.power.meter_kw(), s.power.meter_error))
        return seen

    with caplog.at_level(logging.WARNING, logger="gridsched.daemon"):
        seen = asyncio.run(go())
    assert seen == [
        (9.0, None),
        (None, "Modbus timeout"),
        (None, "Modbus timeout"),
        (None, "connection refused"),
        (9.5, None),
    ]
    words = [r.getMessage() for r in caplog.records if r.name == "gridsched.daemon"]
    assert words == [
        "site meter: Modbus timeout; import is the devices' sum meanwhile",
        "site meter: connection refused; import is the devices' sum meanwhile",
        "site meter read again (after: connection refused)",
    ]
    assert s.power.meter_reading == later
    s.power.meter = None
    asyncio.run(s.power.read_meter())  # no meter: nothing read, nothing changed
    assert s.power.meter_reading == later and s.power.meter_error is None


# -- compliance -------------------------------------------------------------------------------


def test_what_the_audit_keeps_of_compliance_with_devices_alone(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=2000.0, g_0=750.0)  # 9.1875 kW
    assert s.power.compliance_record(10.0, s.now) == {
        "compliance": "met",
        "compliance_reason": "every device read: import 9.188 kW, at or under the cap of 10.000 kW",
        "import_source": "devices",
    }
    # judged on what was read, not on what commands are expected to do
    s.command("m/0", "sleep", ModeRequest("sleep"))
    assert s.measured(expect=True)["import_kw"] < 7.0
    c = s.power.compliance(7.0, s.now)
    assert c.state is ComplianceState.NOT_MET and c.import_kw == 9.1875
    s.poll(m_1=2000.0, g_0=750.0)
    record = s.power.compliance_record(7.0, s.now)
    assert record["compliance"] == "unverified"
    assert record["compliance_reason"].startswith("1 device without a power reading")
    assert set(record) == {"compliance", "compliance_reason", "import_source"}


def test_what_the_audit_keeps_of_compliance_with_a_meter(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=2000.0, g_0=750.0)  # 9.1875 kW from the devices
    s.power.meter_reading = MeterReading(10123.4, s.now)
    assert s.power.compliance_record(10.0, s.now) == {
        "compliance": "not_met",
        "compliance_reason": "the site meter reads 10.123 kW, above the cap of 10.000 kW",
        "import_source": "meter",
        "meter_kw": 10.123,
        "meter_gap_kw": 0.936,
    }
    s.power.meter_reading = MeterReading(9187.5, s.now)  # the devices' sum exactly
    record = s.power.compliance_record(10.0, s.now)
    assert (record["meter_kw"], record["meter_gap_kw"]) == (9.188, 0.0)
    s.power.meter_error = "Modbus timeout"
    s.power.invalidate()
    assert s.power.compliance_record(9.0, s.now) == {
        "compliance": "not_met",
        "compliance_reason": "every device read: import 9.188 kW, above the cap of 9.000 kW; "
        "the site meter cannot be read (Modbus timeout)",
        "import_source": "devices",
        "meter_error": "Modbus timeout",
    }


# -- classes without adapters -----------------------------------------------------------------


def test_classes_without_adapters_count_as_planned_and_at_most_at_their_top_mode(
    tmp_path: Path,
) -> None:
    """Nothing reads them: the plan's figure for the step in force, never nothing; and
    compliance, unless a meter settles it, holds only if they fit at their most."""
    s = Site(tmp_path, unmanaged=True, start_s=T0 + 600)
    # mining pays in the first hour; at the second's price everything sleeps
    _, plan = solve(s.config, [30.0, 1e7])
    planned = {cp.name: cp.power_kw.tolist() for cp in plan.classes if cp.name in ("u", "v")}
    assert planned == {"u": [4.5, 0.0], "v": [1.0, 0.0]}
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)
    assert s.measured()["unmanaged_kw"] == 0.0  # no plan yet: only what is read
    s.plans.adopt(plan, s.now)
    s.power.invalidate()
    # compliance asked first (nothing summed yet): judged at the time given
    record = s.power.compliance_record(_at_meter(6.75 + 5.5), s.now)
    assert record["compliance"] == "met"
    assert "the classes without adapters (5.500 kW as planned)" in record["compliance_reason"]
    p = s.power.site(False, s.now)
    assert (p.unmanaged_kw, p.unmanaged_worst_kw) == (5.5, 5.5)  # 3 x 1.5 kW, 2 x 0.5 kW
    assert s.measured()["import_kw"] == _at_meter(6.75 + 5.5)
    assert s.measured()["estimated_kw"] == 5.5 * 1.25
    # with a meter, what commands are expected to change is measured against the figure
    # summed for the same time: here nothing, so the meter's reading itself
    s.power.meter_reading = MeterReading(20000.0, s.now)
    s.power.invalidate()
    assert s.measured(expect=True)["import_kw"] == pytest.approx(20.0, abs=1e-9)
    s.power.meter_reading = None
    s.clock.advance(3600.0)  # the second step: the plan has them asleep
    s.power.invalidate()
    c = s.power.compliance(_at_meter(6.75) + 1.0, s.now)
    assert c.state is ComplianceState.UNVERIFIED
    assert "the classes without adapters (0.000 kW as planned)" in c.reason
    p = s.power.site(False, s.now)
    assert (p.unmanaged_kw, p.unmanaged_worst_kw, p.asic_kw) == (0.0, 5.5, 6.0)
    assert s.power.compliance(_at_meter(6.75 + 5.5), s.now).state is ComplianceState.MET
    s.clock.advance(3600.0)  # past the plan: nothing planned, still at most 5.5 kW
    s.power.invalidate()
    p = s.power.site(False, s.now)
    assert (p.unmanaged_kw, p.unmanaged_worst_kw) == (0.0, 5.5)


def test_the_devices_are_counted_by_their_own_kind_and_the_billing_peak_is_the_sites(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    assert s.power.billing.peak_kw(s.now) == s.config.tariff.billing_peak_so_far_kw
    s.poll(m_0=1000.0, m_1=1000.0, g_0=500.0)
    m = s.measured()
    assert (m["asic_kw"], m["gpu_kw"]) == (2.0, 0.5)
    assert s.power.readings["g/0"].power_w == 500.0
