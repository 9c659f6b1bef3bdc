"""What a simulated miner does when it restarts asleep, per its firmware family's sources.

- Stock Antminer: bmminer starts from the configuration ``set_miner_conf.cgi`` saved, so a
  miner put to sleep (``bitmain-work-mode`` 1) boots and stays asleep. Before, it booted
  and hashed at its full profile while its configuration still said sleep: a state no
  firmware is documented to be in (the firmware audit of session 25, D2).
- LuxOS: Luxor's curtail page says today that "the curtailment state will persist if you
  restart the machine"; its older text, "can only be started again by wakeup or rebooting
  the machine". Both are modelled (``curtail_survives_reboot``); the default is today's.
  Before, only the older one was, while docs/adapters.md said the simulator kept the sleep.
"""

from __future__ import annotations

import pytest

from adapters.sim.antminer import AntminerSim
from adapters.sim.antminer_web import WORK_NORMAL, WORK_SLEEP
from adapters.sim.luxos import LuxosSim


def _reboot(m: AntminerSim | LuxosSim) -> tuple[str, float]:
    """Power off and boot (what a reboot does between its two halves); the phase and the
    power the miner settles at."""
    m._power_off()
    m._boot()
    m.clock = lambda: 1e12  # long after: every ramp has ended
    watts, _ths = m._advance()
    return m.state.phase, watts


@pytest.mark.parametrize(("mode", "phase"), [(WORK_SLEEP, "sleeping"), (WORK_NORMAL, "mining")])
def test_a_stock_antminer_boots_into_its_saved_work_mode(mode: int, phase: str) -> None:
    m = AntminerSim("127.0.0.1")
    m._set_work_mode(mode)
    got, watts = _reboot(m)
    assert got == phase and m.work_mode == mode
    assert (watts < 100.0) is (mode == WORK_SLEEP), watts


@pytest.mark.parametrize(("survives", "phase"), [(True, "sleeping"), (False, "mining")])
def test_a_curtailed_luxos_rig_after_a_restart(survives: bool, phase: str) -> None:
    m = LuxosSim("127.0.0.1", curtail_survives_reboot=survives)
    m.sleep()
    m.clock = lambda: 1e11  # the sleep has settled
    m._advance()
    assert _reboot(m)[0] == phase


def test_a_running_luxos_rig_comes_back_running() -> None:
    m = LuxosSim("127.0.0.1")
    assert _reboot(m)[0] == "mining"
