"""The daemon: plan, apply, watch, and answer the grid, in one asyncio process.

:class:`Daemon` composes the parts; see docs/architecture.md.
"""

from __future__ import annotations

from scheduler.service.daemon.core import (
    DISPATCHABLE,
    EXPECTED_FAULTS,
    SHED_WHILE_WRITING_AFTER_S,
    SLEEP,
    Counters,
    Daemon,
    ShedStep,
    assign,
    ramp_batch,
)

__all__ = [
    "DISPATCHABLE",
    "EXPECTED_FAULTS",
    "SHED_WHILE_WRITING_AFTER_S",
    "SLEEP",
    "Counters",
    "Daemon",
    "ShedStep",
    "assign",
    "ramp_batch",
]
