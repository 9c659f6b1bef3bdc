"""The shed order: which step of which device gives up the least valuable kW first (least
efficient miners asleep, then GPUs down to their lowest offered cap, then GPUs asleep),
worked out ahead from the devices' modes so that a signal needs no thinking; and the
choice of steps that brings an excess to zero without serving fewer than the committed
tokens/s. Pure functions over :class:`DeviceModes`; the fast path (:mod:`.fastpath`)
walks what they give."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from adapters import registry
from adapters.base import ModeRequest
from models.devices import DeviceClass, DeviceKind
from models.economics import site_load_kw
from scheduler.planner.shedding import value_per_kw
from scheduler.service.daemon.devices import SLEEP, UNKNOWN, DeviceModes, top_mode


@dataclass(frozen=True)
class ShedStep:
    device_id: str
    request: ModeRequest
    mode: str  # the mode name it leaves the device in
    saves_kw: float  # at the meter
    tokens_lost: float = 0.0
    #: (saves_kw, tokens_lost) when the device's earlier step in the order (a GPU's cap
    #: down) was not taken: a GPU put to sleep from its full mode loses all it serves.
    alone: tuple[float, float] | None = None


#: One device's step less its id: (0 miners, 1 GPU cap-downs, 2 GPU sleeps; its value per
#: kW; (request, mode, saves_kw, tokens_lost, alone)), the same for every device of a class
#: in one mode with the same modes barred.
_Step = tuple[int, float, tuple[ModeRequest, str, float, float, "tuple[float, float] | None"]]


def shed_order(devices: DeviceModes) -> list[ShedStep]:
    """Least valuable kW first (the order of ``scheduler.planner.shedding``, over devices),
    of equal value the device awake longest first; precomputed so that a signal needs no
    thinking."""
    pue = devices.config.site.pue

    def at_meter(it_kw: float) -> float:  # a change in IT power, at the meter
        return float(site_load_kw(it_kw, pue, 0.0))

    groups: tuple[list[tuple[float, ShedStep]], ...] = ([], [], [])
    # Worked out once per (class, mode, modes barred), not per device: per device, it took
    # about 0.2 s of CPU at 9,548 devices, in every poll.
    memo: dict[tuple[str, str, frozenset[str]], list[_Step]] = {}
    for device_id, st in devices.fleet.status.items():
        dc = devices.classes[st.group]
        # A device that cannot be read stays in the order: it may be drawing (at its mode,
        # or the class's top mode if it was never read or its mode is not known).
        mode = devices.modes.get(device_id, UNKNOWN)
        # a GPU that cannot lock: no clock modes
        barred = _NONE if dc.kind is DeviceKind.ASIC else devices.barred(device_id)
        steps = memo.get((st.group, mode, barred))
        if steps is None:
            steps = memo[(st.group, mode, barred)] = _steps(devices, dc, mode, barred, at_meter)
        for bucket, value, step in steps:
            groups[bucket].append((value, ShedStep(device_id, *step)))
    order: list[ShedStep] = []
    # of equal value, the device awake longest first (a unit woken within its min-on last;
    # one never seen woken counts as awake for ever)
    woke = devices.dwell.woke_at
    for group in groups:
        ranked = sorted(group, key=lambda x: (x[0], woke.get(x[1].device_id, -math.inf)))
        order += [s for _, s in ranked]
    return order


_NONE: frozenset[str] = frozenset()


def _steps(
    devices: DeviceModes,
    dc: DeviceClass,
    mode: str,
    barred: frozenset[str],
    at_meter: Callable[[float], float],
) -> list[_Step]:
    """The steps of one device of ``dc`` in ``mode`` (none asleep)."""
    m = dc.mode(top_mode(dc) if mode == UNKNOWN else mode)
    if m is None:  # asleep
        return []
    saves = at_meter(m.power_kw - dc.idle_kw)
    if dc.kind is DeviceKind.ASIC:
        value = float(value_per_kw(m.hashrate_ths, saves))
        return [(0, value, (ModeRequest("sleep"), SLEEP, saves, 0.0, None))]
    # Down only into a mode the plan offers under the latency objective (the planner's
    # rule, devices.offered): one that misses it would leave committed serving missing
    # its objective through the event. None lower: the GPU may only sleep.
    offered = devices.offered[dc.name]
    tok = devices.counted[dc.name].get(m.name, m.throughput_tokens_s)
    lower = [
        x
        for x in dc.modes
        if offered.get(x.name, 0.0) > 0 and x.power_kw < m.power_kw and x.name not in barred
    ]
    low = min(lower, key=lambda x: x.power_kw, default=m)
    low_tok = offered[low.name] if low is not m else tok
    out: list[_Step] = []
    if low is not m:
        lost = max(tok - low_tok, 0.0)
        down_kw = at_meter(m.power_kw - low.power_kw)
        request = registry.mode_request(dc, low.name)  # with its clock lock, if any
        out.append(
            (1, float(value_per_kw(lost, down_kw)), (request, low.name, down_kw, lost, None))
        )
    low_kw = at_meter(low.power_kw - dc.idle_kw)
    alone = (saves, tok)  # asleep straight from its mode now
    value = float(value_per_kw(low_tok, low_kw))
    out.append((2, value, (ModeRequest("sleep"), SLEEP, low_kw, low_tok, alone)))
    return out


def choose(
    order: list[ShedStep],
    excess_kw: float,
    unread: set[str],
    tokens: float,
    floor: float,
    above: dict[str, float],
) -> dict[str, ShedStep]:
    """The steps that bring ``excess_kw`` to zero, in order, never serving fewer than
    ``floor`` tokens/s. Devices that cannot be read (``unread``) count in the load at their
    last known power and may be drawing it: each is told too (its first step), but what it
    would save is not counted on: it may not follow, and nothing read would show it.
    ``above``: kW a device draws beyond its step's figure (saved too when it sheds)."""
    chosen: dict[str, ShedStep] = {}
    for step in order:
        if excess_kw <= 0:
            break
        saves_kw, lost = step.saves_kw, step.tokens_lost
        if step.alone is not None and step.device_id not in chosen:
            saves_kw, lost = step.alone  # not capped down first: it loses all it serves
        if lost > 0 and tokens - lost < floor:
            continue  # committed inference is served first
        if step.device_id in chosen and step.request.action != "sleep":
            continue
        if step.device_id in unread:
            continue  # told below, but not counted on
        chosen[step.device_id] = step  # a GPU already capped down may still go to sleep
        excess_kw -= saves_kw + above.get(step.device_id, 0.0)
        tokens -= lost
    for step in order:
        if step.device_id not in unread or step.device_id in chosen:
            continue
        if step.tokens_lost > 0 and tokens - step.tokens_lost < floor:
            continue
        chosen[step.device_id] = step
        tokens -= step.tokens_lost
    return chosen
