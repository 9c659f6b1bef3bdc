"""What each managed device was told and is believed to do: its mode as last applied (or
read). A command counts as done when a reading shows it: the fleet's read-back
(:mod:`adapters.readback`) keeps the commands not yet seen; this module hears its verdicts.
One not seen within its firmware family's deadline makes the device take the mode it reads
(so that dispatch sends the plan's mode again and the fast path covers it) and is recorded.

A GPU's mode is its power limit AND its SM clock lock (a clock mode shares its limit with a
cap, its twin): a reading whose lock the adapter cannot tell, or whose power limit no mode
of its class sets (an operator's ``nvidia-smi -pl``), is in mode :data:`UNKNOWN`, counted at
the class's top power, serving nothing counted, and commanded again by the next dispatch
(no plan mode is "unknown"). Each drift is logged once and counted (``drifts``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from adapters.base import CLOCKS_UNKNOWN, ClockLock, Telemetry, target_tolerance_w
from adapters.fleet import Fleet, Outcome
from adapters.gpu import NvmlGpu, limit_matches
from adapters.outcomes import OutcomeKind
from models.devices import DeviceClass, DeviceKind
from models.inference_objectives import told_capacity_tokens_s
from models.site import SiteConfig
from scheduler.planner.objectives import offered_modes
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.dwell import Dwell
from scheduler.service.daemon.reach import no_power_target, own_setting_mode
from scheduler.service.power import at_work

log = logging.getLogger("gridsched.daemon")
#: The read-back's verdicts on an accepted command (one each).
_VERDICTS = (OutcomeKind.CONFIRMED, OutcomeKind.UNCONFIRMED, OutcomeKind.SUPERSEDED)
SLEEP = "sleep"
#: The mode of a device whose reading matches none of its class's modes for certain (a GPU
#: whose SM clock lock cannot be told, or that runs clocks no mode locks).
UNKNOWN = "unknown"


def mode_lock(dc: DeviceClass, mode: str) -> tuple[int, int] | None:
    """The SM clock range ``mode`` locks (None: the driver's clocks, and asleep)."""
    m = dc.mode(mode)
    clocks = None if m is None else m.sm_clock_mhz
    return None if clocks is None else (clocks[0], clocks[1])


def top_mode(dc: DeviceClass) -> str:
    """The class's most power-hungry mode: what a device never read is assumed to run."""
    return max(dc.modes, key=lambda m: m.power_kw).name


def mode_kw(dc: DeviceClass, mode: str) -> float:
    """A device's IT power in ``mode`` (its idle power asleep; in no known mode, the most
    it may draw: the class's top mode's)."""
    m = dc.mode(mode)
    if m is None:
        if mode == SLEEP:
            return dc.idle_kw
        if mode == UNKNOWN:
            return max(x.power_kw for x in dc.modes)
        raise KeyError(f"class {dc.name!r} has no mode {mode!r}")
    return m.power_kw


class DeviceModes:
    def __init__(self, config: SiteConfig, fleet: Fleet, clock: Clock) -> None:
        self.config = config
        self.fleet = fleet
        self.clock = clock
        self.classes: dict[str, DeviceClass] = {dc.name: dc for dc in config.devices}
        #: class -> mode -> tokens/s per unit, for the modes the plan offers under the
        #: latency objectives (all, as stated, without one): what the fast path and the
        #: fail-safe posture may step GPUs into, and count them for
        self.offered: dict[str, dict[str, float]] = {
            dc.name: {m.name: tok for m, tok in offer}
            for dc, offer in zip(config.devices, offered_modes(config)[0], strict=True)
        }
        inf = config.inference
        #: class -> mode -> tokens/s per unit counted: ``offered``'s, and for a mode not
        #: offered (read back, or an operator's) its lowest measured load
        self.counted: dict[str, dict[str, float]] = {
            dc.name: told_capacity_tokens_s(dc, inf.itl_p95_s, inf.itl_p95_over_mean)
            for dc in config.devices
        }
        self.modes: dict[str, str] = {}  # device -> mode as last applied (or read)
        #: when each device was put to sleep (woken), unix s, while it sleeps (runs): the
        #: plan keeps it so until its class's min_off_s (min_on_s) has passed (.dwell)
        self.dwell = Dwell()
        self.slept_at, self.woke_at = self.dwell.slept_at, self.dwell.woke_at
        #: device -> its mode before its latest command (a reading older than the command
        #: shows it in that one)
        self.before: dict[str, str] = {}
        #: class -> its modes that lock the SM clock, and what a GPU that cannot lock is
        #: given in each one's place (``instead``)
        self.lock_modes: dict[str, frozenset[str]] = {
            dc.name: frozenset(m.name for m in dc.modes if m.sm_clock_mhz is not None)
            for dc in config.devices
        }
        self.instead: dict[str, dict[str, str]] = {
            dc.name: _instead(dc, self.counted[dc.name]) for dc in config.devices
        }
        #: called after commands change what devices are believed to do
        self.listeners: list[Callable[[], None]] = []
        #: hears each read-back verdict (confirmed, unconfirmed) as it arrives: the
        #: daemon's recorder (:meth:`Recorder.verdict`), which writes it to the audit trail
        self.on_verdict: Callable[[Outcome], None] | None = None
        #: devices whose command went unconfirmed since the last poll took them
        self.unfollowed: set[str] = set()
        self.generation = 0  # counts changes to what devices are believed to do
        self._target_w: dict[tuple[str, str], float] = {}  # (class, mode) -> power limit W
        self._own: dict[tuple[str, str], str] = {}  # (class, model) -> own-setting mode
        #: class -> what drifted ("state", "clock_lock", "power_limit") -> times seen
        self.drifts: dict[str, dict[str, int]] = {}
        # The daemon commands these devices: each may be brought to a state it can read
        # back on connect (a GPU's SM clock lock, which NVML cannot read). ``fleet status``
        # builds the same adapters and leaves this off: it must not undo our lock.
        for adapter in fleet.by_id.values():
            adapter.controller = True

    def class_of(self, device_id: str) -> DeviceClass:
        return self.classes[self.fleet.status[device_id].group]

    def from_reading(self, device_id: str, t: Telemetry) -> str:
        """The mode a reading shows: asleep; else, of the modes with the SM clock lock it
        reads, the one whose power target is nearest. A lock that cannot be told, or that
        no mode has: UNKNOWN (never a clock mode's cap twin, or the reverse); so is a miner's
        target above every mode's power (a preset rounds a mode down, never up: walk 26b,
        an S21 at its factory 3.5 kW in a class of 3 kW read as its top mode, never sent)."""
        dc = self.class_of(device_id)
        if t.state == "sleeping":
            return SLEEP
        lock = t.sm_clock_lock_mhz
        if lock == CLOCKS_UNKNOWN:
            return UNKNOWN
        same = [m for m in dc.modes if mode_lock(dc, m.name) == lock]
        if dc.kind is DeviceKind.GPU and t.target_w is not None:
            # a GPU's limit is set, not tuned: one that no mode sets is in no mode
            limit = t.target_w
            same = [m for m in same if limit_matches(limit, self.limit_w(device_id, m.name))]
        elif t.target_w is not None:  # a miner's target is a mode's power or a preset below
            floor_w = t.target_w - target_tolerance_w(t.target_w)  # it: a mode at or above it
            same = [m for m in same if dc.device_target_w(m.name) >= floor_w]
        if not same:
            return UNKNOWN
        if t.target_w is None:
            info = self.fleet.by_id[device_id].info if device_id in self.fleet.by_id else None
            if dc.kind is DeviceKind.ASIC and no_power_target(info):
                # it runs at its own setting, whichever modes the class lists: the class's
                # first (eco) once counted a stock Antminer hashing at 3 kW at 2.1 kW
                key = (dc.name, info.model if info is not None else "")
                own = self._own.get(key) or self._own.setdefault(key, own_setting_mode(dc, info))
                if any(m.name == own for m in same):
                    return own
            return same[0].name
        return min(same, key=lambda m: abs(dc.device_target_w(m.name) - (t.target_w or 0.0))).name

    def commanded(self, outcomes: Iterable[Outcome], modes: Mapping[str, str]) -> None:
        """Note the modes that devices accepted (``modes``: device -> mode asked); not a
        clock mode whose lock the GPU refused (its read-back settles what it is in)."""
        for o in outcomes:
            if o.ok and o.applied is not None:
                mode = modes[o.device_id]
                if mode in self.barred(o.device_id):
                    continue
                # what a reading taken before the command shows the device in
                self.before[o.device_id] = self.modes.get(o.device_id, SLEEP)
                self.modes[o.device_id] = mode
                self._slept(o.device_id, mode)
        if short := self.dwell.cut_short():  # a cap (the fast path, or a plan) outranked it
            log.warning("stopped before their min_on_s has passed: %s", short)
        self.generation += 1
        for listener in self.listeners:
            listener()

    def _slept(self, device_id: str, mode: str) -> None:
        """Note when a device went to sleep or woke (kept while it sleeps or runs), for its
        min-off and min-on."""
        was_asleep = self.before.get(device_id, SLEEP) == SLEEP
        if mode != SLEEP and was_asleep:  # asleep before: it starts now
            self.dwell.woke(device_id, self.clock.time())
        elif mode == SLEEP and not was_asleep:  # awake before: it stops now
            dc = self.class_of(device_id)
            self.dwell.slept(device_id, self.clock.time(), dc.min_on_s, dc.name)

    def slept_now(self, outcomes: Iterable[Outcome]) -> None:
        """Devices put to sleep outside dispatch (the shutdown posture): their min-off."""
        for o in outcomes:
            if o.ok and self.modes.get(o.device_id) != SLEEP:
                self.dwell.slept(o.device_id, self.clock.time())

    def asleep_since(self) -> dict[str, list[float]]:
        """Class -> when each of its devices now asleep was put to sleep by a command."""
        out: dict[str, list[float]] = {}
        for device_id, at in self.slept_at.items():
            if self.modes.get(device_id) == SLEEP:
                out.setdefault(self.fleet.status[device_id].group, []).append(at)
        return out

    def awake_since(self) -> dict[str, list[float]]:
        """Class -> when each of its devices now awake was woken by a command (or seen
        woken behind gridsched's back)."""
        out: dict[str, list[float]] = {}
        for device_id, at in self.woke_at.items():
            if self.modes.get(device_id) not in (None, SLEEP):
                out.setdefault(self.fleet.status[device_id].group, []).append(at)
        return out

    def shown(self) -> dict[str, str]:
        """The devices whose command awaits its read-back, each with the mode its newest
        reading shows, not the one commanded (the SRE's walk, session 24: one hashing on
        counted "sleep"); those with no reading of a known state keep the one commanded."""
        out = {}
        for device_id in self.fleet.pending:
            st = self.fleet.status.get(device_id)
            t = None if st is None else st.telemetry
            if t is not None and (t.state == "sleeping" or at_work(t)):
                out[device_id] = self.from_reading(device_id, t)
        return out

    def awaiting(self, device_id: str) -> str | None:
        """The mode a command accepted and not yet seen in a reading leaves the device in
        (None when nothing is waiting for its read-back)."""
        return self.modes.get(device_id) if device_id in self.fleet.pending else None

    def read_back(self, out: Outcome) -> None:
        """The fleet's verdict on an accepted command (its ``on_outcome`` hook). Confirmed,
        or superseded (a newer command accepted before a read-back showed it; the newer one
        is read back): kept for the audit trail, nothing else changes. Unconfirmed: the
        device did not follow; it takes the mode it reads, if read since the command, so
        that dispatch sends the plan's mode again and the fast path does not count on it."""
        if out.kind not in _VERDICTS:
            return
        if self.on_verdict is not None:
            self.on_verdict(out)
        if out.kind is OutcomeKind.UNCONFIRMED:
            self.unfollowed.add(out.device_id)
            t = self.fleet.status[out.device_id].telemetry
            if t is not None and t.at >= out.at - out.latency_s:
                self.adopt(out.device_id, t, f"did not follow: {out.error}")
            for listener in self.listeners:
                listener()

    def drifted(self, device_id: str, t: Telemetry) -> bool:
        """A device that sleeps or runs against its last command (a reboot, an operator, a
        crash), or a GPU whose SM clock lock is not its mode's (reset behind our back, or
        no longer known), takes the mode it reads, so that dispatch puts it back to the
        plan's. A device in no known mode takes the one a reading shows, once it does."""
        mode = self.modes[device_id]
        if device_id in self.fleet.pending or t.state not in ("sleeping", "running"):
            return False  # on its way, or between states
        if mode == UNKNOWN:
            seen = self.from_reading(device_id, t)
            if seen != UNKNOWN:
                self.modes[device_id] = seen
                self.generation += 1
            return False  # already counted, and dispatch sends it a mode anyway
        if (t.state == "sleeping") != (mode == SLEEP):
            self.adopt(device_id, t, f"was set to {mode}: putting it back", "state")
            return True
        lock = t.sm_clock_lock_mhz
        dc = self.class_of(device_id)
        want = mode_lock(dc, mode)
        if t.state == "running" and lock != want:
            self.adopt(device_id, t, f"was set to {mode} ({_lock_words(want)}), reads "
                       f"{_lock_words(lock)}: putting it back", "clock_lock")  # fmt: skip
            return True
        if t.state == "running" and dc.kind is DeviceKind.GPU and t.target_w is not None:
            want_w = self.limit_w(device_id, mode)
            if not limit_matches(t.target_w, want_w):
                why = (
                    f"was set to {mode} (power limit {want_w:g} W), reads power limit "
                    f"{t.target_w:g} W: putting it back"
                )
                self.adopt(device_id, t, why, "power_limit")
                return True
        # a miner's target above its mode's power (LuxOS's ATM turned on behind our back
        # climbs profiles; below is a preset's rounding or ATM stepping down: no drift)
        if t.state == "running" and dc.kind is DeviceKind.ASIC and t.target_w is not None:
            set_w = dc.device_target_w(mode)
            if t.target_w > set_w + target_tolerance_w(set_w):
                why = f"was set to {mode} ({set_w:g} W), reads target {t.target_w:g} W"
                self.adopt(device_id, t, f"{why}: putting it back", "power_target")
                return True
        return False

    def barred(self, device_id: str) -> frozenset[str]:
        """The modes a device cannot be sent now: a GPU's clock modes while NVML refuses
        its locks (until its adapter's retry is due)."""
        adapter = self.fleet.by_id.get(device_id)
        if isinstance(adapter, NvmlGpu) and adapter.clock_modes_barred() is not None:
            return self.lock_modes[self.fleet.status[device_id].group]
        return frozenset()

    def lock_refused(self, device_id: str) -> str | None:
        """Why NVML refuses this GPU's clock locks (None: it does not, or not a GPU)."""
        adapter = self.fleet.by_id.get(device_id)
        return adapter.lock_refused if isinstance(adapter, NvmlGpu) else None

    def limit_w(self, device_id: str, mode: str) -> float:
        """The power limit a GPU in ``mode`` reads back: the mode's, within the limits NVML
        gave the adapter (it sets the nearest it allows). A miner's range is not clamped
        into: its firmware refuses a target outside, and no plan sends one (reach.py)."""
        group = self.fleet.status[device_id].group
        want = self._target_w.get((group, mode))
        if want is None:  # a mode's figure is fixed: looked up once (each poll asks)
            want = self._target_w[(group, mode)] = self.classes[group].device_target_w(mode)
        adapter = self.fleet.by_id.get(device_id)
        info = None if adapter is None else adapter.info
        lo, hi = (info.min_power_w, info.max_power_w) if info is not None else (None, None)
        if info is not None and info.kind == "gpu" and lo is not None and hi is not None:
            want = min(max(want, lo), hi)
        return want

    def adopt(self, device_id: str, t: Telemetry, why: str, drift: str | None = None) -> None:
        """Take the mode a device reads as its own, so that dispatch sends the plan's again;
        ``drift``: what it changed behind gridsched's back, counted."""
        seen = self.from_reading(device_id, t)
        log.warning("%s reads %s but %s", device_id, seen, why)
        if seen == SLEEP and self.modes.get(device_id) != SLEEP:
            self.dwell.slept(device_id, self.clock.time())  # stopped behind our back: now
        elif seen != SLEEP and self.modes.get(device_id) == SLEEP and drift is not None:
            self.dwell.woke(device_id, self.clock.time())  # started behind our back: now
        elif seen != SLEEP and self.modes.get(device_id) == SLEEP:
            self.dwell.never_slept(device_id)
        self.modes[device_id] = seen
        self.generation += 1
        if drift is not None:
            by_what = self.drifts.setdefault(self.fleet.status[device_id].group, {})
            by_what[drift] = by_what.get(drift, 0) + 1

    def serving_tokens(self, with_modes: Mapping[str, str] | None = None) -> float:
        """Tokens/s the GPUs serve in their modes as they stand (or with ``with_modes``
        taken: device -> mode), counted as the plan counts them (``counted``)."""
        modes = {**self.modes, **with_modes} if with_modes else self.modes
        status = self.fleet.status
        # each (class, mode)'s tokens/s looked up once (0 for miners and asleep): this walk
        # runs before a curtail's first command, over every device
        per: dict[tuple[str, str], float] = {}
        total = 0.0
        for device_id, mode in modes.items():
            key = (status[device_id].group, mode)
            tok = per.get(key)
            if tok is None:
                dc = self.classes[key[0]]
                m = dc.mode(mode)
                tok = 0.0
                if dc.kind is DeviceKind.GPU and m is not None:
                    tok = self.counted[dc.name].get(mode, m.throughput_tokens_s)
                per[key] = tok
            total += tok
        return total

    def committed_tokens_s(self, now: float) -> float:
        """The committed inference at ``now`` (tokens/s), with its hourly profile."""
        inf = self.config.inference
        if not inf.hourly_profile:
            return inf.committed_tokens_s
        hour = datetime.fromtimestamp(now, self.config.site.tz).hour
        return inf.committed_tokens_s * inf.hourly_profile[hour]


def _instead(dc: DeviceClass, counted: Mapping[str, float]) -> dict[str, str]:
    """For each clock mode of the class, the mode a GPU that cannot lock takes in its
    place: of the modes without a lock, the least power that serves at least its tokens/s
    (its cap twin, where it has one), else the one that serves most; none: asleep."""
    plain = [m for m in dc.modes if m.sm_clock_mhz is None]
    out: dict[str, str] = {}
    for m in dc.modes:
        if m.sm_clock_mhz is None:
            continue
        tok = counted.get(m.name, m.throughput_tokens_s)
        enough = [x for x in plain if counted.get(x.name, x.throughput_tokens_s) >= tok]
        if enough:
            out[m.name] = min(enough, key=lambda x: x.power_kw).name
        elif plain:
            out[m.name] = max(plain, key=lambda x: counted.get(x.name, x.throughput_tokens_s)).name
        else:
            out[m.name] = SLEEP
    return out


def _lock_words(lock: ClockLock) -> str:
    if lock is None:
        return "SM clocks the driver's"
    if lock == CLOCKS_UNKNOWN:
        return "SM clock lock unknown"
    return f"SM clocks locked at {lock[0]}-{lock[1]} MHz"
