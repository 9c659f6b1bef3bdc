"""Which modes of its class each device can reach, so that the plan offers a mode only as
many units as can take it (``PlanInputs.mode_units_max``).

- A miner whose firmware family has no power target (``models.firmware.CAPABILITIES``:
  stock Antminer, an unknown firmware) and that reported no presets (``DeviceInfo.
  power_targets_w``) is woken at its own setting: asked for a target it has none to take
  (``adapters.payloads.run_target``), so it runs at its factory setting whatever mode the
  plan counts. It reaches one mode of its class, its *own-setting mode*: the mode whose
  power is nearest the model's nameplate wall power in the catalog (``models.catalog``,
  the manufacturer's spec; for a catalog class that is its ``stock`` profile), looked up by
  the class's ``model``, else by the model the miner reports. Where neither is in the
  catalog, the class's highest-power mode: the plan then never counts less power than the
  miner may draw. And it reaches sleep, as every device does.
- A miner whose firmware holds its power target at most at the model's standard power
  (``Capabilities.target_max_share``: Whatsminer, API v2 and v3) reaches no mode above
  that share of its nameplate (the catalog, by the class's model or the one it reports):
  sent such a target it runs at its standard power and the read-back never shows the
  mode. Where the model is not in the catalog, nothing known limits it.
- A miner whose firmware takes an exact power target only within a range it reported
  (``DeviceInfo.min_power_w`` / ``max_power_w``: Braiins OS+'s tuner, ``GetConstraints``)
  reaches no mode whose target (its power in watts, rounded as the adapter sends it) lies
  outside (sleep is no target: always reached). What the firmware does with such a target
  is not documented (the simulator refuses it, an assumption): either way not the mode.
  Presets' bounds are no such range (a target between or beyond them maps to a preset),
  nor a GPU's power limits (its adapter sets the nearest within them: devices.py).
- A miner whose firmware sets power by presets (``DeviceInfo.power_targets_w``: LuxOS
  profiles, VNish and stock work-mode presets) runs a mode at the highest preset at or
  below the mode's power (pyasic's ``set_power_limit``; ``adapters.payloads.choose_preset``),
  said in the plan's notes: the plan counts the mode's power, more than the miner draws (safe
  for a cap, optimistic for the mode's hashrate). A mode below the lowest preset is out of
  reach: LuxOS's adapter refuses it, the others would set the lowest preset, more power than
  the plan counts.
- A GPU whose SM clock locks NVML refuses (``DeviceModes.barred``) reaches no clock-locked
  mode of its class until its adapter's retry is due.
- A device whose identity is not known yet (never connected) counts as reaching every mode,
  as before this bound existed: nothing says what it lacks, and its first reading comes
  before most plans.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from adapters.base import DeviceInfo
from adapters.payloads import PRESET_TOLERANCE_W, choose_preset
from models.catalog import find_asic
from models.devices import DeviceClass, DeviceKind
from models.firmware import CAPABILITIES, PowerTarget
from scheduler.planner.inputs import PlanInputs


def _nameplate_w(dc: DeviceClass, info: DeviceInfo | None) -> float | None:
    """The model's nameplate wall power (the catalog), by the class's model or the one the
    miner reports; None where neither is in the catalog."""
    for model in (dc.model, info.model if info is not None else None):
        if not model:
            continue
        try:
            return find_asic(model).power_w
        except KeyError:
            continue
    return None


#: Firmware families (``DeviceInfo.family`` values) -> the highest power target they take,
#: as a share of the model's nameplate (``Capabilities.target_max_share``).
TARGET_MAX_SHARE = {
    f.value: c.target_max_share for f, c in CAPABILITIES.items() if c.target_max_share is not None
}


def above_target_max(dc: DeviceClass, info: DeviceInfo | None) -> frozenset[str]:
    """The modes of ``dc`` above the highest power target the miner's firmware takes
    (``Capabilities.target_max_share`` of its nameplate); empty where none is known."""
    share = TARGET_MAX_SHARE.get(info.family) if info is not None and info.kind == "asic" else None
    nameplate_w = _nameplate_w(dc, info) if share is not None else None
    if share is None or nameplate_w is None:
        return frozenset()
    top_w = share * nameplate_w * 1.01  # a mode written as the nameplate, rounded, is in
    return frozenset(m.name for m in dc.modes if m.power_kw * 1000.0 > top_w)


#: Firmware families whose power target is any figure within the firmware's range.
EXACT_TARGET_FAMILIES = frozenset(
    f.value for f, caps in CAPABILITIES.items() if caps.power_target is PowerTarget.EXACT
)


def target_range(info: DeviceInfo | None) -> tuple[float, float] | None:
    """The range (W) a miner's firmware takes an exact power target in, where it said."""
    if info is None or info.kind != "asic" or info.family not in EXACT_TARGET_FAMILIES:
        return None
    lo, hi = info.min_power_w, info.max_power_w
    return None if lo is None or hi is None or info.power_targets_w else (lo, hi)


