"""A simulated ASIC miner's physics: power, hashrate and temperature over time.

What every firmware family's simulator shares, whatever its API: the miner mines at a
preset's watts and TH/s, sleeps, wakes, changes preset and reboots, each taking the time
a real miner takes. Dynamics are evaluated lazily from the clock (monotonic by default, or
one a test drives): sleeping takes ``sleep_s`` (about 5 s on LuxOS), waking ``wake_s``
(10 s or more: boot, then a hashrate ramp), a profile change ``retune_s``; the
temperature follows power with a first-order lag.

The preset ladder is LuxOS's 25 frequency profiles around the catalog's nameplate
(:func:`presets_for`); families with an exact power target (Braiins OS+, Whatsminer) add a
preset per target (:meth:`MinerPhysics.set_target`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from models import catalog

SLEEP_W = catalog.ASIC_SLEEP_KW * 1000.0
BOOT_W = 120.0  # control board and fans at full speed while booting
#: A waking miner boots (at BOOT_W, no hashrate) for this share of its wake time, then ramps.
WAKE_HOLD_SHARE = 0.4


@dataclass(frozen=True)
class Preset:
    """A LuxOS frequency profile: name, watts and TH/s at the wall."""

    name: str
    watts: float
    ths: float
    frequency_mhz: int
    voltage: float


def presets_for(model: str) -> tuple[Preset, ...]:
    """LuxOS's 25 built-in profiles for a catalog model, lowest first: ``default`` at the
    catalog's nameplate, the others named by their frequency as LuxOS names them
    (``520MHz``: Luxor's luxos-tooling, ``atm`` reply ``"580MHz"``; pyasic's ``atmset``,
    ``"145MHz"``). Hashrate follows frequency (Luxor, "Features": an S19j Pro gives
    104 TH/s at 545 MHz, 100 at 525, 96 at 505); power follows frequency times voltage
    squared (a chip's dynamic power, P = a C V^2 f), both scaled from the nameplate.

    The steps: 25 MHz and 0.1 V from the default the EEPROM holds, 16 down and 8 up, 25
    profiles in all (docs.luxor.tech, firmware "Features", "Preset Profiles"). Its example,
    an S19j Pro 104T at 545 MHz and 13.4 V, is every model's default here (the simulator
    has no EEPROM to read)."""
    spec = catalog.find_asic(model)
    mhz0, volts0 = 545, 13.4
    out = []
    for k in range(-16, 8 + 1):
        mhz = mhz0 + 25 * k
        volts = round(volts0 + 0.1 * k, 2)
        f = mhz / mhz0
        out.append(
            Preset(
                name="default" if k == 0 else f"{mhz}MHz",
                watts=round(spec.power_w * f * (volts / volts0) ** 2),
                ths=round(spec.hashrate_ths * f, 2),
                frequency_mhz=mhz,
                voltage=volts,
            )
        )
    return tuple(out)


def wake_reaches_s(wake_s: float, share: float) -> float:
    """Seconds from a wakeup until the hashrate reaches ``share`` of the preset's."""
    return wake_s * (WAKE_HOLD_SHARE + (1.0 - WAKE_HOLD_SHARE) * share)


@dataclass
class _Ramp:
    """Power and hashrate moving linearly from one point to another."""

    t0: float
    duration: float
    w0: float
    w1: float
    ths0: float
    ths1: float
    hold_s: float = 0.0  # a boot phase at BOOT_W before the ramp starts

    def at(self, now: float) -> tuple[float, float]:
        dt = now - self.t0
        if dt < self.hold_s:
            return BOOT_W, 0.0
        span = max(self.duration - self.hold_s, 1e-9)
        f = min(1.0, (dt - self.hold_s) / span)
        w0 = BOOT_W if self.hold_s > 0 else self.w0
        return w0 + (self.w1 - w0) * f, self.ths0 + (self.ths1 - self.ths0) * f

    def done(self, now: float) -> bool:
        return now - self.t0 >= self.duration


@dataclass
class MinerState:
    """What the miner is doing; ``phase`` is mining, sleeping, waking or rebooting."""

    profile: str
    phase: str = "mining"
    ramp: _Ramp | None = None
    temp_c: float = 60.0
    last_eval: float = 0.0
    energy_j: float = 0.0
    boot_at: float = 0.0
    accepted: int = 0


