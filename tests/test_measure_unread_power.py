"""Devices that answer without a power figure (stock Antminer firmware reads no power) and
commands not yet read back, as the daemon counts them (scheduler/service/daemon/measure.py).

Field audit, session 20: four stock Antminers accepted a curtail's sleep and kept hashing.
Until their read-back deadline (120 s) status counted each at its commanded sleep power
(15 W) although every reading showed it hashing: 97.7 kW reported under a 100 kW cap while
the miners drew 110.4 kW. And dispatch counted the same sleeps as room freed, so a re-plan
woke other miners into room that was not there (64.1 kW under a 60 kW cap for ~50 s).

Devices in memory (the measure parts tests' site: two miners "m", full 3 kW, eco 2 kW,
asleep 0.25 kW; one GPU "g"; PUE 1.25, base load 2 kW)."""

from __future__ import annotations

from pathlib import Path

from adapters.base import ModeRequest, Telemetry
from scheduler.service.power import DevicePower
from tests.test_measure_parts import Site


def _stock(s: Site, device_id: str, state: str = "running") -> None:
    """A reading of ``device_id`` as stock firmware gives it: a state, no power."""
    s.clock.advance(1.0)
    s.hear(Telemetry(device_id, s.now, state, power_w=None))


def test_a_device_without_power_counts_at_the_mode_it_reads_not_the_one_it_was_told(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    s.poll(m_0=None, m_1=3000.0, g_0=750.0)  # m/0: stock firmware, hashing
    s.command("m/0", "sleep", ModeRequest("sleep"))  # accepted, not followed
    _stock(s, "m/0")  # still hashing after the command
    got = s.power.device("m/0", False)
    assert got.kw == 3.0 and not got.read  # its running mode's nameplate, estimated
    # a reading that shows it asleep counts it asleep, whatever it drew before
    _stock(s, "m/0", "sleeping")
    assert s.power.device("m/0", False).kw == 0.25


def test_a_reading_without_power_that_shows_sleep_is_not_counted_at_its_old_power(
    tmp_path: Path,
) -> None:
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)
    _stock(s, "m/0", "sleeping")  # the power figure is gone; the state says asleep
    assert s.power.device("m/0", False) == DevicePower(0.25, False, 3.0)


def test_wakes_do_not_count_a_sleep_not_yet_read_back_as_room_freed(tmp_path: Path) -> None:
    """What dispatch's headroom counts (``cautious``): a command that lowers a device's
    power counts only once a reading shows it; one that raises it counts at once."""
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=2000.0, g_0=750.0)
    s.command("m/0", "sleep", ModeRequest("sleep"))
    s.command("m/1", "full", ModeRequest("run", 3000.0))
    shed = s.power.measured(s.now, expect=True)
    wake = s.power.measured(s.now, cautious=True)
    assert shed["asic_kw"] == 0.25 + 3.0  # the fast path: no kW shed twice
    assert wake["asic_kw"] == 3.0 + 3.0  # dispatch: the sleep not seen yet still draws
    s.hear(Telemetry("m/0", s.now + 1, "sleeping", power_w=250.0))
    assert s.power.measured(s.now, cautious=True)["asic_kw"] == 0.25 + 3.0


def test_a_device_without_power_running_in_a_known_mode_counts_at_that_mode(
    tmp_path: Path,
) -> None:
    """Its reading cannot tell eco from full: the mode it was told to run in stands (a
    class's first mode, as a reading alone would give, could count a full miner at eco)."""
    s = Site(tmp_path)
    s.modes.modes["m/0"] = "eco"
    _stock(s, "m/0")
    assert s.power.device("m/0", False).kw == 2.0


def test_the_fast_path_stops_counting_a_sleep_a_late_reading_does_not_show(
    tmp_path: Path,
) -> None:
    """The fast path counts a command at its new mode until a reading shows it, so that no
    kW is shed twice; but a reading taken past the firmware's typical time to show the
    change (``readback_after_s``) that still does not show it is evidence: the miner counts
    as read. Field audit: a 99 kW cap "fitted" while four ignoring miners drew 12 kW."""
    s = Site(tmp_path)
    s.poll(m_0=3000.0, m_1=3000.0, g_0=750.0)
    s.devs["m/0"].readback_after_s = lambda: 5.0  # type: ignore[method-assign]
    s.command("m/0", "sleep", ModeRequest("sleep"))
    sent = s.fleet.pending["m/0"].sent_at
    s.hear(Telemetry("m/0", sent + 2.0, "running", power_w=3000.0))  # too early to tell
    assert s.power.device("m/0", True).kw == 0.25
    s.hear(Telemetry("m/0", sent + 6.0, "running", power_w=3000.0))  # past its time
    assert s.power.device("m/0", True).kw == 3.0
    assert "m/0" in s.fleet.pending  # still waiting for its verdict


