"""Stock Antminer builds that accept a sleep and keep hashing until a reboot.

asic-rs issue 245 (an S19j Pro, firmware of Dec 26 2022): ``{"miner-mode": 1}`` was answered
M000, ``get_miner_conf.cgi`` and ``stats.cgi`` both read sleep afterwards, and the hashrate
did not drop within 60 s; a reboot was still needed. The simulator's variant
``sleep_applies_on_reboot`` does that (a miner asleep in its saved configuration boots
asleep). The product must never call such a miner asleep: the read-back leaves the sleep
unconfirmed and says why in words; with ``reboot_if_sleep_ignored`` (opt-in, per adapter)
the re-sent sleep reboots it once (``reboot.cgi``, as pyasic's
``AntminerModernWebAPI.reboot`` sends it), and the read-back then confirms the sleep.

Each test runs its own simulated miner (reboot in 0.6 s) and short read-back deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters import registry
from adapters.asic import PyasicMiner
from adapters.base import Health, ModeRequest
from adapters.fleet import Fleet, Outcome, OutcomeKind
from adapters.sim.antminer import AntminerSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from adapters.sim.server import FaultKind
from models.errors import ConfigError
from models.site import parse_site
from tests.conftest import site_dict
from tests.support.simfleet import FAST, loopback_host, one_device_fleet, run, skip_without_port_80

PORTS = (4028, 80)
SETTING = "reboot_if_sleep_ignored"

pytestmark = skip_without_port_80()


def _stuck_miner() -> tuple[AntminerSim, SimFleetThread]:
    m = AntminerSim(loopback_host(PORTS), sleep_applies_on_reboot=True, **FAST)
    return m, SimFleetThread(SimFleet([m], control_port=None))


async def _until(cond: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await cond():
            await asyncio.sleep(0.05)


def _settled(fleet: Fleet, device_id: str) -> Callable[[], Awaitable[bool]]:
    async def settled() -> bool:
        fleet.status[device_id].next_probe = 0.0  # a rebooting miner is probed at once
        await fleet.read_all()
        return device_id not in fleet.pending

    return settled


def test_the_variant_reads_asleep_in_its_configuration_and_stats_and_hashes_on() -> None:
    """The simulator itself: the write is answered M000, get_miner_conf.cgi and stats.cgi
    read sleep, the boards hash on; reboot.cgi (a GET, as pyasic sends it) boots it asleep."""
    m, th = _stuck_miner()
    dev = PyasicMiner("am/v", m.host, timeout_s=10.0)

    async def go() -> None:
        await dev.connect()
        applied = await dev.apply(ModeRequest("sleep"))
        assert applied.note == ""  # answered success
        web = dev._web
        assert web is not None
        conf, stats = await web.get("get_miner_conf"), await web.get("stats")
        assert conf["bitmain-work-mode"] == "1" and stats["STATS"][0]["miner-mode"] == 1
        t = await dev.read()
        assert t.state == "transition" and (t.hashrate_ths or 0) > 80
        answer = await web.get("reboot")
        assert answer.get("success") is not False, answer

        async def asleep() -> bool:
            try:
                return (await dev.read()).state == "sleeping"
            except Exception:  # rebooting: no answer yet
                return False

        await _until(asleep)
        await dev.close()

    with th:
        run(go())
        assert th.call(lambda: (m.work_mode, m.state.phase)) == (1, "sleeping")
        assert th.call(lambda: m.reboots) == 1


def test_without_the_setting_the_sleep_stays_unconfirmed_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Today the verdict said only "it reads transition"; the miner is never called asleep,
    the sleep is re-sent as before (no reboot), and the one log line names the setting."""
    m, th = _stuck_miner()
    dev = PyasicMiner("am/n", m.host, timeout_s=10.0, confirm_within_s=0.8)
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        assert out[0].ok and out[0].kind is OutcomeKind.ACCEPTED
        await _until(_settled(fleet, dev.device_id))
        last = seen[-1]
        assert last.kind is OutcomeKind.UNCONFIRMED, last
        said = last.error or ""
        assert "configured asleep" in said and "still hashing" in said, said
        assert SETTING in said, said
        st = fleet.status[dev.device_id]
        assert st.health is Health.UNCONFIRMED and st.last_error == said
        again = await fleet.resend_unconfirmed()  # as today: written again
        assert again and again[0].ok and "reboot" not in again[0].applied.note  # type: ignore[union-attr]
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED
        assert not any(o.kind is OutcomeKind.CONFIRMED for o in seen)
        await fleet.close()

    with th, caplog.at_level(logging.INFO, logger="gridsched.fleet"):
        run(go())
        assert th.call(lambda: m.reboots) == 0
        assert th.call(lambda: list(m.conf_writes)) == [1, "1"]  # the type tried next, as today
        assert th.call(lambda: m.state.phase) == "mining"
    lines = [r for r in caplog.records if r.name == "gridsched.fleet" and "am/n" in r.message]
    went = [r for r in lines if "unconfirmed:" in r.message]
    assert len(went) == 1, [r.message for r in lines]  # one line per change of state
    assert "may need a reboot" in went[0].message and SETTING in went[0].message