@dataclass
class MinerPhysics:
    """One simulated miner's hardware at ``host`` (its address names it; its MAC derives
    from it), whatever firmware and API serve it."""

    host: str
    model: str = "Antminer S19j Pro"
    sleep_s: float = 5.0
    wake_s: float = 12.0
    retune_s: float = 3.0
    reboot_s: float = 30.0
    ambient_c: float = 30.0
    clock: Callable[[], float] = time.monotonic
    presets: tuple[Preset, ...] = ()

    def __post_init__(self) -> None:
        if not self.presets:
            self.presets = presets_for(self.model)
        now = self.clock()
        p = self.preset("default")
        self.state = MinerState(profile=p.name, last_eval=now, boot_at=now)
        self.state.temp_c = self._steady_temp(p.watts)
        self.target_w = p.watts  # the exact power target, where the firmware has one
        self.commanded_at = 0.0  # unix time a sleep, wake or profile change last reached it
        self.slept_at = 0.0  # unix time the first sleep since the last wake reached it
        self.woken_at = 0.0  # unix time the last wake reached it
        self._mac = "02:47:53:{:02X}:{:02X}:{:02X}".format(
            *tuple(int(x) & 0xFF for x in ([*self.host.split("."), "0", "0", "0"])[1:4])
        )

    def preset(self, name: str) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        raise KeyError(name)

    def _steady_temp(self, watts: float) -> float:
        return self.ambient_c + 38.0 * watts / 3500.0

    def power_and_hashrate(self) -> tuple[float, float]:
        now = self.clock()
        st = self.state
        if st.ramp is not None:
            w, ths = st.ramp.at(now)
            if st.ramp.done(now):
                st.ramp = None
                if st.phase == "waking":
                    st.phase = "mining"
            return w, ths
        if st.phase in ("sleeping", "rebooting"):
            return (SLEEP_W if st.phase == "sleeping" else 0.0), 0.0
        p = self.preset(st.profile)
        wobble = 1.0 + 0.004 * math.sin(now / 7.0 + hash(self.host) % 10)
        return p.watts * wobble, p.ths * wobble

    def _advance(self) -> tuple[float, float]:
        """Integrate energy and temperature up to now; return (W, TH/s)."""
        now = self.clock()
        st = self.state
        w, ths = self.power_and_hashrate()
        dt = max(0.0, now - st.last_eval)
        st.energy_j += w * dt
        target = self._steady_temp(w)
        st.temp_c = target + (st.temp_c - target) * math.exp(-dt / 30.0)
        st.last_eval = now
        return w, ths

    def sleep(self) -> None:
        self.commanded_at = time.time()
        if self.slept_at <= self.woken_at:
            self.slept_at = self.commanded_at
        w, ths = self._advance()
        if self.state.phase == "sleeping" and self.state.ramp is None:
            return
        self.state.phase = "sleeping"
        self.state.ramp = _Ramp(self.clock(), self.sleep_s, w, SLEEP_W, ths, 0.0)

    def wake(self) -> None:
        self.commanded_at = self.woken_at = time.time()
        w, _ths = self._advance()
        if self.state.phase in ("mining", "waking"):
            return
        p = self.preset(self.state.profile)
        self.state.phase = "waking"
        self.state.ramp = _Ramp(
            self.clock(), self.wake_s, w, p.watts, 0.0, p.ths, WAKE_HOLD_SHARE * self.wake_s
        )

    def set_profile(self, name: str) -> None:
        self.commanded_at = time.time()
        p = self.preset(name)
        w, ths = self._advance()
        self.state.profile = p.name
        if self.state.phase == "mining":
            self.state.ramp = _Ramp(self.clock(), self.retune_s, w, p.watts, ths, p.ths)
        elif self.state.phase == "waking" and self.state.ramp is not None:
            r = self.state.ramp
            self.state.ramp = _Ramp(r.t0, r.duration, r.w0, p.watts, r.ths0, p.ths, r.hold_s)

    def set_target(self, watts: float) -> None:
        """Retune to an exact power target (Braiins OS+, Whatsminer): a preset of its own,
        the hashrate falling slower than the power (efficiency improves as power drops)."""
        base = self.preset("default")
        name = f"{watts:g}W"
        ths = base.ths * (watts / base.watts) ** 0.8
        if all(p.name != name for p in self.presets):
            self.presets = (*self.presets, Preset(name, watts, round(ths, 2), 0, 0.0))
        self.target_w = watts
        self.set_profile(name)

    def _power_off(self) -> None:
        """The miner goes dark (a reboot's first half): no power, no hashrate."""
        self._advance()
        self.state.phase = "rebooting"
        self.state.ramp = None

    def _boot(self) -> None:
        """Power comes back after a reboot: the miner boots, then ramps to its profile, or,
        where the firmware keeps a sleep across a restart (``boots_asleep``), boots and
        settles asleep."""
        st = self.state
        now = self.clock()
        st.last_eval = now
        st.boot_at = now
        if self.boots_asleep():
            st.phase = "sleeping"
            st.ramp = _Ramp(now, self.sleep_s, BOOT_W, SLEEP_W, 0.0, 0.0)
            return
        st.phase = "waking"
        p = self.preset(st.profile)
        st.ramp = _Ramp(
            now, self.wake_s, BOOT_W, p.watts, 0.0, p.ths, WAKE_HOLD_SHARE * self.wake_s
        )

    def boots_asleep(self) -> bool:
        """Whether a boot now keeps the miner asleep (its firmware's saved setting)."""
        return False
