"""The simulators' records of what they were asked stay bounded (adapters/sim/calllog.py):
a simulated fleet runs for hours, and ``BraiinsSim.grpc_calls`` grew by every call."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.sim.antminer import AntminerSim
from adapters.sim.auradine import AuradineSim
from adapters.sim.braiins import BraiinsSim
from adapters.sim.calllog import KEEP, CallLog
from adapters.sim.vnish import VnishSim
from adapters.sim.whatsminer import WhatsminerSim
from adapters.sim.whatsminer3 import WhatsminerV3Sim

LOGS = [
    (BraiinsSim, "grpc_calls"),
    (BraiinsSim, "web_calls"),
    (WhatsminerSim, "writes"),
    (WhatsminerV3Sim, "writes"),
    (AuradineSim, "web_calls"),
    (AuradineSim, "mode_posts"),
    (VnishSim, "web_calls"),
    (AntminerSim, "conf_writes"),
]


@pytest.mark.parametrize(("sim", "name"), LOGS, ids=[f"{s.__name__}.{n}" for s, n in LOGS])
def test_a_simulators_call_log_keeps_the_latest_calls_and_no_more(sim: Any, name: str) -> None:
    m = sim("127.0.0.1")  # not started: the log is the object's own
    log = getattr(m, name)
    for i in range(10 * KEEP):
        log.append(i)
    assert KEEP <= len(log) <= 2 * KEEP  # a plain list: 10 * KEEP
    assert log[-1] == 10 * KEEP - 1 and log == list(range(10 * KEEP - len(log), 10 * KEEP))
    assert isinstance(log, CallLog) and log.total == 10 * KEEP


def test_a_call_log_reads_as_a_list_and_counts_every_call() -> None:
    log: CallLog[str] = CallLog(keep=2)
    assert log == []
    for c in "abcde":
        log.append(c)
    assert log == ["d", "e"] and log.total == 5  # trimmed to 2 once past 4
    log.append("f")
    assert log == ["d", "e", "f"] and log[1:] == ["e", "f"]
    with pytest.raises(ValueError, match="keep=0: must be at least 1"):
        CallLog(keep=0)
