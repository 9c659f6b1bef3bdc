"""Dispatch: at each plan step's boundary (and after each poll), move devices to the modes
the plan's step counts for, with the fewest changes; power comes back in batches within the
site's ramp limit and the headroom under the cap. Staging sets up on sleeping miners the
wakes the plan has coming, so that each wake is one command when its step comes."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

from adapters import registry
from adapters.base import Health, ModeRequest
from adapters.faults import in_words, traceback_once
from adapters.fleet import Fleet, Outcome, OutcomeKind
from models.devices import DeviceKind
from models.economics import site_load_kw
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.counters import Tasks
from scheduler.service.daemon.devices import SLEEP, DeviceModes, mode_kw
from scheduler.service.daemon.measure import Power
from scheduler.service.daemon.plans import CurrentPlan
from scheduler.service.daemon.reach import out_of_reach
from scheduler.service.daemon.recorder import Recorder
from scheduler.service.daemon.signals import Signals

log = logging.getLogger("gridsched.daemon")
#: Floating-point slack when a step is compared with the ramp bucket or the headroom (kW).
RAMP_TOLERANCE_KW = 1e-9
#: How long after a confirmed command the dispatch that waited for its room runs again
#: (one for a burst of verdicts: a curtail's sleeps are read back within a second or two).
REDISPATCH_AFTER_S = 0.5
#: The longest wait before a mode a device refused is sent to it again (the wait starts
#: at the poll interval and doubles with each refusal of the same mode).
REFUSED_MAX_WAIT_S = 600.0


def ramp_batch(
    changes: list[tuple[float, str, str]],
    tokens: float,
    ramp_kw_per_min: float | None,
    elapsed_min: float,
    headroom_kw: float,
) -> tuple[list[tuple[str, str]], float, int]:
    """Which (device, mode) changes to make now: every decrease; increases while they fit the
    ramp limit and the headroom under the cap. ``changes`` are (meter kW delta, device, mode).
    A decrease frees no headroom here: it does once a reading shows it (a miner can accept
    its sleep and keep hashing), and the wakes it leaves wait for that (``Dispatcher.heard``).

    The ramp limit is a token bucket in kW: it fills at ``ramp_kw_per_min`` and holds at most
    a minute's worth, or one device's step when a device is larger than that, so that
    wake-ups come in batches and always make progress. Returns the changes, the tokens left
    and how many increases wait for a later call.
    """
    if ramp_kw_per_min is None:
        budget = math.inf
    else:
        biggest = max((d for d, _, _ in changes if d > 0), default=0.0)
        tokens = min(tokens + ramp_kw_per_min * elapsed_min, max(ramp_kw_per_min, biggest))
        budget = tokens
    picked: list[tuple[str, str]] = []
    deferred = 0
    for delta, device_id, mode in sorted(changes):
        if delta > 0:
            # a bucket filled in poll-sized sips sums to a hair under a device's step
            # (10 x 0.3 kW is 2.9999999999999996): that is the step, not a poll later
            if delta > budget + RAMP_TOLERANCE_KW or delta > headroom_kw + RAMP_TOLERANCE_KW:
                deferred += 1
                continue
            budget -= delta
            headroom_kw -= delta
        picked.append((device_id, mode))
    return picked, (tokens if ramp_kw_per_min is None else budget), deferred


def assign(
    ids: list[str],
    modes: dict[str, str],
    want: dict[str, int],
    barred: Mapping[str, frozenset[str]] | None = None,
    instead: Mapping[str, str] | None = None,
    since: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Give each device a mode so that ``want`` counts are met with the fewest changes.

    Devices already in a wanted mode keep it; awake devices move before sleeping ones wake;
    the rest sleep. ``since``: device -> when it last woke (awake) or was put to sleep
    (asleep), unix s: the plan counts units, and its min-on / min-off hold for the units
    changed last, so the devices woken last keep their places first and, of those asleep,
    the one asleep longest wakes first (a device not in it: long ago). ``barred``: device
    -> modes it cannot take (a GPU that cannot lock its clock, a miner without a power
    target); those modes go to devices that can, first; a place none left can fill is
    swapped with an unbarred device's place the barred one can take, else goes to a barred
    device as ``instead[mode]`` (asleep without one).
    """
    no = barred or {}
    left = dict(want)
    out: dict[str, str] = {}
    rest: list[str] = []
    when = since or {}
    if when:  # woken last first (a stable sort: otherwise as given)
        ids = sorted(ids, key=lambda i: -when.get(i, float("-inf")))
    for i in ids:
        m = modes.get(i)
        if m is not None and m != SLEEP and left.get(m, 0) > 0 and m not in no.get(i, ()):
            out[i] = m
            left[m] -= 1
        else:
            rest.append(i)

    def rank(i: str) -> tuple[bool, float, str]:
        # awake first, woken last first (a place changed keeps it within its min-on);
        # then asleep, asleep longest first
        asleep, at = modes.get(i, SLEEP) == SLEEP, when.get(i, float("-inf"))
        return asleep, (at if asleep else -at), i

    rest.sort(key=rank)
    order = list(left)
    if no:  # modes some cannot take first: the devices that can are not spent elsewhere
        order.sort(key=lambda mode: not any(mode in b for b in no.values()))
    unfilled: list[str] = []
    for mode in order:
        for _ in range(left[mode]):
            k = next((k for k, i in enumerate(rest) if mode not in no.get(i, ())), None)
            if k is None:
                unfilled.append(mode)
                continue
            out[rest.pop(k)] = mode
    # A place only an unbarred device can take, while the barred one left could take the
    # place an unbarred device was given: the two swap (a stock-firmware miner takes the
    # stock place, the miner with presets the eco one), so the plan's counts are met.
    given: dict[str, list[str]] = {}
    if unfilled:
        for i, m in out.items():
            if not no.get(i):
                given.setdefault(m, []).append(i)
    for mode in unfilled:
        barred_here = [k for k, i in enumerate(rest) if mode in no.get(i, ())]
        if not barred_here:
            continue
        # the first barred device that can take a place an unbarred one was given
        for k in barred_here:
            swap = next((m for m, js in given.items() if js and m not in no[rest[k]]), None)
            if swap is not None:
                i = rest.pop(k)
                out[given[swap].pop()] = mode
                out[i] = swap
                break
        else:
            out[rest.pop(barred_here[0])] = (instead or {}).get(mode, SLEEP)
    for i in rest:
        out[i] = SLEEP
    return out


