"""Site power as the daemon knows it: each device's newest reading (or last known power,
never 0 kW when unread), the site meter when there is one, and compliance with the cap.

Every managed device counts at its newest reading, whichever read it: the telemetry sweep
or the read-back of a command (:mod:`adapters.readback`), each taken as it arrives
(:meth:`Power.heard`), so that a curtail confirmed by read-back shows in ``/v1/status``,
``/metrics`` and the fast path's load at once, not at the next poll (at 30,000 miners a
sweep takes minutes). A device not read in the latest poll nor since counts at its last
known power (its mode's nameplate if never read; see :mod:`scheduler.service.power`).
With a site meter read in the latest poll, import is the meter's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from adapters.base import Telemetry
from adapters.fleet import DeviceStatus, Fleet
from adapters.meter import MeterError, MeterReading, ModbusMeter
from adapters.outcomes import Pending
from scheduler.service.daemon.billing import BillingPeak
from scheduler.service.daemon.devices import SLEEP, UNKNOWN, DeviceModes, mode_kw
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.reach import no_power_target
from scheduler.service.power import (
    Compliance,
    DevicePower,
    SitePower,
    at_work,
    estimate_kw,
    judge,
    site_power,
)

log = logging.getLogger("gridsched.daemon")

#: How a device awaiting a command's read-back counts (:meth:`Power.measured`): as read
#: (status, metrics, compliance); at the mode it was told (the fast path: no kW shed twice);
#: at the larger of the two, and an awake device at the larger of its reading and its
#: mode's power (dispatch's headroom: no room counted before a reading shows it freed, nor
#: the room a device still ramping up will take).
READ, EXPECT, CAUTIOUS = 0, 1, 2
VIEWS = (READ, EXPECT, CAUTIOUS)


class Power:
    def __init__(
        self,
        fleet: Fleet,
        devices: DeviceModes,
        plans: CurrentPlan,
        meter: ModbusMeter | None,
        billing: BillingPeak | None = None,
    ) -> None:
        self.fleet = fleet
        self.devices = devices
        self.config = devices.config
        self.plans = plans
        self.meter = meter
        self.readings: dict[str, Telemetry] = {}  # each device's newest reading
        self.answered: set[str] = set()  # devices read in the latest poll, or since
        self.fresh: set[str] = set()  # of those, the ones with a power figure
        self.last_kw: dict[str, float] = {}  # each device's last power read, kept when unread
        #: counts changes to the readings (each one heard, each poll): what the metrics'
        #: sums are made from
        self.generation = 0
        self._since: set[str] = set()  # devices read since the latest sweep began
        self.meter_reading: MeterReading | None = None  # the last good one
        self.meter_error: str | None = None  # why the latest poll has no meter reading
        #: the billing period's peak import (raised by the poll; none kept without a store)
        self.billing = billing or BillingPeak(
            self.config.site.tz, self.config.tariff.billing_peak_so_far_kw
        )
        # Per view (READ, EXPECT, CAUTIOUS; see :meth:`measured`):
        #: each device's (kind, power) as last counted, in the fleet's order
        self._tables: dict[int, dict[str, tuple[str, DevicePower]]] = {}
        #: devices heard since their part of the table was counted
        self._dirty: dict[int, set[str]] = {v: set() for v in VIEWS}
        #: what a view that counts commands was counted with: devices awaiting a read-back
        self._pending_seen: dict[int, set[str]] = {}
        #: ``devices.generation`` when its table was counted
        self._modes_generation: dict[int, int] = {}
        self._managed: frozenset[str] | None = None  # the classes with adapters
        #: the sum, and the plan and step its unmanaged classes came from
        self._cache: dict[int, tuple[object, int | None, SitePower]] = {}
        devices.listeners.append(self.invalidate)

    def invalidate(self) -> None:
        """Something other than a reading changed (commands, verdicts, modes, a poll): the
        next figure counts every device again."""
        self._tables.clear()
        self._cache.clear()

    def heard(self, t: Telemetry) -> None:
        """A device's reading as it arrives (the fleet's ``on_reading``), a sweep's or a
        read-back's: it counts from now on. One older than the reading held (two reads of a
        device crossing) is not taken: it would undo what the newer one showed."""
        i = t.device_id
        held = self.readings.get(i)
        if held is not None and held.at > t.at:
            return  # (the fleet may settle a read-back with it: ``site`` sees that)
        for dirty in self._dirty.values():  # counted again at the next figure, it alone
            dirty.add(i)
        self.readings[i] = t
        self.answered.add(i)
        self._since.add(i)
        if t.power_w is None:
            self.fresh.discard(i)  # it answers, but its power is not known: estimated
        else:
            self.fresh.add(i)
            self.last_kw[i] = t.power_w / 1000.0
        self.generation += 1

    def sweep_started(self) -> None:
        """A poll's sweep begins: a device counts as answering it if the sweep reads it, or
        anything else does before the poll ends (:meth:`note`)."""
        self._since = set()

    def note(self, readings: Mapping[str, Telemetry]) -> None:
        """A poll's readings: which devices answered (in its sweep, or read back while it
        ran), which with a power figure; the last power of each is kept for when it cannot
        be read."""
        self.readings.update(readings)
        self.answered = set(readings) | self._since
        self.fresh = {
            i
            for i in self.answered
            if (t := self.readings.get(i)) is not None and t.power_w is not None
        }
        for i in self.fresh:
            self.last_kw[i] = (self.readings[i].power_w or 0.0) / 1000.0
        self.generation += 1
        self.invalidate()

    def site(self, view: int, now: float) -> SitePower:
        """The site's power as counted now (``view``: see :meth:`measured`), the same
        field for field as :meth:`_site_power`'s walk over every device, but counting again
        only the devices whose figure may have changed since the last call.

        What each device's figure (:meth:`_device`) reads, and what makes it counted again:

        - its reading, ``fresh`` and ``last_kw``: changed by :meth:`heard` (that device
          alone, marked in a dirty set per table) and by :meth:`note` and the poll's
          dropping of unreachable devices' readings (every device: :meth:`invalidate`);
        - ``devices.modes``: changed by commands (``DeviceModes.commanded``, whose
          listeners call :meth:`invalidate`), verdicts (``read_back``, the same), drifts and
          adoptions (they bump ``devices.generation``: every device) and a poll's first
          modes (followed by :meth:`invalidate`);
        - ``fleet.pending`` (EXPECT and CAUTIOUS only): a command accepted or settled by a
          reading, given up, superseded or a worker's news; its keys are compared with
          those the table was counted with, and the devices that came or went are counted
          again (a settle with a reading older than the one held changes nothing else);
        - the classes and the fleet's devices: fixed for the daemon's life; a change in the
          number of devices counts every device again.

        The classes without adapters are summed as the plan has them at ``now``: the sum is
        made again when the plan or its step changes."""
        view = int(view)
        pending = self.fleet.pending
        table = self._tables.get(view)
        if (
            table is None
            or self._modes_generation.get(view) != self.devices.generation
            or len(table) != len(self.fleet.status)
        ):
            self._cache.pop(view, None)
            table = self._tables[view] = self._count(view, self.fleet.status)
            self._dirty[view].clear()
            self._modes_generation[view] = self.devices.generation
            if view != READ:
                self._pending_seen[view] = set(pending)
        else:
            dirty = self._dirty[view]
            seen = self._pending_seen.get(view, set())
            if view != READ and (moved := seen ^ pending.keys()):
                dirty |= moved
                self._pending_seen[view] = set(pending)
            if dirty:
                self._cache.pop(view, None)
                status = self.fleet.status
                table.update(self._count(view, {i: status[i] for i in dirty if i in status}))
                dirty.clear()
        plan, k = self.plans.plan, self.plans.index(now)
        cached = self._cache.get(view)
        if cached is None or cached[0] is not plan or cached[1] != k:
            cached = self._cache[view] = (plan, k, self._sum(table, now))
        return cached[2]

    def counted(self, now: float) -> Mapping[str, tuple[str, DevicePower]]:
        """Each device's (kind, power) as the site's figure counts it now (read, else last
        known, else nameplate: never 0 kW for a device not read), for per-class sums that
        must add up to it; not to be changed."""
        self.site(READ, now)
        return self._tables[READ]

    def measured(
        self, now: float, expect: bool = False, cautious: bool = False
    ) -> dict[str, float]:
        """Site power now: IT by kind, import (what metrics, status and the audit trail
        report), and how much of it is estimated.

        ``expect``: a device commanded since its reading counts at its new mode's power
        until a reading shows it there; what the fast path decides on, so that a second
        curtail right after a first does not shed the same kW twice (with a meter: its
        reading, moved by what the commands not yet seen change).

        ``cautious``: as ``expect``, but a command that lowers a device's power counts only
        once a reading shows it; what dispatch and the plan take as headroom, so that no
        wake goes into room a sleep has not yet freed (a miner that accepts its sleep and
        keeps hashing reads so until its read-back deadline).
        """
        p = self.site(CAUTIOUS if cautious else EXPECT if expect else READ, now)
        out = {
            "asic_kw": p.asic_kw,
            "gpu_kw": p.gpu_kw,
            "unmanaged_kw": p.unmanaged_kw,
            "import_kw": p.devices_import_kw,
            "devices_import_kw": p.devices_import_kw,
            "estimated_kw": p.estimated_kw,
            "devices_unread": float(p.devices_unread),
        }
        meter_kw = self.meter_kw()
        if meter_kw is not None:
            # the gap (unmetered loads, PUE, unread devices) as the meter saw it
            seen = self.site(READ, now)
            out["import_kw"] = meter_kw + p.devices_import_kw - seen.devices_import_kw
        return out

    def _site_power(self, view: int, now: float) -> SitePower:
        """Every device counted afresh: what :meth:`site` must equal."""
        return self._sum(self._count(int(view), self.fleet.status), now)

    def _count(
        self, view: int, status: Mapping[str, DeviceStatus]
    ) -> dict[str, tuple[str, DevicePower]]:
        # what is the same for every device looked up once: at 9,548 devices each lookup
        # saved is milliseconds of every poll and every shed
        kinds = {name: dc.kind.value for name, dc in self.devices.classes.items()}
        pending = self.fleet.pending
        one = self._device
        return {i: (kinds[st.group], one(i, st, view, pending)) for i, st in status.items()}

    def _sum(self, devices: Mapping[str, tuple[str, DevicePower]], now: float) -> SitePower:
        unmanaged = 0.0  # classes without adapters: as planned
        managed = self._managed
        if managed is None:  # the fleet's devices are fixed for the daemon's life
            managed = self._managed = frozenset(st.group for st in self.fleet.status.values())
        plan, k = self.plans.plan, self.plans.index(now)
        if plan is not None and k is not None:
            for cp in plan.classes:
                if cp.name not in managed:
                    unmanaged += float(cp.power_kw[k])
        worst = sum(  # and at most every unit at its top mode
            dc.units * max(m.power_kw for m in dc.modes)
            for dc in self.config.devices
            if dc.name not in managed
        )
        site = self.config.site
        return site_power(devices, unmanaged, site.pue, site.base_load_kw, worst)

    def device(self, device_id: str, expect: bool | int) -> DevicePower:
        """One device's IT power as counted (``expect``: a view, True for EXPECT): its
        pending command's mode, its reading, else its last known power or the mode its
        newest reading shows (or, never read, the mode it was told)."""
        return self._device(
            device_id, self.fleet.status[device_id], int(expect), self.fleet.pending
        )

    def _device(
        self, device_id: str, st: DeviceStatus, view: int, pending: Mapping[str, object]
    ) -> DevicePower:
        dc = self.devices.classes[st.group]
        # DeviceModes.awaiting, with the fleet's pending commands looked up once per walk
        told = self.devices.modes.get(device_id) if view and device_id in pending else None
        if told is not None:
            kw = mode_kw(dc, told)
            # dispatch: a lower mode counts once read, a higher one at once; the fast path
            # too, once a reading taken past the firmware's typical time to show the change
            # still does not show it (a miner that accepted a sleep and kept hashing counted
            # as asleep until its deadline, 120 s on stock Antminers: a new cap "fitted")
            if view == CAUTIOUS or self._overdue(device_id, pending):
                as_read = self._device(device_id, st, READ, pending)
                if as_read.kw > kw:
                    return as_read
            return DevicePower(kw, device_id in self.fresh, kw)
        t = self.readings.get(device_id)  # its newest (heard as it came)
        if t is not None and t.power_w is not None and device_id in self.fresh:
            kw = t.power_w / 1000.0
            if view == CAUTIOUS and (mode := self.devices.modes.get(device_id)) not in (
                None,
                SLEEP,
            ):
                # awake below its mode's power: a miner still ramping up after its wake
                # (0.19 of 2.45 kW as it boots), a GPU between requests; the room is not
                # free (dispatch once woke more miners into it: 54.3 kW under 50 kW)
                kw = max(kw, mode_kw(dc, mode))
            return DevicePower(kw, True, kw)
        last = self.last_kw.get(device_id)
        mode = self.devices.modes.get(device_id)
        if t is not None and t.state == "sleeping":
            mode, last = SLEEP, None  # asleep, not at the power it drew before
        elif t is not None and at_work(t) and mode in (None, SLEEP):
            # Answered without a power figure (stock Antminer firmware reads none), or not
            # answering now, running although told to sleep: one that accepted a sleep and
            # kept hashing counted at 15 W until its read-back deadline. Its reading cannot
            # tell which mode it runs in: the class's most power-hungry; but a reading taken
            # before the sleep went out shows the mode it was in then (counted at the top
            # mode, status said 145.5 kW 3 s after a curtail while 77 kW was drawn), and a
            # miner without a power target runs at its own setting whenever it hashes (a
            # stock S21 counted at the class's 4,375 W while status said stock: walk 26b)
            p = pending.get(device_id)
            before = self.devices.before.get(device_id)
            known = isinstance(p, Pending) and (t.at < p.sent_at or self._own_setting(device_id))
            mode = before if known and before not in (None, SLEEP) else UNKNOWN
        kw, worst = estimate_kw(
            last, None if mode is None else mode_kw(dc, mode), max(m.power_kw for m in dc.modes)
        )
        return DevicePower(kw, False, worst)

    def _own_setting(self, device_id: str) -> bool:
        """A miner without a power target: it runs at its own setting whenever it runs."""
        adapter = self.fleet.by_id.get(device_id)
        return no_power_target(adapter.info if adapter is not None else None)

    def _overdue(self, device_id: str, pending: Mapping[str, object]) -> bool:
        """Whether the device's newest reading was taken at least its firmware family's
        typical time to show a change (``readback_after_s``) after its pending command went
        out, and, the command still pending, does not show it."""
        p = pending.get(device_id)
        t = self.readings.get(device_id)
        if not isinstance(p, Pending) or t is None:
            return False
        return t.at >= p.sent_at + self.fleet.by_id[device_id].readback_after_s()

    def meter_kw(self) -> float | None:
        """The site meter's import from the latest poll (None: no meter, or not read)."""
        if self.meter_reading is None or self.meter_error is not None:
            return None
        return self.meter_reading.import_w / 1000.0

    async def read_meter(self) -> None:
        """Read the site meter (with the fleet, each poll). A failure is said once per
        change, in the log and in /v1/status; import falls back to the devices' sum."""
        if self.meter is None:
            return
        try:
            self.meter_reading = await self.meter.read()
        except MeterError as exc:
            if str(exc) != self.meter_error:
                log.warning("site meter: %s; import is the devices' sum meanwhile", exc)
            self.meter_error = str(exc)
            return
        if self.meter_error is not None:
            log.warning("site meter read again (after: %s)", self.meter_error)
        self.meter_error = None

    def compliance(self, cap_kw: float, now: float) -> Compliance:
        """Whether import meets ``cap_kw``: met, not met or unverified, and why."""
        return judge(cap_kw, self.site(READ, now), self.meter_kw(), self.meter_error)

    def compliance_record(self, cap_kw: float, now: float) -> dict[str, Any]:
        """What the audit trail keeps of compliance with each telemetry record: the state,
        why, where import came from, and the meter's view when there is one."""
        c = self.compliance(cap_kw, now)
        out: dict[str, Any] = {
            "compliance": c.state.value,
            "compliance_reason": c.reason,
            "import_source": c.source,
        }
        if c.meter_kw is not None:
            out["meter_kw"] = round(c.meter_kw, 3)
            out["meter_gap_kw"] = round(c.meter_gap_kw or 0.0, 3)
        if c.meter_error is not None:
            out["meter_error"] = c.meter_error
        return out
