"""The fast path: a cap below the measured load does not wait for the optimiser. A
precomputed shed order (:mod:`.shedorder`: least valuable kW first, never below committed
inference) is walked and every device commanded in one concurrent sweep; the re-plan
follows. The fail-safe posture (no good plan covers now) lives here too: committed
inference served, then the same shed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from adapters import registry
from adapters.base import Health, ModeRequest
from adapters.fleet import Fleet, Outcome
from models.devices import DeviceKind, Mode
from models.economics import site_load_kw
from models.site import Posture
from scheduler.planner.class_caps import class_excess_kw
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.counters import Counters, Tasks
from scheduler.service.daemon.devices import SLEEP, DeviceModes
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.recorder import Recorder
from scheduler.service.daemon.shedorder import ShedStep, choose, shed_order
from scheduler.service.daemon.signals import Signals
from scheduler.service.demand_feed import DemandFeed

__all__ = ["REFRESH_AFTER_S", "ShedStep", "Shedder", "choose", "shed_order"]

log = logging.getLogger("gridsched.daemon")

#: How long after a mode changes the shed order is worked out again (see Shedder).
REFRESH_AFTER_S = 0.5


class Shedder:
    def __init__(
        self,
        fleet: Fleet,
        devices: DeviceModes,
        power: Power,
        signals: Signals,
        plans: CurrentPlan,
        clock: Clock,
        recorder: Recorder,
        tasks: Tasks,
        demand: DemandFeed | None,
        replan: Callable[[str, float], None],
    ) -> None:
        self.config = devices.config
        self.replan = replan  # the plan after a shed releases dispatch
        self.fleet, self.devices, self.power = fleet, devices, power
        self.signals, self.plans, self.clock = signals, plans, clock
        self.recorder, self.tasks, self.demand = recorder, tasks, demand
        self.counters: Counters = recorder.counters
        self.order: list[ShedStep] = []
        self.running = False
        self.again: str | None = None
        self._meter_pending = False
        # what the order was worked out from (the classes, their offers and the site stay)
        self._order_of: tuple[dict[str, str], tuple[frozenset[str], ...]] | None = None
        self._gpus = [
            i for i, st in fleet.status.items() if devices.classes[st.group].kind is DeviceKind.GPU
        ]
        self._refresh_due: asyncio.TimerHandle | None = None
        devices.listeners.append(self._refresh_soon)

    def _refresh_soon(self) -> None:
        """Modes changed: the order is worked out again ``REFRESH_AFTER_S`` later, once for
        all the changes meanwhile. Read-back verdicts come in bursts (a curtail's deadline
        passing for hundreds of miners at once), and working it out for each held the loop
        0.1 s per verdict at 9,548 devices. A shed works it out first if still due."""
        if self._refresh_due is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: no burst either
            self.refresh()
            return
        self._refresh_due = loop.call_later(REFRESH_AFTER_S, self.refresh)

    def refresh(self) -> None:
        """Work the shed order out again if the devices' modes, or the modes barred to a GPU,
        changed since. Every poll asks: at 9,548 devices working it out took 20-200 ms of
        CPU, seeing that nothing changed about 1 ms."""
        if self._refresh_due is not None:
            self._refresh_due.cancel()
            self._refresh_due = None
        key = (dict(self.devices.modes), tuple(self.devices.barred(i) for i in self._gpus))
        if key != self._order_of:
            self.order = shed_order(self.devices)
            self._order_of = key

    def reading_gaps(self) -> tuple[float, dict[str, float]]:
        """How far readings of awake devices lag their modes, at the meter: the kW that
        devices reading below their mode's power will still add (in total), and the kW
        each device reading above it draws beyond the shed order's figure. Devices with a
        command not yet confirmed already count at their new mode."""
        below_it, above = self._gaps()
        return float(site_load_kw(sum(below_it.values()), self.config.site.pue, 0.0)), above

    def _gaps(self) -> tuple[dict[str, float], dict[str, float]]:
        """``reading_gaps`` in one walk over the readings: the IT kW still to come, by class
        (class caps count it per class), and each device's kW above its mode, at the meter."""
        pue = self.config.site.pue
        below: dict[str, float] = {}
        above: dict[str, float] = {}
        modes, pending, status = self.devices.modes, self.fleet.pending, self.fleet.status
        # (class, mode) -> (class, its Mode): a few pairs for thousands of devices, looked up
        # once each (this walk runs before a curtail's first command)
        found: dict[tuple[str, str], tuple[str, Mode | None]] = {}
        for device_id, t in self.power.readings.items():
            mode = modes.get(device_id, SLEEP)
            if mode == SLEEP or device_id in pending or t.power_w is None:
                continue
            key = (status[device_id].group, mode)
            if key not in found:
                dc = self.devices.classes[key[0]]
                found[key] = (dc.name, dc.mode(mode))
            name, m = found[key]
            if m is None:
                continue
            gap = m.power_kw - t.power_w / 1000.0
            if gap > 0:
                below[name] = below.get(name, 0.0) + gap
            elif gap < 0:
                above[device_id] = float(site_load_kw(-gap, pue, 0.0))
        return below, above

    def _class_excess(self, now: float, below: dict[str, float]) -> dict[tuple[str, ...], float]:
        """kW at the meter above each cap on part of the site (events naming classes),
        counting commands not yet read back at their new mode and devices still ramping at
        theirs (``below``: IT kW by class)."""
        caps = self.signals.class_caps(now)
        if not caps:
            return {}
        it_kw: dict[str, float] = dict.fromkeys(self.devices.classes, 0.0)
        for device_id in self.fleet.status:
            it_kw[self.devices.class_of(device_id).name] += self.power.device(device_id, True).kw
        for name, kw in below.items():
            it_kw[name] += kw
        return {
            classes: kw
            for classes, kw in class_excess_kw(self.config, caps, it_kw).items()
            if kw > 1e-6
        }

    def request(self, reason: str) -> None:
        """Run the fast path now, or once more right after the one running (coalesced)."""
        if self.running:
            self.again = reason
            return
        self.running = True

        async def run(why: str) -> None:
            try:
                while True:
                    await self.shed(why)
                    if self.again is None:
                        return
                    why, self.again = self.again, None
            finally:
                self.running = False

        self.tasks.spawn(run(reason), "fast-path")

    async def shed(self, reason: str) -> list[Outcome]:
        """Shed at once, by the precomputed order, to the cap in force now."""
        t0 = time.perf_counter()
        if self._refresh_due is not None:  # modes changed in this turn of the loop
            self.refresh()
        now = self.clock.time()
        cap, events = self.signals.cap_now(now)
        load = self.power.measured(now, expect=True)["import_kw"]
        below_it, above = self._gaps()
        # Shed until what stays on fits under the cap at the larger of its reading and its
        # mode's power: a miner still ramping up reads below its mode (the order's figure)
        # and would climb back over the cap; one drawing more than its mode saves more.
        excess = load + float(site_load_kw(sum(below_it.values()), self.config.site.pue, 0.0)) - cap
        class_excess = self._class_excess(now, below_it)
        if (excess <= 1e-6 and not class_excess) or not self.fleet.status:
            # said, so that an event that sheds nothing can be told from one not acted on
            log.info("fast path (%s): load %.1f kW fits the cap %.1f kW: nothing to shed",
                     reason, excess + cap, cap)  # fmt: skip
            return []
        # not counted on: devices not read, and those that did not follow their last command
        unread = {
            i
            for i, st in self.fleet.status.items()
            if i not in self.power.fresh or st.health is Health.UNCONFIRMED
        }
        floor = self.devices.committed_tokens_s(now)
        tokens = self.devices.serving_tokens()
        chosen = choose(self.order, excess, unread, tokens, floor, above) if excess > 1e-6 else {}
        for classes, group_excess in class_excess.items():
            group = [s for s in self.order if self.devices.class_of(s.device_id).name in classes]
            served = self.devices.serving_tokens(with_modes={i: s.mode for i, s in chosen.items()})
            for i, step in choose(group, group_excess, unread, served, floor, above).items():
                if i not in chosen or step.request.action == "sleep":
                    chosen[i] = step
        if not chosen:
            return []
        self.plans.hold = True
        # Miners (and GPUs that need no drain) at once; GPUs that drain their requests
        # before powering down after, so that no drain delays a miner's shed.
        drained = self.demand.drains(chosen) if self.demand is not None else set()
        first = {i: s.request for i, s in chosen.items() if i not in drained}
        self.plans.shedding.update({i: s.mode for i, s in chosen.items()})
        try:
            outcomes = await self.fleet.apply(first) if first else []
            elapsed = time.perf_counter() - t0
            self.counters.fast_path_s.observe(elapsed)
            if drained:
                outcomes += await self.fleet.apply({i: chosen[i].request for i in drained})
            self.devices.commanded(outcomes, {i: s.mode for i, s in chosen.items()})
        finally:
            for i in chosen:
                self.plans.shedding.pop(i, None)
        self._meter_soon()
        if self.plans.gap(now) is None:
            # Dispatch holds until a plan made after this shed: ask for it now (a shed by
            # the poll asked for none, and dispatch held until the scheduled re-plan, so a
            # cap starting meanwhile went unenforced for minutes). Without a good plan the
            # fail-safe posture re-plans on its own schedule.
            self.replan(f"fast path ({reason})"[:120], 0.0)
        log.warning(
            "fast path (%s): load %.0f kW > cap %.0f kW; %d devices commanded in %.0f ms",
            reason,
            load,
            cap,
            len(chosen),
            elapsed * 1000,
        )
        extra = {
            "reason": reason,
            "load_kw": round(load, 3),
            "cap_kw": cap,
            "events": [e.id for e in events],
        }
        await self.recorder.outcomes("fast-path", outcomes, extra)
        return outcomes

    def _meter_soon(self) -> None:
        """After a shed, read the site meter again ``confirm_after_s`` later rather than at
        the next poll (up to ``poll_s`` later): import and compliance are the meter's, and
        the shed shows there within seconds. The devices are not read again: each command
        is read back on its own and its reading counts as it comes (a sweep of the whole
        fleet here took minutes at 30,000 miners, beside the read-backs, for nothing)."""
        d = self.config.daemon
        if self.power.meter is None or self._meter_pending:
            return
        if not 0 < d.confirm_after_s < d.poll_s:
            return
        self._meter_pending = True

        async def later() -> None:
            try:
                await asyncio.sleep(d.confirm_after_s)
                await self.power.read_meter()
                self.power.invalidate()
            finally:
                self._meter_pending = False

        self.tasks.spawn(later(), "meter")

    async def safe_posture(self, why: str) -> list[Outcome]:
        """No good plan covers now: hold the fail-safe posture. Committed inference serves
        (GPUs asleep or capped down are raised to their fullest mode until the committed
        tokens are met); with ``failsafe_posture = "sleep_miners"`` every miner sleeps;
        then the fast path sheds to the fail-safe cap (miners first, never below the
        committed floor). Dispatch has no plan step to follow meanwhile."""
        sleep_miners = self.config.daemon.failsafe_posture is Posture.SLEEP_MINERS
        need = self.devices.committed_tokens_s(self.clock.time()) - self.devices.serving_tokens()
        requests: dict[str, ModeRequest] = {}
        chosen: dict[str, str] = {}
        for device_id, st in sorted(self.fleet.status.items()):
            if st.health is Health.UNREACHABLE:
                continue
            dc = self.devices.classes[st.group]
            mode = self.devices.modes.get(device_id)  # None: never read, may be running
            if dc.kind is DeviceKind.ASIC:
                if sleep_miners and mode != SLEEP:
                    requests[device_id], chosen[device_id] = ModeRequest("sleep"), SLEEP
                continue
            if need <= 0:
                continue
            # the offered mode counted for most tokens/s under the latency objective
            barred = self.devices.barred(device_id)  # a GPU that cannot lock: no clock modes
            offered = {k: v for k, v in self.devices.offered[dc.name].items() if k not in barred}
            best = max(offered, key=offered.__getitem__, default=None)
            current = None if mode is None else dc.mode(mode)  # a GPU never read: counts 0
            now_tok = 0.0 if current is None else self.devices.counted[dc.name][current.name]
            gain = 0.0 if best is None else offered[best] - now_tok
            if best is not None and gain > 0:
                requests[device_id] = registry.mode_request(dc, best)
                chosen[device_id] = best
                need -= gain
        outcomes: list[Outcome] = []
        if requests:
            outcomes = await self.fleet.apply(requests)
            self.devices.commanded(outcomes, chosen)
            log.warning("fail-safe posture (%s): %d devices commanded", why, len(requests))
            await self.recorder.outcomes("fail-safe", outcomes, {"reason": why})
        self.request(f"fail-safe: {why}")
        return outcomes
