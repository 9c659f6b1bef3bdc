"""Site power from what was read, what was estimated and what the meter says, and whether
the cap in force is met, not met, or cannot be shown either way.

Pure functions over the daemon's state (no I/O), so that the rules are tested without
sockets. The rules (issue 16, "power is never assumed away"):

- A device read in the latest poll, or since (a command's read-back), counts at its newest
  reading. One that was not (unreachable, unparseable replies, no power figure) counts at
  its last known power, or at its commanded mode's nameplate power if it was never read,
  or at its class's most power-hungry mode if nothing is known: never at 0 kW.
- With a site meter read in the latest poll, import is the meter's figure; the gap between
  it and the devices' sum is reported. A meter that cannot be read falls back to devices.
- Compliance with the cap: ``met`` when import (the meter's, or every device read) is at or
  under it, or when even the unread devices at full power would fit; ``not_met`` when what
  was read alone is above it; otherwise ``unverified``, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from models.economics import site_load_kw

#: Import within this much of the cap counts as at the cap (float noise, kW).
CAP_TOLERANCE_KW = 1e-3


class ComplianceState(StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class DevicePower:
    """One device's power for the accounting (IT kW, before PUE)."""

    kw: float
    read: bool  # from a reading in the latest poll or since; False: estimated
    worst_kw: float  # the most it could draw (its reading when read)


@dataclass(frozen=True)
class SitePower:
    """The devices' side of the account, at the meter (PUE and base load applied)."""

    asic_kw: float
    gpu_kw: float
    unmanaged_kw: float
    devices_import_kw: float  # from devices: read + estimated, PUE, base load
    estimated_kw: float  # at the meter, the part of it from devices not read
    worst_import_kw: float  # with every unread device at its worst
    devices_unread: int
    unmanaged_worst_kw: float = 0.0  # classes without adapters, every unit at its top mode


def at_work(t: Any) -> bool:
    """Whether a reading shows a device at work: running, or a miner in transition with a
    hashrate (configured asleep and still hashing: a stock build that applies a sleep only
    on a reboot, asic-rs issue 245, or one still ramping down). Such a miner draws power,
    whatever its configuration says (walk 26: counted at its sleep's 15 W before)."""
    return bool(t.state == "running" or (t.state == "transition" and (t.hashrate_ths or 0) > 0))


def estimate_kw(
    last_kw: float | None, mode_kw: float | None, max_mode_kw: float
) -> tuple[float, float]:
    """An unread device's power and the most it could draw: its last known power, else its
    mode's nameplate, else its class's most power-hungry mode."""
    if last_kw is not None:
        return last_kw, max(last_kw, max_mode_kw)
    if mode_kw is not None:
        return mode_kw, max(mode_kw, max_mode_kw)
    return max_mode_kw, max_mode_kw


def site_power(
    devices: Mapping[str, tuple[str, DevicePower]],
    unmanaged_kw: float,
    pue: float,
    base_load_kw: float,
    unmanaged_worst_kw: float = 0.0,
) -> SitePower:
    """Sum ``devices`` (device -> (kind, power)) into the site's account. Classes without
    adapters (``unmanaged_kw``, as planned) are nothing read either: estimated, at most
    ``unmanaged_worst_kw``."""
    it = {"asic": 0.0, "gpu": 0.0}
    est = worst_extra = 0.0
    unread = 0
    for kind, p in devices.values():
        it[kind] += p.kw
        if not p.read:
            unread += 1
            est += p.kw
            worst_extra += max(p.worst_kw - p.kw, 0.0)
    load = float(site_load_kw(it["asic"] + it["gpu"] + unmanaged_kw, pue, base_load_kw))
    worst_extra += max(unmanaged_worst_kw - unmanaged_kw, 0.0)
    return SitePower(
        asic_kw=it["asic"],
        gpu_kw=it["gpu"],
        unmanaged_kw=unmanaged_kw,
        devices_import_kw=load,
        estimated_kw=float(site_load_kw(est + unmanaged_kw, pue, 0.0)),
        worst_import_kw=load + float(site_load_kw(worst_extra, pue, 0.0)),
        devices_unread=unread,
        unmanaged_worst_kw=unmanaged_worst_kw,
    )