class Dispatcher:
    def __init__(
        self,
        fleet: Fleet,
        devices: DeviceModes,
        power: Power,
        signals: Signals,
        plans: CurrentPlan,
        clock: Clock,
        recorder: Recorder,
        tasks: Tasks | None = None,
    ) -> None:
        self.config = devices.config
        self.fleet, self.devices, self.power = fleet, devices, power
        self.signals, self.plans, self.clock, self.recorder = signals, plans, clock, recorder
        self.tasks = tasks
        self.last_dispatch = clock.monotonic()
        self.ramp_tokens = 0.0  # kW of wake-ups the ramp limit allows now
        self.staging = False
        #: the last dispatch left wakes for lack of room while commands that free room
        #: waited for their read-back: a confirmed one dispatches again (:meth:`heard`)
        self.waiting_for_room = False
        self._again: asyncio.TimerHandle | None = None
        #: device -> (the mode it refused, when it may be sent it again (monotonic), the
        #: wait that set): a firmware that keeps its own setting is not asked at every poll
        self.refused: dict[str, tuple[str, float, float]] = {}
        self._lock = asyncio.Lock()

    def heard(self, out: Outcome) -> None:
        """A read-back verdict (the fleet's ``on_outcome``, after the devices'): a confirmed
        command may have freed the room the last dispatch's wakes waited for, which counted
        it only once read (``cautious``). Dispatch again ``REDISPATCH_AFTER_S`` later, once
        for a burst of verdicts, rather than at the next poll (up to ``poll_s`` later)."""
        if out.kind is not OutcomeKind.CONFIRMED or not self.waiting_for_room:
            return
        if self._again is not None or self.tasks is None or self.tasks.stopping:
            return  # stopping: the shutdown's read-backs must not wake what it put to sleep
        tasks = self.tasks

        def go() -> None:
            self._again = None
            tasks.spawn(self.dispatch(), "dispatch")

        self._again = asyncio.get_running_loop().call_later(REDISPATCH_AFTER_S, go)

    def stop(self) -> None:
        """The daemon stops: a dispatch armed by a verdict (``heard``) is disarmed."""
        if self._again is not None:
            self._again.cancel()
            self._again = None

    def _note_refusals(self, outcomes: list[Outcome], chosen: Mapping[str, str]) -> None:
        """A refused mode waits before it is sent again: the poll interval, doubling with
        each refusal of the same mode up to ``REFUSED_MAX_WAIT_S``; a mode taken, or
        another mode, starts afresh."""
        mono, first = self.clock.monotonic(), self.config.daemon.poll_s
        for out in outcomes:
            mode = chosen[out.device_id]
            if out.kind is OutcomeKind.REJECTED:
                held = self.refused.get(out.device_id)
                wait = first if held is None or held[0] != mode else held[2] * 2
                wait = min(wait, REFUSED_MAX_WAIT_S)
                # a hair short of the wait: the poll that ends it sends it
                self.refused[out.device_id] = (mode, mono + wait - 0.5, wait)
            elif out.ok:
                self.refused.pop(out.device_id, None)

    def usable(self, class_name: str) -> list[str]:
        """The class's devices that dispatch can command: those the latest poll read and
        the plan in force counted. The plan counts the others as a load it cannot move: its
        units are not theirs to take, and a wake sent in the dark would not be seen; one
        that answers again stays as it is until a plan counts it (put to sleep to meet the
        older plan's counts, the miners woken in its place were slept, then woken again)."""
        answered, counted = self.power.answered, self.plans.counted
        return [
            i
            for i in self.fleet.ids(class_name)
            if i in answered and (counted is None or i in counted)
        ]

    def targets(self, now: float) -> dict[str, str]:
        """Each managed device's mode for the plan step containing ``now``."""
        k = self.plans.index(now)
        plan = self.plans.plan
        if k is None or plan is None:
            return {}
        out: dict[str, str] = {}
        for cp in plan.classes:
            usable = self.usable(cp.name)
            if not usable:
                continue
            barred = None
            if self.devices.lock_modes.get(cp.name):  # GPUs that cannot lock: not sent locks
                barred = {i: b for i in usable if (b := self.devices.barred(i))}
            elif (dc := self.devices.classes[cp.name]).kind is DeviceKind.ASIC:
                # a miner without a power target runs at its own setting whatever it is sent:
                # the plan's other modes go to the miners that can take them (reach.py)
                own: dict[str, str] = {}
                info = self.fleet.by_id
                barred = {
                    i: b for i in usable if (b := out_of_reach(dc, info[i].info, own))
                } or None
            want = cp.units_at(k)
            instead = self.devices.instead.get(cp.name)
            dc = self.devices.classes[cp.name]
            since = None
            if dc.min_on_s > 0 or dc.min_off_s > 0:  # when each last woke or slept
                since = self.devices.dwell.last_change(usable)
            out.update(assign(usable, self.devices.modes, want, barred, instead, since))
        return out

    async def dispatch(self) -> list[Outcome]:
        if self.plans.hold or (self.tasks is not None and self.tasks.stopping):
            return []  # stopping: the shutdown posture is the last word
        async with self._lock:
            now = self.clock.time()
            targets = self.targets(now)
            if not targets:
                return []
            pue = self.config.site.pue
            changes: list[tuple[float, str, str]] = []
            mono, refused, waiting = self.clock.monotonic(), self.refused, 0
            status = self.fleet.status
            for device_id, mode in targets.items():
                shed = self.plans.shedding.get(device_id)
                current = shed or self.devices.modes.get(device_id)
                # one whose health says it refused another mode is sent the one it is in,
                # so that its health says what it does now, not what it refused before
                if current == mode and (
                    shed is not None or status[device_id].health is not Health.REJECTED
                ):
                    continue
                if (r := refused.get(device_id)) is not None and r[0] == mode and mono < r[1]:
                    waiting += 1  # refused it: asked again once its wait is over
                    continue
                dc = self.devices.class_of(device_id)
                before = mode_kw(dc, current) if current is not None else dc.idle_kw
                delta = float(site_load_kw(mode_kw(dc, mode) - before, pue, 0.0))
                changes.append((delta, device_id, mode))
            if not changes:
                return []
            elapsed_min = max(mono - self.last_dispatch, 0.0) / 60.0
            cap, events = self.signals.cap_now(now)
            if events:  # under a DR or fail-safe cap, the share the plan keeps free as well
                cap *= 1.0 - self.config.daemon.cap_margin_pct / 100.0
            headroom = cap - self.power.measured(now, cautious=True)["import_kw"]
            picked, self.ramp_tokens, deferred = ramp_batch(
                changes,
                self.ramp_tokens,
                self.config.site.ramp_up_kw_per_min,
                elapsed_min,
                headroom,
            )
            # room to come: a command awaiting its read-back, or a decrease in this batch
            lowers = any(d < 0 for d, _, _ in changes)
            self.waiting_for_room = deferred > 0 and (bool(self.fleet.pending) or lowers)
            requests: dict[str, ModeRequest] = {}
            chosen: dict[str, str] = {}
            for device_id, mode in picked:
                dc = self.devices.class_of(device_id)
                requests[device_id] = registry.mode_request(dc, mode)
                chosen[device_id] = mode
            self.last_dispatch = self.clock.monotonic()
            if not requests:
                return []
            outcomes = await self.fleet.apply(requests)
            self.devices.commanded(outcomes, chosen)
            self._note_refusals(outcomes, chosen)
            extra = {"deferred_by_ramp_or_cap": deferred, "refused_waiting": waiting}
            await self.recorder.outcomes("dispatch", outcomes, extra)
            return outcomes

    def stage_requests(self, now: float) -> dict[str, ModeRequest]:
        """The run request each miner read asleep will wake with, for wakes the plan has
        coming within ``stage_ahead_s``: predicted as dispatch will assign them, from the
        modes as they stand (the earliest step that wakes a miner names its mode)."""
        ahead = self.config.daemon.stage_ahead_s
        k = self.plans.index(now)
        plan = self.plans.plan
        if not ahead or k is None or plan is None:
            return {}
        modes = self.devices.modes
        out: dict[str, ModeRequest] = {}
        for cp in plan.classes:
            dc = self.devices.classes[cp.name]
            if dc.kind is not DeviceKind.ASIC:
                continue
            usable = self.usable(cp.name)
            asleep = {
                i
                for i in usable
                if modes.get(i) == SLEEP
                and (t := self.power.readings.get(i)) is not None
                and t.state == "sleeping"
            }
            last: dict[str, int] = {}
            for j in range(k + 1, len(plan.starts_s)):
                if not asleep or plan.starts_s[j] > now + ahead:
                    break
                want = cp.units_at(j)
                if want == last:
                    continue  # the same counts wake no one new
                last = want
                for device_id, mode in assign(usable, modes, want).items():
                    if device_id in asleep:
                        req = registry.mode_request(dc, mode)
                        if req.action == "run":
                            out[device_id] = req
                            asleep.discard(device_id)
        return out

    async def stage_ahead(self) -> list[Outcome]:
        """Set up on sleeping miners the wakes the plan has coming (a LuxOS profile), so that
        each wake is one command when its step comes; recorded in the audit as ``stage``."""
        try:
            requests = self.stage_requests(self.clock.time())
            if not requests:
                return []
            outcomes = await self.fleet.stage(requests)
            await self.recorder.outcomes("stage", outcomes)
            return outcomes
        except Exception as exc:  # a background task: its failure must be told, not lost
            log.error(
                "staging the coming wakes failed; each wake will send its profile: %s",
                in_words(exc),
                exc_info=traceback_once(exc),  # a bug: its traceback once per place
            )
            return []
        finally:
            self.staging = False
