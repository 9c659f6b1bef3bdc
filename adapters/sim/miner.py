"""The LuxOS miner simulator under the names the rest of gridsched imports.

A simulated miner is three parts, each a module of its own:

- :mod:`adapters.sim.physics`: power, hashrate and temperature over time (sleep, wake,
  profile change, reboot), shared by every firmware family;
- :mod:`adapters.sim.server`: the JSON-over-TCP API server (cgminer's framing on 4028)
  and the faults injected into it;
- a command table per family: :mod:`adapters.sim.luxos` (LuxOS, the :class:`SimMiner`
  here), :mod:`adapters.sim.antminer`, :mod:`adapters.sim.braiins`,
  :mod:`adapters.sim.whatsminer`.
"""

from __future__ import annotations

from adapters.sim.luxos import API_VERSION, LUXOS_VERSION, LuxosSim
from adapters.sim.physics import (
    BOOT_W,
    SLEEP_W,
    WAKE_HOLD_SHARE,
    MinerState,
    Preset,
    presets_for,
    wake_reaches_s,
)
from adapters.sim.server import Fault, FaultKind

#: A simulated LuxOS miner (the first family gridsched simulated, hence the plain name).
SimMiner = LuxosSim

__all__ = [
    "API_VERSION",
    "BOOT_W",
    "LUXOS_VERSION",
    "SLEEP_W",
    "WAKE_HOLD_SHARE",
    "Fault",
    "FaultKind",
    "MinerState",
    "Preset",
    "SimMiner",
    "presets_for",
    "wake_reaches_s",
]
