"""What the daemon says of itself: ``/v1/status``, ``/healthz``'s verdict, the inference
latency objectives, and the start-up line on devices that do not answer.

A device that cannot be read (unreachable, or answering what cannot be parsed) is not under
control: ``/healthz`` answers 503 while no device of the site can be read, and 200 while
some can (``/v1/status`` ``not_answering``, ``gridsched_devices{health=...}`` and the
alerts GridschedDevicesUnreachable and GridschedMostDevicesNotAnswering say how many)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from adapters.base import Health
from adapters.fleet_shards import ShardedFleet
from adapters.outcomes import DeviceStatus
from models.devices import DeviceKind
from models.signals import EventType
from scheduler.service.daemon.devices import UNKNOWN
from scheduler.service.power import judge, site_power

if TYPE_CHECKING:
    from scheduler.service.daemon.core import Daemon

log = logging.getLogger("gridsched.daemon")

_GROUP = attrgetter("group")
_HEALTH = attrgetter("health")

#: A device in one of these cannot be read: what it draws and does is not known.
NOT_ANSWERING = frozenset({Health.UNREACHABLE, Health.UNREADABLE})
_ANSWERS = frozenset(Health) - NOT_ANSWERING
#: How many devices of a class that do not answer are named: in the start-up log line,
#: and in ``/v1/status`` (the others are counted; ``gridsched fleet status`` lists each).
LOG_FIRST, STATUS_FIRST = 3, 10


def health_problem(d: Daemon, now: float) -> str | None:
    """What makes the daemon unhealthy (``/healthz`` 503), or None: no device of the site
    answers, no plan yet, a failed re-plan (even while the last good plan still covers
    now), a stale plan."""
    if (dark := _none_answers(d)) is not None:
        return dark
    age = d.plans.age_s(now)
    if d.plans.error is not None:
        return f"last re-plan failed: {d.plans.error}"
    if age is None:
        return "no plan yet"
    if age > d.config.daemon.max_plan_age_s:
        return "plan is stale"
    return d.plans.gap(now)


def _none_answers(d: Daemon) -> str | None:
    """The reason when the site has devices and none can be read; stops at the first
    device that answers (the usual case: one look)."""
    status = d.fleet.status
    if not status or any(map(_ANSWERS.__contains__, map(_HEALTH, status.values()))):
        return None
    first = next(iter(status.values()))
    return (
        f"no device answers: 0 of {len(status)} devices can be read, nothing is under "
        f"control (first: {first.device_id}: {_why(first)}); check their addresses in the "
        "site file and the network, /v1/status not_answering"
    )


def _why(st: DeviceStatus) -> str:
    """A device's last error in words, without the device's id in front."""
    error = st.last_error or "no answer yet"
    return error.removeprefix(f"{st.device_id}: ")


def not_answering(
    d: Daemon, by_class: dict[str, dict[str, Any]] | None = None, first: int = STATUS_FIRST
) -> dict[str, Any]:
    """``/v1/status`` ``not_answering``: the devices that cannot be read, of how many; per
    class with such devices, how many of how many and the ``first`` few, each with its
    health and last error in words. Counted from the classes' health (``by_class``, as
    :func:`_classes` makes it); the devices are walked only when some do not answer, the
    Python loop naming the first few ending once each class has its few."""
    by_class = _classes(d) if by_class is None else by_class
    classes: dict[str, dict[str, Any]] = {}
    for g, c in by_class.items():
        if n := sum(c["health"][h.value] for h in NOT_ANSWERING):
            classes[g] = {"devices": n, "of": c["devices"], "first": {}}
    if classes:
        rows = d.fleet.status.values()
        todo = len(classes)
        for st in compress(rows, map(NOT_ANSWERING.__contains__, map(_HEALTH, rows))):
            c = classes[st.group]
            named = c["first"]
            if len(named) < first:
                named[st.device_id] = {"health": st.health.value, "error": _why(st)}
                todo -= len(named) == min(first, c["devices"])
                if todo == 0:
                    break
    return {
        "devices": sum(c["devices"] for c in classes.values()),
        "of": sum(c["devices"] for c in by_class.values()),
        "classes": classes,
    }


def log_answers(d: Daemon) -> None:
    """After the fleet's first connect and reading: one line per class with devices that do
    not answer (how many, the first few and why) and one for the site, whatever its size.
    Later changes of a device's health are the fleet's own lines (adapters/fleet_health.py)."""
    seen = not_answering(d, first=LOG_FIRST)
    n, of = seen["devices"], seen["of"]
    if n == 0:
        log.info("all %d devices answer", of)
        return
    for group, c in seen["classes"].items():
        named = "; ".join(f"{i}: {row['error']}" for i, row in c["first"].items())
        more = c["devices"] - len(c["first"])
        log.warning(
            "%s: %d of %d devices do not answer: %s%s",
            group, c["devices"], c["of"], named, f"; and {more} more" if more else "",
        )  # fmt: skip
    level = logging.ERROR if n == of else logging.WARNING
    log.log(
        level,
        "%d of %d devices answer, %d do not%s; /v1/status not_answering and "
        "`gridsched fleet status` list them",
        of - n, of, n, ": nothing is under control" if n == of else "",
    )  # fmt: skip


def inference_sla(d: Daemon) -> dict[str, dict[str, Any]]:
    """Latency objectives met / missed / unverified (unverified without a feed)."""
    if d.demand is not None:
        return d.demand.objectives()
    inf = d.config.inference
    return {
        k.removesuffix("_s"): {"state": "unverified", "value_s": None, "target_s": v}
        for k in ("ttft_p95_s", "itl_p95_s")
        if (v := getattr(inf, k)) is not None
    }


def _classes(d: Daemon) -> dict[str, dict[str, Any]]:
    """Per class: devices, health, modes, why a mode is unknown, drifts, refused clock locks.
    One pass of C-level counting over the devices (at 32,000 devices the per-device Python
    loop held the event loop for ~170 ms a request); nothing is cached, so it is never stale."""
    status = d.fleet.status
    ids = list(status)
    rows = list(status.values())
    groups = list(map(_GROUP, rows))
    modes = list(map(d.devices.modes.get, ids, repeat(UNKNOWN, len(ids))))
    health_n = Counter(zip(groups, map(_HEALTH, rows), strict=True))
    by_class: dict[str, dict[str, Any]] = {}
    for (group, health), n in health_n.items():  # classes in the order of their first device
        if (c := by_class.get(group)) is None:
            c = by_class[group] = {
                "devices": 0,
                "health": {h.value: 0 for h in Health},
                "modes": {},
                "unknown": {},
                # what its devices changed behind gridsched's back, since the start (put back)
                "drifted": d.devices.drifts.get(group, {}),
                # GPUs whose SM clock locks NVML refuses: their class's clock modes not sent
                "clock_lock_refused": {},
            }
        c["devices"] += n
        c["health"][health.value] = n
    counts = Counter(zip(groups, modes, strict=True))
    for device_id, mode in d.devices.shown().items():  # awaiting a read-back: as read
        group = status[device_id].group
        counts[(group, d.devices.modes.get(device_id, UNKNOWN))] -= 1
        counts[(group, mode)] += 1
    for (group, mode), n in counts.items():
        if n:
            by_class[group]["modes"][mode] = n
    # why not: dispatch commands it again rather than believe it
    for i in compress(range(len(ids)), map(UNKNOWN.__eq__, modes)):
        t = rows[i].telemetry
        by_class[groups[i]]["unknown"][ids[i]] = (
            "not read yet"
            if t is None
            else "; ".join(t.errors) or "its reading matches no mode of its class"
        )
    # only a GPU class's devices can have an NVML adapter (the registry builds no other);
    # a group no class names (none in a daemon) is asked device by device, as before
    classes = d.devices.classes
    gpu = {g for g in by_class if (dc := classes.get(g)) is None or dc.kind is DeviceKind.GPU}
    for i in compress(range(len(ids)), map(gpu.__contains__, groups)):
        if (why := d.devices.lock_refused(ids[i])) is not None:
            by_class[groups[i]]["clock_lock_refused"][ids[i]] = why
    return by_class


def class_caps(d: Daemon, now: float) -> list[dict[str, Any]]:
    """Each cap in force on a group of classes, with those classes' power at the meter (PUE,
    no base load) judged against it by the site's rules: a device not read counts at its
    last known power, and a group with devices not read is unverified unless even their
    worst fits."""
    out = []
    for classes, cap_kw in d.signals.class_caps(now).items():
        devices = {
            i: (d.devices.classes[st.group].kind.value, d.power.device(i, False))
            for i, st in d.fleet.status.items()
            if st.group in classes
        }
        group = site_power(devices, 0.0, d.config.site.pue, 0.0)
        c = judge(cap_kw, group)
        out.append(
            {
                "classes": list(classes),
                "cap_kw": cap_kw,
                "power_kw": round(group.devices_import_kw, 3),
                "state": c.state.value,
                "reason": c.reason,
            }
        )
    return out


def fleet_workers(d: Daemon) -> dict[str, Any]:
    """The fleet's worker processes (``[daemon] fleet_workers`` > 1): how many run, which
    are down (their miners unreachable until started again) and how many times one was
    started again since the daemon started. A fleet in the daemon's process has none: 0
    workers, none down, no restarts."""
    fleet = d.fleet
    states = fleet.worker_states() if isinstance(fleet, ShardedFleet) else []
    down = [k for k, s in enumerate(states) if s == "down"]
    return {
        "workers": sum(1 for s in states if s != "idle"),  # a worker with no miners: none
        "running": states.count("running"),
        "down": len(down),
        "down_workers": down,
        "restarts": fleet.restarts if isinstance(fleet, ShardedFleet) else 0,
    }


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(now - at, 1)


def status(d: Daemon) -> dict[str, Any]:
    """``/v1/status``: import and cap, compliance, events, fail-safe, plan, feeds, classes."""
    now = d.clock.time()
    cap, events = d.signals.cap_now(now)
    m = d.power.measured(now)
    plans, feeds = d.plans, d.feeds
    classes = _classes(d)
    return {
        "site": d.config.site.name,
        "now": datetime.fromtimestamp(now, UTC).isoformat(),
        "uptime_s": round(now - d.started_at, 1),
        "import_kw": round(m["import_kw"], 3),
        "cap_kw": None if math.isinf(cap) else cap,
        # the billing period (a month in the site's time zone), its start and peak import
        "billing_peak": d.power.billing.status(now),
        # caps on part of the site (events naming classes): kW at the meter, and whether
        # those classes meet them (met / not_met / unverified, as for the site's cap)
        "class_caps": class_caps(d, now),
        # met / not_met / unverified, the reason, and how much of import is estimated
        "compliance": d.power.compliance(cap, now).as_dict(),
        "it_kw": {"asic": round(m["asic_kw"], 3), "gpu": round(m["gpu_kw"], 3)},
        "active_events": [e.model_dump(mode="json", exclude_none=True) for e in events],
        # the price signals in force now, the one that prices the plan (highest priority)
        # first: active_events has the caps alone (a utility's price test looked lost)
        "price_events": price_events(d, now),
        # OpenADR payloads received and not acted on, with the reason (notices)
        "openadr_not_acted": d.signals.not_acted(now),
        "openadr_ven": d.ven.status() if d.ven is not None else None,
        "failsafe": d.failsafe.reason(now),
        "audit": d.store.audit_status(),  # the chain's head: a witness to copy
        "failsafe_posture": d.config.daemon.failsafe_posture.value,
        "cap_error": d.signals.cap_error,
        "class_cap_error": d.signals.class_cap_error,
        "plan": {
            "age_s": _age(now, plans.made_at),
            "status": plans.solver_status,
            "error": plans.error,
            "ok": plans.error is None and plans.plan is not None,
            "covers_now": plans.index(now) is not None,
            "failures": d.counters.plan_failures,
        },
        "store": {"error": d.recorder.error, "write_failures": d.counters.store_failures},
        # accepted commands awaiting their read-back, and the verdicts since the start
        "read_back": {"awaiting": len(d.fleet.pending), **d.counters.readbacks},
        "task_failures": dict(d.counters.task_failures),
        # past the limit a connection fails as a device fault (adapters/fds.py)
        "open_files": {
            "limit": d.open_files[0],
            "needed": d.open_files[1],
            "short": d.open_files[0] < d.open_files[1],
        },
        "prices": {
            "label": None if feeds.prices is None else feeds.prices.label,
            "age_s": _age(now, feeds.prices_ok_at),
            "error": feeds.price_error,
        },
        "hashprice": {
            "usd_per_ths_day": feeds.mining().hashprice_usd_per_ths_day,
            "source": d.config.daemon.hashprice_feed.kind.value,
            "age_s": _age(now, feeds.hashprice_ok_at),
            "error": feeds.hashprice_error,
        },
        "classes": classes,
        # devices that cannot be read: how many, per class, the first few and why
        "not_answering": not_answering(d, classes),
        "fleet_workers": fleet_workers(d),
        "hold_dispatch": plans.hold,
        "inference_demand": None if d.demand is None else d.demand.status(),
        "inference_sla": inference_sla(d),
    }


def price_events(d: Daemon, now: float, limit: int = 20) -> list[dict[str, Any]]:
    """The price signals in force at ``now``, the highest priority first (the one the plan
    prices at where they overlap), at most ``limit``."""
    live = [
        e
        for e in d.signals.book().live(now)
        if e.type is EventType.PRICE and e.start_utc.timestamp() <= now
    ]
    live.sort(key=lambda e: (-e.priority, e.start_utc, e.id))
    return [e.model_dump(mode="json", exclude_none=True) for e in live[:limit]]