def outside_range(dc: DeviceClass, span: tuple[float, float] | None) -> frozenset[str]:
    """The modes of ``dc`` whose target (W, rounded as sent) lies outside ``span``."""
    if span is None:
        return frozenset()
    lo, hi = span
    return frozenset(m.name for m in dc.modes if not lo <= round(m.power_kw * 1000.0) <= hi)


_NO_EFFECTS: tuple[Mapping[str, float], Mapping[str, float]] = (
    MappingProxyType({}),
    MappingProxyType({}),
)


def preset_effects(
    dc: DeviceClass, info: DeviceInfo | None
) -> tuple[Mapping[str, float], Mapping[str, float]]:
    """For a miner that sets power by presets: its modes below the lowest preset (mode ->
    that preset, W) and those it runs at a lower preset (mode -> the preset, W), as the
    adapters choose (``adapters.payloads.choose_preset``). Worked out once per (modes,
    presets): dispatch asks for every miner it places."""
    if info is None or info.kind != "asic" or not info.power_targets_w:
        return _NO_EFFECTS
    modes = tuple((m.name, m.power_kw * 1000.0) for m in dc.modes)
    return _preset_effects(modes, info.power_targets_w)


@functools.lru_cache(maxsize=256)
def _preset_effects(
    modes: tuple[tuple[str, float], ...], presets: tuple[float, ...]
) -> tuple[Mapping[str, float], Mapping[str, float]]:
    below, rounded = {}, {}
    for name, w in modes:
        chosen, _ = choose_preset(presets, w)
        if chosen > w + PRESET_TOLERANCE_W:  # the lowest preset, above the mode
            below[name] = chosen
        elif w - chosen > PRESET_TOLERANCE_W:
            rounded[name] = chosen
    return MappingProxyType(below), MappingProxyType(rounded)


def own_setting_mode(dc: DeviceClass, info: DeviceInfo | None) -> str:
    """The mode of ``dc`` a miner without a power target runs at once woken: the one nearest
    its model's nameplate power (the catalog), else the class's highest-power mode."""
    nameplate_w = _nameplate_w(dc, info)
    if nameplate_w is None:
        return max(dc.modes, key=lambda m: m.power_kw).name
    return min(dc.modes, key=lambda m: abs(m.power_kw * 1000.0 - nameplate_w)).name


#: Firmware families without a power target (``DeviceInfo.family`` values). An adapter
#: that names no family is in none: nothing known limits it.
NO_TARGET_FAMILIES = frozenset(
    f.value for f, caps in CAPABILITIES.items() if caps.power_target is PowerTarget.NONE
)


def no_power_target(info: DeviceInfo | None) -> bool:
    """A miner whose firmware has no power target and that reported no presets."""
    if info is None or info.kind != "asic" or info.power_targets_w:
        return False
    return info.family in NO_TARGET_FAMILIES


def out_of_reach(
    dc: DeviceClass, info: DeviceInfo | None, own_by_model: dict[str, str]
) -> frozenset[str]:
    """The modes of ``dc`` a miner cannot be sent: all but its own-setting mode when its
    firmware has no power target (``own_by_model`` caches the catalog look-up per model),
    those above its firmware's highest target or outside its range where it has one."""
    if not no_power_target(info):
        below = frozenset(preset_effects(dc, info)[0])
        return above_target_max(dc, info) | outside_range(dc, target_range(info)) | below
    assert info is not None
    own = own_by_model.get(info.model) or own_by_model.setdefault(
        info.model, own_setting_mode(dc, info)
    )
    return frozenset(m.name for m in dc.modes if m.name != own)


@dataclass(frozen=True)
class ClassReach:
    """How many of a class's devices reach each of its modes, and why fewer than all."""

    units: int  # devices counted (those that answer)
    by_mode: dict[str, int]
    no_target: int  # miners at their own setting
    no_lock: int  # GPUs refused clock locks
    own_mode: dict[str, int]  # own-setting mode -> miners that run at it
    capped: int = 0  # miners whose firmware takes no target above their standard power
    #: (min, max) W -> miners whose firmware takes power targets only in that range and
    #: that reach fewer modes for it
    ranged: dict[tuple[float, float], int] = field(default_factory=dict)
    #: miners that set power by presets and run some mode at another power (or not at all)
    preset_miners: int = 0
    #: (mode, its power W, lowest preset W) -> miners whose presets all lie above the mode
    below_presets: dict[tuple[str, float, float], int] = field(default_factory=dict)
    #: (mode, its power W, preset W) -> miners that run the mode at that lower preset
    rounded: dict[tuple[str, float, float], int] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        """Whether some mode is reached by fewer than all units."""
        return any(n < self.units for n in self.by_mode.values())

    def _presets_said(self) -> str | None:
        if not self.preset_miners:
            return None
        n = self.preset_miners

        def on(k: int) -> str:
            return "" if k == n else f" on {k}"

        items = [
            f"{m} ({w:g} W) is below the lowest preset ({low:g} W){on(k)}"
            for (m, w, low), k in self.below_presets.items()
        ] + [f"{m} ({w:g} W) runs at {p:g} W{on(k)}" for (m, w, p), k in self.rounded.items()]
        fix = " (modes at the presets' powers plan what the miners draw)" if self.rounded else ""
        return f"{n} miners set power by presets: {'; '.join(items)}{fix}"

    def note(self, name: str) -> str | None:
        """A line for the plan's notes where a mode is limited or set by presets at another
        power, else None."""
        presets = self._presets_said()
        short = {m: n for m, n in self.by_mode.items() if n < self.units}
        if not short:
            return None if presets is None else f"{name}: {presets}"
        limits = ", ".join(f"{m} to {n}" for m, n in short.items())
        why = []
        if self.no_target:
            own = ", ".join(f"{n} at {m}" for m, n in self.own_mode.items())
            why.append(
                f"{self.no_target} stock-firmware miners: no power target, they run at their "
                f"own setting ({own})"
            )
        if self.capped:
            why.append(
                f"{self.capped} miners' firmware takes no power target above the model's "
                "standard power"
            )
        for (lo, hi), n in self.ranged.items():
            why.append(f"{n} miners' firmware takes power targets only in [{lo:g}, {hi:g}] W")
        if self.no_lock:
            why.append(f"{self.no_lock} GPUs refuse SM clock locks")
        if presets is not None:
            why.append(presets)
        return f"{name}: modes limited ({limits} of {self.units} units): {'; '.join(why)}"