@dataclass(frozen=True)
class Compliance:
    state: ComplianceState
    reason: str
    source: str  # "meter" or "devices"
    cap_kw: float
    import_kw: float
    devices_import_kw: float
    estimated_kw: float
    devices_unread: int
    meter_kw: float | None = None
    meter_gap_kw: float | None = None  # meter minus the devices' sum
    meter_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 3)
        return out


def judge(
    cap_kw: float,
    power: SitePower,
    meter_kw: float | None = None,
    meter_error: str | None = None,
) -> Compliance:
    """Whether import meets ``cap_kw``. ``meter_kw``: the meter's reading from the latest
    poll (None: no meter, or it could not be read, then ``meter_error`` says why)."""

    def result(
        state: ComplianceState, reason: str, import_kw: float, meter: float | None = None
    ) -> Compliance:
        return Compliance(
            state=state,
            reason=reason,
            source="devices" if meter is None else "meter",
            cap_kw=cap_kw,
            import_kw=import_kw,
            devices_import_kw=power.devices_import_kw,
            estimated_kw=power.estimated_kw,
            devices_unread=power.devices_unread,
            meter_kw=meter,
            meter_gap_kw=None if meter is None else meter - power.devices_import_kw,
            meter_error=meter_error,
        )

    if meter_kw is not None:
        met = meter_kw <= cap_kw + CAP_TOLERANCE_KW
        word = "at or under" if met else "above"
        reason = f"the site meter reads {meter_kw:.3f} kW, {word} the cap of {cap_kw:.3f} kW"
        state = ComplianceState.MET if met else ComplianceState.NOT_MET
        return result(state, reason, meter_kw, meter_kw)
    why_no_meter = f"; the site meter cannot be read ({meter_error})" if meter_error else ""
    load = power.devices_import_kw
    n = power.devices_unread
    if n == 0 and power.unmanaged_worst_kw == 0:
        met = load <= cap_kw + CAP_TOLERANCE_KW
        word = "at or under" if met else "above"
        reason = f"every device read: import {load:.3f} kW, {word} the cap of {cap_kw:.3f} kW"
        state = ComplianceState.MET if met else ComplianceState.NOT_MET
        return result(state, reason + why_no_meter, load)
    devices = f"{n} device{'s' if n != 1 else ''}"
    if power.unmanaged_worst_kw > 0:  # counted as planned: nothing reads them
        devices += f" and the classes without adapters ({power.unmanaged_kw:.3f} kW as planned)"
    read_kw = load - power.estimated_kw
    if read_kw > cap_kw + CAP_TOLERANCE_KW:
        reason = (
            f"what was read alone ({read_kw:.3f} kW) is above the cap of {cap_kw:.3f} kW; "
            f"{devices} without a power reading"
        )
        state = ComplianceState.NOT_MET
    elif power.worst_import_kw <= cap_kw + CAP_TOLERANCE_KW:
        reason = (
            f"{devices} without a power reading, but even at their most "
            f"({power.worst_import_kw:.3f} kW in all) import is under the cap of {cap_kw:.3f} kW"
        )
        state = ComplianceState.MET
    else:
        reason = (
            f"{devices} without a power reading (not answering, or a firmware that reports "
            f"none) and no meter covers them: import estimated {load:.3f} kW "
            f"({power.estimated_kw:.3f} kW of it at their last known power or their mode's "
            f"nameplate) against a cap of {cap_kw:.3f} kW"
        )
        state = ComplianceState.UNVERIFIED
    return result(state, reason + why_no_meter, load)
