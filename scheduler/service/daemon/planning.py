"""Re-planning: every ``replan_s``, and soon after a signal, a price or hashprice change or
a demand change. The plan is made over the devices that answer; a re-plan that does not end
optimal is never applied: the last good plan stays while it covers now, else the fail-safe
posture holds (docs/daemon.md, "Fail-safe semantics")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from adapters.base import DeviceInfo
from adapters.faults import in_words, traceback_once
from adapters.fleet import Fleet, Outcome
from models.durations import parse_duration_s
from models.economics import site_load_kw
from models.errors import ConfigError, DataError
from models.site import SiteConfig
from scheduler.planner.inputs import PlanInputs, SiteState, assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.peak_slots import peak_rules, slot_peaks
from scheduler.planner.plan import Plan
from scheduler.planner.solvers import SolveStatus
from scheduler.planner.timegrid import TimeGrid, first_step_s, multires_grid, uniform_grid
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.counters import Tasks
from scheduler.service.daemon.devices import SLEEP, DeviceModes
from scheduler.service.daemon.feeds import Feeds
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.reach import bound_inputs, class_reach
from scheduler.service.daemon.recorder import Recorder
from scheduler.service.daemon.signals import Signals
from scheduler.service.demand_feed import DemandFeed

log = logging.getLogger("gridsched.daemon")
#: Solver outcomes whose plan may be applied. Not a time limit: a plan is extracted only
#: from an optimal solution (any other status gives a schedule of zero units, every device
#: asleep), so anything else keeps the last good plan or the fail-safe posture.
DISPATCHABLE = frozenset({SolveStatus.OPTIMAL})


def dispatch_step_s(config: SiteConfig) -> int:
    """Length of the plan's first steps: its boundaries are where dispatch acts."""
    d = config.daemon
    return first_step_s(d.resolution) if d.resolution else parse_duration_s(d.step)


