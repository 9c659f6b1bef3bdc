"""The poll: read the fleet and the site meter every ``poll_s`` (and soon after a shed),
account energy, money, hashes and tokens, record telemetry with compliance, enter or leave
the fail-safe, put back devices that left their mode, and dispatch the plan's step."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

from adapters.base import Health, Telemetry
from adapters.fleet import Fleet
from models.devices import DeviceKind
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.counters import Counters, Tasks
from scheduler.service.daemon.devices import DeviceModes
from scheduler.service.daemon.dispatch import Dispatcher
from scheduler.service.daemon.failsafe import FailSafe
from scheduler.service.daemon.fastpath import Shedder
from scheduler.service.daemon.feeds import Feeds
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.planning import Planning
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.recorder import Recorder
from scheduler.service.daemon.signals import Signals
from scheduler.service.sdnotify import Notifier

log = logging.getLogger("gridsched.daemon")


class Poller:
    def __init__(
        self,
        fleet: Fleet,
        devices: DeviceModes,
        power: Power,
        signals: Signals,
        failsafe: FailSafe,
        shedder: Shedder,
        dispatcher: Dispatcher,
        planning: Planning,
        feeds: Feeds,
        plans: CurrentPlan,
        clock: Clock,
        recorder: Recorder,
        tasks: Tasks,
        notifier: Notifier,
    ) -> None:
        self.config = devices.config
        self.fleet, self.devices, self.power, self.signals = fleet, devices, power, signals
        self.failsafe, self.shedder, self.dispatcher = failsafe, shedder, dispatcher
        self.planning, self.feeds, self.plans, self.clock = planning, feeds, plans, clock
        self.recorder, self.tasks, self.notifier = recorder, tasks, notifier
        self.counters: Counters = recorder.counters
        self.last_poll = clock.monotonic()
        self.polls = 0
        #: the devices a re-plan was last asked for because they answered uncounted (asked
        #: once for them: a re-plan that fails is not asked again at every poll)
        self._asked_for: frozenset[str] = frozenset()
        self._lost_asked: frozenset[str] = frozenset()  # GPUs gone dark, a plan asked for
        self._lock = asyncio.Lock()

    async def poll(self, dispatch: bool = True) -> None:
        """Read the fleet and act on what it shows (one at a time: the scheduled poll and a
        confirmation after a shed may meet)."""
        async with self._lock:
            try:
                await self._poll(dispatch)
            finally:
                self.polls += 1

    async def _poll(self, dispatch: bool) -> None:
        t0 = self.clock.monotonic()
        self.power.sweep_started()
        readings, _ = await asyncio.gather(self.fleet.read_all(), self.power.read_meter())
        # a site's sweep time grows with its fleet: the operator sees it against poll_s
        self.counters.sweep_s.observe(self.clock.monotonic() - t0)
        readings = self._newest(readings)
        now = self.clock.time()
        dt = max(0.0, t0 - self.last_poll)
        self.last_poll = t0
        self.power.note(readings)
        counted = self.plans.counted
        if counted is not None:
            # devices answer that the plan in force counted as a load it cannot move:
            # dispatch leaves them as they are until a plan counts them, made now
            uncounted = frozenset(self.power.answered - counted)
            if uncounted and uncounted != self._asked_for:
                self.planning.request("devices answer again that the plan did not count")
            self._asked_for = uncounted
            # GPUs it counted on went dark (NVML's GPU_IS_LOST, an agent down): committed
            # inference may be short until a plan without them, made now, not at the next
            # scheduled one (44 % short for minutes: the SRE's walk, session 24)
            gpu = DeviceKind.GPU
            gone = frozenset(
                i for i in counted - self.power.answered if self.devices.class_of(i).kind is gpu
            )
            if gone and gone != self._lost_asked:
                names = ", ".join(sorted(gone)[:5]) + (" ..." if len(gone) > 5 else "")
                self.planning.request(
                    f"GPUs the plan counted on no longer answer ({names}): re-planned for "
                    "committed inference"
                )
            self._lost_asked = gone
        drifted = self._drifted(readings) + len(self.devices.unfollowed)
        self.devices.unfollowed.clear()
        # recorded as they came (Recorder.verdict); what is left, now, before telemetry
        await self.recorder.flush_verdicts()
        self.power.invalidate()
        m = self.power.measured(now)
        cap, events = self.signals.cap_now(now)
        self.shedder.refresh()
        if self.power.measured(now, expect=True)["import_kw"] > cap + 1e-6:
            # e.g. a miner that rebooted into mining during a DR event, or a cap that began
            # between two plan steps: shed now, do not wait for the plan
            why = f"{drifted} devices left their mode; " if drifted else ""
            self.shedder.request(f"{why}load above the cap at the poll")
        self.integrate(m, dt, now)
        await self.power.billing.observe(m["import_kw"], now)  # kept in the state file
        counts = self.fleet.health_counts()
        await self.recorder.audit(
            "telemetry",
            {
                **{k: round(v, 3) for k, v in m.items()},
                "cap_kw": None if math.isinf(cap) else round(cap, 3),
                "events": [e.id for e in events],
                "health": {h.value: n for h, n in counts.items()},
                **self.power.compliance_record(cap, now),
            },
            now,
        )
        await self.recorder.dwell(self.devices.dwell.changes())  # kept across restarts
        await self._failsafe(now)
        if (gap := self.plans.gap(now)) is not None:
            await self.shedder.safe_posture(gap)  # every poll: devices that drift are put back
        if dispatch:
            await self.dispatcher.dispatch()
        if self.config.daemon.stage_ahead_s and not self.dispatcher.staging:
            self.dispatcher.staging = True
            self.tasks.spawn(self.dispatcher.stage_ahead(), "stage")
        self.notifier.watchdog(
            f"import {m['import_kw']:.0f} kW, cap {cap:.0f} kW, "
            f"{counts[Health.UNREACHABLE]} unreachable"
        )

    def _newest(self, readings: dict[str, Telemetry]) -> dict[str, Telemetry]:
        """Each device's newest reading: a long sweep's reading may predate a command that
        the device's own read-back has confirmed since (taken as is, the device would seem
        to have left its new mode, and count at its old power)."""
        status = self.fleet.status
        for i, t in readings.items():
            latest = status[i].telemetry
            if latest is not None and latest.at > t.at:
                readings[i] = latest
        return readings

    def _drifted(self, readings: Mapping[str, Telemetry]) -> int:
        """Take the modes of devices read for the first time; count those that left theirs
        (they take the mode they read, so that dispatch puts them back)."""
        drifted = 0
        for device_id, st in self.fleet.status.items():
            if st.health is Health.UNREACHABLE:
                self.power.readings.pop(device_id, None)
            t = readings.get(device_id)
            if t is None:
                continue
            if device_id not in self.devices.modes:
                self.devices.modes[device_id] = self.devices.from_reading(device_id, t)
            elif self.devices.drifted(device_id, t):
                drifted += 1
        return drifted

    async def _failsafe(self, now: float) -> None:
        """Enter or leave the fail-safe cap as its reasons come and go; each change is
        logged, recorded, and re-plans at once."""
        reason = self.failsafe.reason(now)
        if (reason is None) == (self.failsafe.state is None):
            self.failsafe.state = reason
            return
        self.failsafe.state = reason
        if reason is not None:
            log.warning("fail-safe cap %.0f kW: %s", self.failsafe.cap_kw(), reason)
            self.shedder.request(f"fail-safe: {reason}")
        else:
            log.warning("fail-safe over: the feeds answer and a good plan covers now")
        payload = {"reason": reason, "cap_kw": self.failsafe.cap_kw()}
        await self.recorder.audit("failsafe", payload, now)
        self.planning.request("fail-safe", delay_s=0.0)

    def integrate(self, m: dict[str, float], dt: float, now: float) -> None:
        """Energy, hashes, tokens and money over the ``dt`` seconds since the last poll."""
        c = self.counters
        c.energy_j["asic"] += m["asic_kw"] * 1000.0 * dt
        c.energy_j["gpu"] += m["gpu_kw"] * 1000.0 * dt
        c.energy_j["site"] += m["import_kw"] * 1000.0 * dt
        readings = self.power.readings.values()
        ths = sum(t.hashrate_ths or 0.0 for t in readings)
        tok = sum(t.tokens_s or 0.0 for t in readings)
        c.hashes += ths * 1e12 * dt
        c.tokens += tok * dt
        hp = self.feeds.mining().net_hashprice
        c.revenue_usd["mining"] += ths * hp * dt / 86400.0
        inf = self.config.inference
        committed = min(tok, self.devices.committed_tokens_s(now))
        c.revenue_usd["inference_committed"] += committed * dt * inf.committed_usd_per_mtok / 1e6
        spot = min(max(tok - committed, 0.0), inf.spot_tokens_s)
        c.revenue_usd["inference_spot"] += spot * dt * inf.spot_usd_per_mtok / 1e6
        price = self.plans.price_at(now)
        if price is not None:
            c.energy_cost_usd += m["import_kw"] * dt / 3600.0 / 1000.0 * price