def test_with_the_setting_the_resent_sleep_reboots_it_once_and_is_confirmed() -> None:
    m, th = _stuck_miner()
    dev = PyasicMiner("am/r", m.host, timeout_s=10.0, confirm_within_s=0.8)
    dev.reboot_if_sleep_ignored = True
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED
        assert "configured asleep" in (seen[-1].error or "")
        assert th.call(lambda: m.reboots) == 0  # the verdict alone reboots nothing
        dev.confirm_within_s = 0.3  # shorter than the reboot: this read-back misses it
        again = await fleet.resend_unconfirmed()
        applied = again[0].applied
        assert again[0].ok and applied is not None and "reboot" in applied.note, again
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED  # not seen within 0.3 s
        assert th.call(lambda: m.reboots) == 1

        async def back() -> bool:
            return bool(th.call(lambda: m.listening))

        await _until(back)  # booted again (asleep): the re-sent sleep reaches it
        dev.confirm_within_s = 20.0  # from here on, only a confirmation ends the wait
        again = await fleet.resend_unconfirmed()  # at most one reboot per sleep: a write
        applied = again[0].applied
        assert again[0].ok and applied is not None and "reboot" not in applied.note
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
        assert fleet.status[dev.device_id].health is Health.OK
        await fleet.close()

    with th:
        run(go())
        assert th.call(lambda: m.reboots) == 1
        assert th.call(lambda: m.state.phase) == "sleeping"


def test_a_reboot_confirmed_within_the_deadline_ends_the_wait() -> None:
    m, th = _stuck_miner()
    dev = PyasicMiner("am/c", m.host, timeout_s=10.0, confirm_within_s=0.8)
    dev.reboot_if_sleep_ignored = True
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await _until(_settled(fleet, dev.device_id))
        dev.confirm_within_s = 20.0
        await fleet.resend_unconfirmed()
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.CONFIRMED, seen[-1]
        await fleet.close()

    with th:
        run(go())
        assert th.call(lambda: (m.reboots, list(m.conf_writes))) == (1, [1])


def test_a_wake_cancels_the_reboot_and_a_miner_not_told_to_sleep_is_never_rebooted() -> None:
    m, th = _stuck_miner()
    dev = PyasicMiner("am/w", m.host, timeout_s=10.0, confirm_within_s=0.8)
    dev.reboot_if_sleep_ignored = True
    seen: list[Outcome] = []

    async def go() -> None:
        fleet = one_device_fleet(dev, seen)
        await fleet.connect_all()
        await fleet.apply({dev.device_id: ModeRequest("sleep")})
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED  # a reboot is due on the re-send
        dev.confirm_within_s = 20.0
        out = await fleet.apply({dev.device_id: ModeRequest("run")})  # a wake instead
        assert out[0].ok
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.CONFIRMED
        # Someone else sets sleep (the web UI); our wake is ignored: it goes unconfirmed,
        # configured asleep and hashing, yet we asked it to run: no reboot.
        th.call(lambda: m._set_work_mode(1))
        th.call(m.inject, FaultKind.IGNORE)
        dev.confirm_within_s = 0.8
        dev._sleeping = None  # believed unknown, so that the wake is written
        out = await fleet.apply({dev.device_id: ModeRequest("run")})
        assert out[0].ok
        await _until(_settled(fleet, dev.device_id))
        assert seen[-1].kind is OutcomeKind.UNCONFIRMED
        th.call(m.clear_faults)
        again = await fleet.resend_unconfirmed()
        assert again and "reboot" not in (again[0].applied.note if again[0].applied else "")
        await fleet.close()

    with th:
        run(go())
        assert th.call(lambda: m.reboots) == 0


def _adapter(extra: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "pyasic", "hosts": ["10.0.0.1-10.0.0.10"], **extra}


def test_the_setting_is_read_from_the_site_file_and_off_by_default() -> None:
    for extra, want in (({}, False), ({SETTING: True}, True)):
        d = site_dict()
        d["devices"][0]["adapter"] = _adapter(extra)
        built = registry.build(parse_site(d, "x.toml"))
        assert {getattr(a, SETTING, "?") for a in built.adapters} == {want}


@pytest.mark.parametrize(
    ("adapter", "words"),
    [
        (_adapter({SETTING: "yes"}), "valid boolean"),
        (
            {"kind": "sim", "sim_firmware": "luxos", SETTING: True},
            "stock Antminer",
        ),
    ],
)
def test_a_bad_setting_is_named(adapter: dict[str, Any], words: str) -> None:
    d = site_dict()
    d["devices"][0]["adapter"] = adapter
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    found = dict(exc.value.problems)
    key = f"devices[0].adapter.{SETTING}"
    assert key in found, found
    assert words in found[key], found[key]


def test_the_setting_on_miners_of_other_firmware_is_said_once_not_silently_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Walk 26, D7: ``reboot_if_sleep_ignored = true`` on a pyasic class of LuxOS miners
    passed validation (the firmware is known only once the miners answer) and did nothing
    without a word. It is said once per firmware family at connect."""
    from adapters import antminer_reboot
    from tests.support.daemon import free_loopback_base

    antminer_reboot._SAID.discard("luxos")
    caplog.set_level(logging.WARNING, "gridsched.fleet")
    fleet = SimFleet.build(2, 0, base=free_loopback_base(2), control_port=None)
    with SimFleetThread(fleet):
        devs = [PyasicMiner(f"lux/{i}", m.host, timeout_s=10.0) for i, m in enumerate(fleet.miners)]

        async def go() -> None:
            for dev in devs:
                dev.reboot_if_sleep_ignored = True
                await dev.connect()
                await dev.close()

        run(go())
    lines = [r.getMessage() for r in caplog.records if SETTING in r.getMessage()]
    assert len(lines) == 1 and "luxos" in lines[0] and "ignored" in lines[0], lines