class Planning:
    def __init__(
        self,
        planner: Planner,
        fleet: Fleet,
        devices: DeviceModes,
        power: Power,
        signals: Signals,
        feeds: Feeds,
        plans: CurrentPlan,
        clock: Clock,
        recorder: Recorder,
        tasks: Tasks,
        demand: DemandFeed | None,
        dispatch: Callable[[], Awaitable[list[Outcome]]],
        safe_posture: Callable[[str], Awaitable[list[Outcome]]],
    ) -> None:
        self.config = devices.config
        self.planner, self.fleet, self.devices, self.power = planner, fleet, devices, power
        self.signals, self.feeds, self.plans, self.clock = signals, feeds, plans, clock
        self.recorder, self.tasks, self.demand = recorder, tasks, demand
        self.dispatch, self.safe_posture = dispatch, safe_posture
        self.horizon_s = parse_duration_s(self.config.daemon.horizon)
        self.pending = False
        self.failed_in_row = 0  # re-plans failed since the last good one (said when it ends)
        self._lock = asyncio.Lock()
        self._peak_rules: list[str] = []  # tariff rules seen, in order: their peak slots

    def request(self, reason: str, delay_s: float = 0.5) -> None:
        """Re-plan soon. Requests within ``delay_s`` (a burst of signals) share one plan;
        the fast path has already acted on anything urgent."""
        if not self.pending:
            self.pending = True

            async def later() -> None:
                await asyncio.sleep(delay_s)
                await self.replan(reason)

            self.tasks.spawn(later(), "replan")

    def grid(self, now: float) -> TimeGrid:
        d = self.config.daemon
        step = dispatch_step_s(self.config)
        start = int(now) - int(now) % step
        if d.resolution:
            return multires_grid(start, self.horizon_s, d.resolution)
        return uniform_grid(start, self.horizon_s, step)

    def state(self, now: float) -> SiteState:
        units_on: dict[str, int] = {}
        for device_id, mode in self.devices.modes.items():
            group = self.fleet.status[device_id].group
            units_on[group] = units_on.get(group, 0) + (mode != SLEEP)
        power = self.power
        load = power.measured(now, expect=True)["import_kw"] if power.readings else None
        # the peak of the billing period ``now`` is in (the planner floors that month alone)
        peak = power.billing.peak_kw(now)
        return SiteState(
            current_load_kw=load,
            units_on=units_on or None,
            billing_peak_kw=peak,
            asleep_since=self.devices.asleep_since() or None,
            awake_since=self.devices.awake_since() or None,
            now_s=now,
        )

    def available_config(self) -> SiteConfig:
        """The config with each managed class's units limited to the devices that answer
        (were read in the latest poll)."""
        answered = self.power.answered
        devices = []
        for dc in self.config.devices:
            ids = self.fleet.ids(dc.name)
            if ids:
                alive = sum(i in answered for i in ids)
                dc = dc.model_copy(update={"available": min(alive, dc.count)})
            devices.append(dc)
        # Devices that do not answer are out of the plan's units but may still draw: their
        # estimated power is a load the plan cannot move.
        site = self.config.site
        stuck_kw = sum(
            self.power.device(i, False).kw for i in self.fleet.status if i not in answered
        )
        if stuck_kw > 0:
            base_kw = float(site_load_kw(stuck_kw, site.pue, site.base_load_kw))
            site = site.model_copy(update={"base_load_kw": base_kw})
        return self.config.model_copy(
            update={"devices": tuple(devices), "mining": self.feeds.mining(), "site": site}
        )

    def bound_modes(self, inputs: PlanInputs) -> None:
        """Offer each mode only the answering devices that can reach it (a stock-firmware
        miner runs at its own setting; a GPU refused clock locks takes no clock mode:
        scheduler/service/daemon/reach.py), and say in the plan's notes which and why."""
        answered = self.power.answered
        reaches = {}
        for c, dc in enumerate(self.config.devices):
            ids = [i for i in self.fleet.ids(dc.name) if i in answered]
            if ids:
                reaches[c] = class_reach(dc, ids, self._info, self.devices.barred)
        bound_inputs(inputs, reaches, [dc.name for dc in self.config.devices])

    def _info(self, device_id: str) -> DeviceInfo | None:
        adapter = self.fleet.by_id.get(device_id)
        return None if adapter is None else adapter.info

    def keep_cap_margin(self, inputs: PlanInputs) -> None:
        """Plan under DR and fail-safe caps with ``cap_margin_pct`` of the cap kept free, so
        that what is measured, not the nameplate sum, stays under the cap."""
        share = self.config.daemon.cap_margin_pct / 100.0
        capped = np.isfinite(inputs.dr_cap_kw)
        if share <= 0 or not capped.any():
            return
        inputs.cap_kw = np.where(capped, inputs.cap_kw * (1.0 - share), inputs.cap_kw)
        inputs.notes.append(
            f"planned {self.config.daemon.cap_margin_pct:g} % under DR and fail-safe caps "
            "([daemon] cap_margin_pct)"
        )

    def _inputs(self, now: float) -> tuple[SiteConfig, PlanInputs]:
        grid = self.grid(now)
        prices, fallback = self.feeds.prices, None
        if prices is None:  # the feed has given none yet: said in the plan's notes
            prices, fallback = self.feeds.fallback_prices(
                int(grid.starts_s[0]), int(grid.ends_s[-1])
            )
        config = self.available_config()
        events, level_notes = self.signals.for_plan(
            self.signals.active_events(now), config.tariff.dr_levels_kw
        )
        inputs = assemble_inputs(config, grid, prices, events, self.state(now))
        inputs.notes[:0] = level_notes
        if fallback is not None:
            inputs.notes.insert(0, fallback)
        # Billed peaks on fixed slots: the next step's plan keeps this matrix and re-solves
        # warm (20 x 5 x 576: 0.1 s instead of 0.5-0.8 s cold).
        for rule in peak_rules(inputs.peaks):
            if rule not in self._peak_rules:
                self._peak_rules.append(rule)
        slot_peaks(inputs, inputs.peaks, self._peak_rules)
        self.bound_modes(inputs)
        self.keep_cap_margin(inputs)
        if self.demand is not None:
            self.demand.set_plan_demand(inputs, now)
        return config, inputs

    async def replan(self, reason: str = "schedule") -> Plan | None:
        self.pending = False
        async with self._lock:
            now = self.clock.time()
            seen = (self.signals.generation, self.recorder.counters.fast_path_s.count)
            counted = frozenset(self.power.answered)  # the devices its units come from
            try:
                config, inputs = self._inputs(now)
                plan = await asyncio.to_thread(
                    self.planner.plan, inputs, config.site.name, config.site.timezone
                )
            except Exception as exc:  # bad prices, a solver failure: keep the last plan
                # the solver, the disk: one line; a bug keeps its name, its traceback once
                # one line for the log and /v1/status (a ConfigError's message spans lines)
                error = exc.one_line() if isinstance(exc, ConfigError) else in_words(exc)
                log.error("re-plan (%s) failed: %s", reason, error, exc_info=traceback_once(exc))
                # refused for its inputs (an event, a data file) before any solve: not the
                # solver's error (GridschedSolverFailing said "the optimiser's ...")
                given = isinstance(exc, ConfigError | DataError)
                await self.failed(reason, error, "invalid_input" if given else "error")
                return None
            status = SolveStatus(plan.status)
            if status not in DISPATCHABLE:  # its schedule is zeros: never apply it
                error = f"solver {plan.solver} ended with {status.value} ({plan.termination})"
                log.error("re-plan (%s) failed: %s", reason, error)
                await self.failed(reason, error, status.value)
                return None
            self.plans.adopt(plan, now, counted)
            if self.failed_in_row:  # the log said each failure: it says the end of them
                log.warning(
                    "re-plan (%s) succeeded again after %d failed", reason, self.failed_in_row
                )
                self.failed_in_row = 0
            # A signal stored or a shed made during the solve: this plan never saw it, and its
            # wakes would undo the shed. Dispatch waits for the plan made after it.
            stale = seen != (self.signals.generation, self.recorder.counters.fast_path_s.count)
            if stale:
                self.plans.hold = True
                self.request("a signal or a shed came during the last solve", 0.0)
            if self.demand is not None:
                self.demand.planned()  # the demand this plan was made for is in force
            self.recorder.counters.solve_s.observe(plan.solve_s + plan.build_s)
            await self.recorder.audit(
                "plan", _plan_record(plan, reason, self.plans.index(now)), now
            )
        if not stale:
            await self.dispatch()
        return plan

    async def failed(self, reason: str, error: str, status: str) -> None:
        """A re-plan gave nothing to apply: the last good plan stays in force while it
        covers now, else the fail-safe posture; status, /healthz and metrics say why."""
        self.plans.failed(error, status)
        self.recorder.counters.plan_failures += 1
        self.failed_in_row += 1
        payload = {"reason": reason, "error": error, "status": status}
        await self.recorder.audit("plan-failed", payload)
        if (gap := self.plans.gap(self.clock.time())) is not None:
            await self.safe_posture(gap)


def _plan_record(plan: Plan, reason: str, k: int | None) -> dict[str, Any]:
    """What the audit trail keeps of a plan: why, how it was solved, its current step."""
    return {
        "reason": reason,
        "status": plan.status,
        "solve_s": round(plan.solve_s, 4),
        "warm": plan.warm,
        "objective": plan.objective,
        "profit_usd": round(plan.money.profit, 2),
        "step": None
        if k is None
        else {
            "start_s": int(plan.starts_s[k]),
            "import_kw": round(float(plan.import_kw[k]), 3),
            "cap_kw": round(float(plan.cap_kw[k]), 3),
            "units": {cp.name: cp.units_at(k) for cp in plan.classes},
        },
        "violations": [v.message for v in plan.violations],
    }
