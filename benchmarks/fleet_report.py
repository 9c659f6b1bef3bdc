"""The report of ``benchmarks/fleet_control.py``: per family and overall, the times to
receive and to acknowledge each round's commands, the verdicts, and the controller's CPU.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from benchmarks.measure import pct

if TYPE_CHECKING:
    from benchmarks.fleet_control import Bench


def report(b: Bench, rounds: int) -> None:
    order = [*dict.fromkeys(b.family.values()), "all"]
    tallies = [(k, b.tally[k]) for k in order]
    print(f"\n{len(b.family)} miners, {rounds} rounds; load average {os.getloadavg()}")
    print(
        "received: the round's last command at its miner; acknowledged: its last answer back;"
        " p50 / p99 / max over the rounds (ms)"
    )
    head = (
        f"{'family':11s} {'curtail received':>20s} {'curtail acknowledged':>20s} "
        f"{'wake received':>20s} {'wake acknowledged':>20s} {'one command':>14s}"
    )
    print(head)

    def cell(xs: list[float]) -> str:
        if not xs:
            return "-"
        return f"{pct(xs, 0.5) * 1e3:5.0f} {pct(xs, 0.99) * 1e3:6.0f} {max(xs) * 1e3:6.0f}"

    for fw, t in tallies:
        cells = [cell(d[k]) for k in ("sleep", "wake") for d in (t.received_s, t.commanded_s)]
        one = t.latency_s["sleep"] + t.latency_s["wake"]
        print(
            f"{fw:11s} {cells[0]:>20s} {cells[1]:>20s} {cells[2]:>20s} {cells[3]:>20s} "
            f"{pct(one, 0.5) * 1e3:6.0f} {pct(one, 0.99) * 1e3:6.0f}"
        )
    print(
        f"\n{'family':11s} {'sent':>6s} {'confirmed':>9s} {'late':>5s} {'unconf':>6s} "
        f"{'failed':>6s} {'retried':>7s} {'false done':>10s} {'accepted,not in effect':>22s} "
        f"{'stage failed':>12s}  read-back p50/p99 s (sleep; wake)"
    )
    for fw, t in tallies:
        rb = "; ".join(
            f"{pct(t.readback_s[k], 0.5):.2f}/{pct(t.readback_s[k], 0.99):.2f}"
            for k in ("sleep", "wake")
            if t.readback_s[k]
        )
        print(
            f"{fw:11s} {t.sent:6d} {t.confirmed:9d} {t.late:5d} {t.unconfirmed:6d} "
            f"{t.failed:6d} {t.retried:7d} {t.false_done:10d} {t.accepted_not_in_effect:22d} "
            f"{t.stage_failed:12d}  {rb}"
        )
    for fw, t in tallies:
        if t.unanswered or t.not_received:
            print(
                f"{fw}: {t.unanswered} sent and not answered within the adapter's timeout "
                f"(read back instead); {t.not_received} never reached their miner"
            )
    if b.args.gap_s:
        print(
            f"commands spaced at least {b.min_spacing_s:.2f} s apart "
            f"(LuxOS session TTL {b.args.session_ttl_s:g} s)"
        )
    for fw, errors in b.errors.items():
        for text, n in errors.most_common(3):
            print(f"{fw}: {n} x {text}")
    rd = b.read_cpu_s / max(1, b.readings)
    cpu = ", ".join(
        f"{k} p50 {pct(xs, 0.5) * 1e3:.2f} / p99 {pct(xs, 0.99) * 1e3:.2f} ms"
        for k, xs in b.cpu_per_command_s.items()
    )
    print(
        f"\ncontroller CPU per command: {cpu}; per reading (read-back polls) {rd * 1e3:.2f} ms; "
        f"sweep p50 {pct(b.sweep_s, 0.5) * 1e3:.0f} ms, p99 {pct(b.sweep_s, 0.99) * 1e3:.0f} ms"
    )
    if b.loop_lag_s:
        lag = b.loop_lag_s
        print(
            f"event-loop lag while commands were in flight: p50 {pct(lag, 0.5) * 1e3:.0f} ms, "
            f"p99 {pct(lag, 0.99) * 1e3:.0f} ms, max {max(lag) * 1e3:.0f} ms ({len(lag)} samples)"
        )
    shares = "; ".join(
        f"{who} p50 {pct(xs, 0.5):.2f}, max {max(xs):.2f}" for who, xs in b.cpu_share.items() if xs
    )
    if shares:
        print(f"CPU s per wall s while commands were in flight (1.00 = a core): {shares}")
