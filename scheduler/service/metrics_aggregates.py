"""The per-class sums behind ``/metrics`` (power, units, hashrate, tokens by class and
mode; health by class), gathered in one pass over the devices and reused between renders
until a poll's readings or a device's mode changes them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric

from adapters.base import Health

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon


@dataclass
class ClassAggregates:
    """Per class (and mode) sums over every device, gathered in one pass."""

    #: (class, kind, mode) -> [power W, devices]
    power_units: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    hashrate_hs: dict[str, float] = field(default_factory=dict)  # asic classes read
    tokens_s: dict[str, float] = field(default_factory=dict)  # gpu classes read
    health: dict[tuple[str, str], int] = field(default_factory=dict)  # (class, health)
    #: :func:`readings_key` when the sums were made (a later render may reuse them)
    key: tuple[int, ...] = ()

    def families(self) -> Iterator[Metric]:
        power = GaugeMetricFamily(
            "gridsched_class_power_watts",
            "Power by class and mode, as the site's total counts it (a device not read at "
            "its last known power)",
            labels=["class", "kind", "mode"],
        )
        units = GaugeMetricFamily(
            "gridsched_class_units", "Devices by class and mode", labels=["class", "kind", "mode"]
        )
        hashrate = GaugeMetricFamily(
            "gridsched_mining_hashrate_hashes_per_second",
            "Measured hashrate by class",
            labels=["class"],
        )
        tokens = GaugeMetricFamily(
            "gridsched_inference_tokens_per_second",
            "Tokens per second by class (estimated: each GPU's mode read back, its utilisation)",
            labels=["class"],
        )
        for (c, k, mode), (w, n) in sorted(self.power_units.items()):
            power.add_metric([c, k, mode], round(w, 3))
            units.add_metric([c, k, mode], n)
        for c, v in sorted(self.hashrate_hs.items()):
            hashrate.add_metric([c], v)
        for c, v in sorted(self.tokens_s.items()):
            tokens.add_metric([c], v)
        yield power
        yield units
        yield hashrate
        yield tokens

    def health_family(self) -> Metric:
        h = GaugeMetricFamily(
            "gridsched_devices", "Devices by class and health", labels=["class", "health"]
        )
        for group in sorted({g for g, _ in self.health}):
            for health in Health:
                h.add_metric([group, health.value], self.health.get((group, health.value), 0))
        return h


def class_aggregates(d: Daemon, previous: ClassAggregates | None = None) -> ClassAggregates:
    """One pass over the fleet for every per-class family. It runs on the daemon's loop at
    every fresh render, so it is kept to dict look-ups: at 32,048 devices the two passes with
    an enum's ``.value`` per device it replaced took 0.4-0.6 s a render.

    ``previous``: the aggregates of an earlier render; its power, units and output are taken
    as they are when nothing they are summed from has changed since (no poll's readings, no
    mode changed: :func:`readings_key`), and only the health counts are made again, which
    change with every reading. A render a second apart during a sweep of the example site
    took 15 ms, 13 of them this walk (issue 21's profile of ``gridsched run``)."""
    key = readings_key(d)
    if previous is not None and previous.key == key:
        out = ClassAggregates(
            previous.power_units, previous.hashrate_hs, previous.tokens_s, key=key
        )
        out.health = health_counts(d)
        return out
    out = ClassAggregates(key=key)
    kind_of = {name: dc.kind.value for name, dc in d.devices.classes.items()}
    modes_of = d.devices.modes.get
    shown = d.devices.shown()  # a command awaiting its read-back: the mode it reads

    def mode_of(device_id: str, default: str) -> str:
        return shown.get(device_id) or modes_of(device_id, default)

    reading_of = d.power.readings.get
    # power as the site's total counts it: a device not read at its last known power (or
    # nameplate), never 0 W (the SRE's walk, session 24: classes summed 41 % under the site)
    counted = d.power.counted(d.clock.time())
    # per class: mode -> [power W, devices]; [hashes/s, tokens/s, read]
    modes: dict[str, dict[str, list[float]]] = {}
    output: dict[str, list[float]] = {}
    for device_id, st in d.fleet.status.items():
        group = st.group
        by_mode = modes.get(group)
        if by_mode is None:
            by_mode = modes[group] = {}
            output[group] = [0.0, 0.0, 0]
        out_ = output[group]
        mode = mode_of(device_id, "unknown")
        a = by_mode.get(mode)
        if a is None:
            a = by_mode[mode] = [0.0, 0]
        a[1] += 1
        a[0] += counted[device_id][1].kw * 1000.0
        t = reading_of(device_id)
        if t is not None:
            out_[0] += (t.hashrate_ths or 0.0) * 1e12
            out_[1] += t.tokens_s or 0.0
            out_[2] = 1
    for group, by_mode in modes.items():
        kind = kind_of[group]
        for mode, a in by_mode.items():
            out.power_units[(group, kind, mode)] = a
        hashes_s, tokens_s, read = output[group]
        if read and kind == "asic":
            out.hashrate_hs[group] = hashes_s
        if read and kind == "gpu":
            out.tokens_s[group] = tokens_s
    out.health = health_counts(d)
    return out


def readings_key(d: Daemon) -> tuple[int, ...]:
    """What the power, units and output sums are made from, as of now: the poll (its
    readings are handed over in ``Power.note``, which makes a new ``answered`` set; the
    devices first read take their modes in the same step), each reading heard between
    polls (a read-back's, counted in ``Power.generation``), the modes (every change counts
    ``DeviceModes.generation``), and their count."""
    return (
        d.poller.polls,
        id(d.power.answered),
        d.power.generation,
        d.devices.generation,
        len(d.devices.modes),
        len(d.power.readings),
    )


def health_counts(d: Daemon) -> dict[tuple[str, str], int]:
    """Devices by (class, health), counted in C (``Counter`` over ``zip`` and ``map``): a
    device's health changes with each of its readings, so it is counted at every render."""
    statuses = d.fleet.status.values()
    return dict(Counter(zip(map(_group_of, statuses), map(_health_of, statuses), strict=True)))


_group_of = attrgetter("group")
_health_of = attrgetter("health._value_")  # the plain str: hashing the enum costs more