def class_reach(
    dc: DeviceClass,
    ids: Iterable[str],
    info: Callable[[str], DeviceInfo | None],
    barred: Callable[[str], frozenset[str]],
) -> ClassReach:
    """Count, over the devices ``ids`` of class ``dc``, those that reach each mode."""
    names = [m.name for m in dc.modes]
    own_mode: dict[str, int] = {}  # own-setting mode -> miners that reach it alone
    partly = dict.fromkeys(names, 0)  # GPUs barred from some modes: those they reach
    units = full = no_lock = capped = 0
    own_by_model: dict[str, str] = {}  # a catalog look-up per model, not per miner
    above_by: dict[tuple[str, str], frozenset[str]] = {}  # (family, model) -> modes above
    outside_by: dict[tuple[float, float] | None, frozenset[str]] = {None: frozenset()}
    ranged: dict[tuple[float, float], int] = {}
    power_w = {m.name: m.power_kw * 1000.0 for m in dc.modes}
    preset_miners = 0
    below_presets: dict[tuple[str, float, float], int] = {}
    rounded: dict[tuple[str, float, float], int] = {}
    asic, gpu = dc.kind is DeviceKind.ASIC, dc.kind is DeviceKind.GPU
    for device_id in ids:
        units += 1
        i = info(device_id) if asic else None
        if i is not None and no_power_target(i):
            own = own_by_model.get(i.model) or own_by_model.setdefault(
                i.model, own_setting_mode(dc, i)
            )
            own_mode[own] = own_mode.get(own, 0) + 1
            continue
        above = outside = under = frozenset[str]()
        if i is not None and i.power_targets_w:  # presets: a mode runs at one of them
            below, at = preset_effects(dc, i)
            if below or at:
                preset_miners += 1
                under = frozenset(below)
                for m, w in below.items():
                    k = (m, power_w[m], w)
                    below_presets[k] = below_presets.get(k, 0) + 1
                for m, w in at.items():
                    k = (m, power_w[m], w)
                    rounded[k] = rounded.get(k, 0) + 1
        if i is not None:  # a miner with a power target: its firmware's bounds on it
            key, span = (i.family, i.model), target_range(i)
            if key not in above_by:
                above_by[key] = above_target_max(dc, i)
            if span not in outside_by:
                outside_by[span] = outside_range(dc, span)
            above, outside = above_by[key], outside_by[span]
            if outside and span is not None:
                ranged[span] = ranged.get(span, 0) + 1
        if above or outside or under:
            capped += bool(above)
            for m in names:
                partly[m] += m not in above and m not in outside and m not in under
        elif gpu and (no := barred(device_id)):
            no_lock += 1
            for m in names:
                partly[m] += m not in no
        else:
            full += 1
    by_mode = {m: full + own_mode.get(m, 0) + partly[m] for m in names}
    no_target = sum(own_mode.values())
    return ClassReach(
        units,
        by_mode,
        no_target,
        no_lock,
        own_mode,
        capped,
        ranged,
        preset_miners,
        below_presets,
        rounded,
    )


def bound_inputs(
    inputs: PlanInputs, reaches: Mapping[int, ClassReach], names: Sequence[str]
) -> None:
    """Offer each class-mode of ``inputs`` only the units that reach it (``reaches``: class
    index -> its reach), each limit said in the plan's notes (``names``: the classes')."""
    bound = inputs.units[inputs.cm_class].astype(np.float64)
    limited = False
    for c, reach in reaches.items():
        note = reach.note(names[c])
        if note is not None:
            inputs.notes.append(note)
        if not reach.limited:
            continue
        limited = True
        for k in np.flatnonzero(inputs.cm_class == c):
            bound[k] = min(bound[k], reach.by_mode.get(inputs.mode_names[k], 0))
    inputs.mode_units_max = bound if limited else None
