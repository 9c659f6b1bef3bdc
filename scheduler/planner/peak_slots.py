"""Billed peaks on fixed slots: each tariff rule (a demand charge, each coincident-peak rule)
gets two slots, so that a horizon moved by one step keeps its matrix and the next plan is
a warm re-solve instead of a cold one (the daemon's re-plans, the backtest's windows)."""

from __future__ import annotations

import dataclasses

from scheduler.planner.inputs import PeakGroup, PlanInputs

__all__ = ["assign_peak_slots", "peak_rules", "slot_peaks"]


def assign_peak_slots(
    peaks: list[PeakGroup], rules: list[str], per_rule: int = 2
) -> list[PeakGroup] | None:
    """Give each billed-peak group a fixed slot: ``per_rule`` per tariff rule (the name
    less its month), in time order. None when a rule has more groups than slots."""
    out = []
    used: dict[str, int] = {}
    for g in sorted(peaks, key=lambda p: int(p.steps[0]) if len(p.steps) else 0):
        rule = g.name.rsplit(" ", 1)[0]
        i = used.get(rule, 0)
        if rule not in rules or i >= per_rule:
            return None
        used[rule] = i + 1
        out.append(dataclasses.replace(g, slot=rules.index(rule) * per_rule + i))
    return out


def peak_rules(peaks: list[PeakGroup]) -> list[str]:
    """Tariff rules of the peak groups (demand charge, each coincident-peak rule)."""
    return list(dict.fromkeys(g.name.rsplit(" ", 1)[0] for g in peaks))


def slot_peaks(inp: PlanInputs, peaks: list[PeakGroup], rules: list[str]) -> None:
    """Give ``inp`` these billed peaks on fixed slots (two per tariff rule) when they fit,
    as plain groups otherwise. On slots, a horizon that moves by a step keeps its matrix,
    so the next plan is a warm re-solve instead of a cold one."""
    slotted = assign_peak_slots(peaks, rules)
    inp.peaks = slotted if slotted is not None else peaks
    inp.peak_slots = 2 * len(rules) if slotted is not None else None
