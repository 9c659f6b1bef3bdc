"""What ``benchmarks/fleet_control.py`` counts of each round's commands, per family and
overall (:class:`Tally`): the answers (sent, failed, retried, unanswered, the slowest
acknowledgement), when the last command reached its simulated miner, and the read-back's
verdicts checked against the simulator's own state (false "done", accepted and not in
effect). The run drives the fleet; this only counts what came back, and
``benchmarks/fleet_report.py`` prints it."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from typing import Any

from adapters.antminer import UNANSWERED
from adapters.fleet import Outcome, OutcomeKind
from benchmarks.fleet_sim import in_effect


@dataclasses.dataclass
class Tally:
    """Counts and times of one family (or all), over every round."""

    sent: int = 0
    confirmed: int = 0
    late: int = 0  # confirmed past the family's deadline
    unconfirmed: int = 0
    failed: int = 0  # failed or rejected when sent
    retried: int = 0  # accepted after a failed first attempt
    false_done: int = 0
    accepted_not_in_effect: int = 0
    stage_failed: int = 0
    unanswered: int = 0  # accepted as sent, its answer not come within the adapter's timeout
    not_received: int = 0  # the simulated miner never got it
    commanded_s: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )  # acknowledged: the last answer back
    received_s: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )  # the last command at its miner
    latency_s: dict[str, list[float]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    readback_s: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )


def shape(error: str) -> str:
    """An error's words without the device and numbers, to count alike errors together."""
    return re.sub(r"\d+", "N", error.partition(": ")[2] or error)[:160]


class Tallies:
    """The tallies of every family and of all (``by_family["all"]``), and the errors of
    the commands that failed, by family."""

    def __init__(self, family: dict[str, str], host: dict[str, str]) -> None:
        self.family, self.host = family, host  # by device id
        self.by_family: dict[str, Tally] = defaultdict(Tally)
        #: Errors of the commands that failed, by family, with digits and hosts blanked.
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)

    def both(self, device_id: str) -> tuple[Tally, Tally]:
        return self.by_family[self.family[device_id]], self.by_family["all"]

    def answered(self, action: str, outs: list[Outcome], w0: float, wall_s: float) -> None:
        """The commands' answers; each family's slowest from the round's start (unix
        ``w0``), and all's (the whole ``Fleet.apply``, ``wall_s``, when none answered)."""
        worst: dict[str, float] = defaultdict(float)
        for o in outs:
            for t in self.both(o.device_id):
                t.sent += 1
                t.latency_s[action].append(o.latency_s)
                t.failed += not o.ok
                t.retried += o.ok and o.attempts > 1
                t.unanswered += bool(o.applied and UNANSWERED in o.applied.note)
            if not o.ok and o.error:
                self.errors[self.family[o.device_id]][shape(o.error)] += 1
            fw = self.family[o.device_id]
            worst[fw] = max(worst[fw], o.at - w0)  # from the round's start, as received
        for fw, s in worst.items():
            self.by_family[fw].commanded_s[action].append(s)
        self.by_family["all"].commanded_s[action].append(max(worst.values(), default=wall_s))

    def received(
        self, action: str, w0: float, outs: list[Outcome], rows: dict[str, dict[str, Any]]
    ) -> None:
        """When the round's last command reached its simulated miner, per family and all."""
        reached: dict[str, float] = defaultdict(float)
        for o in outs:
            at = float(rows[self.host[o.device_id]].get("commanded_at", 0.0))
            if at >= w0:
                fw = self.family[o.device_id]
                reached[fw] = max(reached[fw], at - w0)
            else:
                for t in self.both(o.device_id):
                    t.not_received += 1
        for fw, s in reached.items():
            self.by_family[fw].received_s[action].append(s)
        if reached:
            self.by_family["all"].received_s[action].append(max(reached.values()))

    def judged(
        self,
        action: str,
        outs: list[Outcome],
        verdicts: list[Outcome],
        rows: dict[str, dict[str, Any]],
        deadline_s: dict[str, float],
    ) -> None:
        """Each accepted command and each read-back verdict against the simulator's state
        (``rows``, asked after the read-back)."""
        for o in outs:
            if o.ok and not in_effect(o, rows[self.host[o.device_id]]):
                for t in self.both(o.device_id):
                    t.accepted_not_in_effect += 1
        for v in verdicts:
            both = self.both(v.device_id)
            if v.kind is OutcomeKind.CONFIRMED:
                late = v.latency_s > deadline_s[v.device_id]
                false = not in_effect(v, rows[self.host[v.device_id]])
                for t in both:
                    t.confirmed += not late
                    t.late += late
                    t.false_done += false
                    t.readback_s[action].append(v.latency_s)
            elif v.kind is OutcomeKind.UNCONFIRMED:
                for t in both:
                    t.unconfirmed += 1
