"""The plan in force: the last good plan, when it was made, why the latest re-plan failed,
and whether dispatch follows it (not after a fast-path shed, until the next plan)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from scheduler.planner.plan import Plan


class CurrentPlan:
    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.made_at: float | None = None
        self.error: str | None = None  # the latest re-plan's failure, until one succeeds
        self.solver_status = "none"
        #: after a fast-path shed, the plan's step is not dispatched until the next plan
        self.hold = False
        #: the devices a fast-path shed is commanding now, and the mode it asks: a plan
        #: adopted meanwhile leaves them to it (a shed of thousands takes seconds or more)
        self.shedding: dict[str, str] = {}
        self.generation = 0  # counts plans adopted and re-plans failed
        #: the devices whose units the plan in force counted (those that answered when it
        #: was made; None: not known, every device); the others it counted as a load it
        #: cannot move, and dispatch leaves them as they are until a plan counts them
        self.counted: frozenset[str] | None = None

    def adopt(self, plan: Plan, now: float, counted: frozenset[str] | None = None) -> None:
        self.plan, self.made_at, self.error = plan, now, None
        self.counted = counted
        self.solver_status = plan.status
        self.hold = False
        self.generation += 1

    def failed(self, error: str, status: str) -> None:
        self.error, self.solver_status = error, status
        self.generation += 1

    def index(self, now: float) -> int | None:
        """The plan step containing ``now``, or None."""
        if self.plan is None:
            return None
        k = int(np.searchsorted(self.plan.ends_s, now, side="right"))
        return k if k < len(self.plan.starts_s) and self.plan.starts_s[k] <= now else None

    def age_s(self, now: float) -> float | None:
        return None if self.made_at is None else now - self.made_at

    def price_at(self, now: float) -> float | None:
        """The plan's price for the step containing ``now`` (USD/MWh)."""
        k = self.index(now)
        return None if k is None or self.plan is None else float(self.plan.price_usd_per_mwh[k])

    def gap(self, now: float) -> str | None:
        """Why no good plan covers ``now`` (None while one does, or while the first plan is
        still being made): the site then holds the fail-safe posture."""
        if self.plan is not None and self.index(now) is not None:
            return None
        if self.plan is None:
            if self.error is None:
                return None  # starting: the first plan is on its way
            return f"no good plan covers now (re-plan failed: {self.error})"
        ended = datetime.fromtimestamp(float(self.plan.ends_s[-1]), UTC).isoformat()
        why = f"; re-plan failed: {self.error}" if self.error else ""
        return f"no good plan covers now (the last good plan ended at {ended}{why})"