def test_a_stock_miner_read_running_takes_its_own_setting_mode_not_the_classs_first(
    tmp_path: Path,
) -> None:
    """Field re-check (session 21): a stock Antminer that ignored its sleep was, at its
    deadline, taken at the mode its reading shows; the reading (no power, no target)
    matched every mode and the class's first was taken: eco, 2.1 kW counted for a miner
    drawing 3.05 kW. Without a power target it runs at its own setting: the mode nearest
    its model's nameplate (docs/daemon.md, "own-setting mode"): for an S9 (1.4 kW in the
    catalog) eco, which is not the class's first mode (full)."""
    from adapters.base import DeviceInfo

    s = Site(tmp_path)
    s.devs["m/0"].info = DeviceInfo(
        "m/0", "asic", "memory", model="Antminer S9", family="antminer-stock"
    )
    t = Telemetry("m/0", s.now, "running", power_w=None)
    assert s.modes.from_reading("m/0", t) == "eco"
    s.devs["m/1"].info = DeviceInfo("m/1", "asic", "memory", family="antminer-stock")
    assert s.modes.from_reading("m/1", t) == "full"  # no model known: the top mode


def test_a_reading_taken_before_a_sleep_counts_at_the_mode_it_was_in(tmp_path: Path) -> None:
    """Field re-check (session 22): 3 s after a curtail /v1/status said 145.5 kW while the
    fleet drew 77 kW. A stock Antminer told to sleep whose newest reading, taken before the
    command, showed it running counted at its class's top mode: that reading shows the mode
    it was in. One taken after the command and still running cannot tell which."""
    s = Site(tmp_path)
    s.modes.modes["m/0"] = "eco"
    _stock(s, "m/0")  # running at eco, no power figure: read before the command
    s.clock.advance(1.0)
    s.command("m/0", "sleep", ModeRequest("sleep"))
    assert s.power.device("m/0", False).kw == 2.0  # as read: eco, not the top mode (3 kW)
    _stock(s, "m/0")  # read after the command, still running: which mode, it cannot say
    assert s.power.device("m/0", False).kw == 3.0


def test_a_stock_miner_configured_asleep_and_still_hashing_counts_as_hashing(
    tmp_path: Path,
) -> None:
    """Walk 26, D1: a stock build that saves a sleep and hashes on until a reboot reads
    ``transition`` (configured asleep, hashrate > 0), never ``running``. Such a reading was
    counted at the commanded sleep (15 W) until the read-back deadline, and again after
    each re-send: 0.63 kW of import reported under a 1 kW cap while the miners drew 11 kW.
    A reading that shows a hashrate is a miner drawing power, whatever its configuration."""
    s = Site(tmp_path)
    s.poll(m_0=None, m_1=3000.0, g_0=750.0)
    s.devs["m/0"].readback_after_s = lambda: 5.0  # type: ignore[method-assign]
    s.command("m/0", "sleep", ModeRequest("sleep"))
    sent = s.fleet.pending["m/0"].sent_at
    s.hear(Telemetry("m/0", sent + 6.0, "transition", power_w=None, hashrate_ths=100.0))
    assert s.power.device("m/0", False).kw == 3.0  # as read: hashing, its mode's nameplate
    assert s.power.device("m/0", True).kw == 3.0  # the fast path too, once past its time
    assert s.modes.shown()["m/0"] != "sleep"
    # ramped down: no hashrate, configured asleep is asleep once it reads so
    s.hear(Telemetry("m/0", sent + 8.0, "sleeping", power_w=None, hashrate_ths=0.0))
    assert s.power.device("m/0", False).kw == 0.25


def test_a_miner_without_a_power_target_hashing_after_a_sleep_counts_at_its_own_setting(
    tmp_path: Path,
) -> None:
    """Walk 26b, N3: a stock Antminer (no power target: it runs at its own setting whenever
    it hashes) hashing on, or ramping down, after a sleep was counted at its class's top
    mode (an S21 at 4,375 W) while status said stock. Its mode before the sleep is the one
    it runs at; a miner with a target still counts at the top (it cannot say which)."""
    from adapters.base import DeviceInfo

    s = Site(tmp_path)
    s.modes.modes["m/0"] = "eco"
    s.devs["m/0"].info = DeviceInfo("m/0", "asic", "x", family="antminer-stock")
    s.clock.advance(1.0)
    s.command("m/0", "sleep", ModeRequest("sleep"))
    s.clock.advance(1.0)
    s.hear(Telemetry("m/0", s.now, "transition", power_w=None, hashrate_ths=60.0))
    assert s.power.device("m/0", False).kw == 2.0  # its own setting, not the top (3 kW)
