"""The daemon: plan, apply, watch, and answer the grid, in one asyncio process.

Jobs (APScheduler on the daemon's loop): re-plan every ``replan_s`` and at once after a
signal or a price change; poll telemetry every ``poll_s`` and dispatch the plan's current
step (power comes back in batches within the site's ramp limit); refresh prices.

A signal that lowers the cap below the measured load does not wait for the optimiser: it
is stored durably, then the fast path walks a precomputed shed order and commands every
device in one concurrent sweep; the re-plan follows. On restart the stored active events
are enforced before anything else. A price feed (or, when configured, the signal feed)
silent past its limit adds a fail-safe cap. A re-plan that does not end optimal is never
applied: the last good plan stays while it covers now, else the fail-safe posture holds
(committed inference serving, miners within the fail-safe cap); docs/daemon.md,
"Fail-safe semantics". SIGTERM leaves the devices in the configured posture.

:class:`Daemon` (``core``) composes the parts; docs/architecture.md draws them.
"""

from __future__ import annotations

from scheduler.service.daemon.core import Daemon
from scheduler.service.daemon.counters import Counters
from scheduler.service.daemon.devices import SLEEP
from scheduler.service.daemon.dispatch import assign, ramp_batch
from scheduler.service.daemon.planning import DISPATCHABLE
from scheduler.service.daemon.shedorder import ShedStep
from scheduler.service.daemon.signals import SHED_WHILE_WRITING_AFTER_S

__all__ = [
    "DISPATCHABLE",
    "SHED_WHILE_WRITING_AFTER_S",
    "SLEEP",
    "Counters",
    "Daemon",
    "ShedStep",
    "assign",
    "ramp_batch",
]
