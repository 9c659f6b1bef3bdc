"""A simulated NVIDIA GPU with the NVML calls gridsched uses.

It answers the same questions as ``pynvml`` (power limit constraints, enforced limit,
power usage in mW, total energy in mJ, utilisation, clocks, temperature) with the units
NVML uses, and refuses with the same kinds of error when a fault is set (no permission,
GPU lost). The NVML adapter drives it through the same backend interface as real NVML.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models import catalog

#: Supported SM clock range (MHz): 210 MHz is the lowest graphics clock NVIDIA's drivers
#: list for these parts; the top is the maximum boost clock of NVIDIA's data sheets
#: (H100 SXM5 1,980 MHz, A100 SXM4 1,410 MHz).
SM_CLOCK_RANGE_MHZ: dict[str, tuple[int, int]] = {
    "H100 SXM": (210, 1980),
    "A100 SXM4": (210, 1410),
}


class SimNvmlError(Exception):
    """An NVML-style refusal; ``code`` names it like pynvml's NVML_ERROR_* constants."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class SimGpu:
    index: int
    model: str = "H100 SXM"
    load: float = 0.9  # share of the cap the serving load draws
    clock: Callable[[], float] = time.monotonic
    settle_s: float = 0.1  # NVML applies a limit within about 100 ms
    #: "no_permission" | "gpu_lost" | "clocks_unsupported" (clock locking refused with
    #: NOT_SUPPORTED, as on GPUs older than Volta) | None
    fault: str | None = None
    uuid: str = ""
    _limit_w: float = field(init=False)
    _from_w: float = field(init=False)
    _t_set: float = field(init=False)
    _energy_j: float = field(init=False, default=0.0)
    _last: float = field(init=False)
    _locked: tuple[int, int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        spec = catalog.find_gpu(self.model)
        self.clock_range_mhz = SM_CLOCK_RANGE_MHZ.get(spec.model, (210, 1980))
        self.max_clock_mhz = float(self.clock_range_mhz[1])
        self.tdp_w = spec.tdp_w
        self.min_w = spec.min_cap_w
        self.idle_w = spec.idle_w
        self._limit_w = spec.tdp_w
        now = self.clock()
        self._from_w = self._steady(spec.tdp_w)
        self._t_set = now - 10.0
        self._last = now
        if not self.uuid:
            self.uuid = f"GPU-5e0c0000-0000-4000-8000-{self.index:012d}"

    def _steady(self, limit_w: float) -> float:
        capped = self.idle_w + (limit_w - self.idle_w) * self.load
        if self._locked is None:
            return capped
        # The simulator's assumption, not a measurement: below the power limit, dynamic
        # power scales with the square of the clock share (voltage falls with frequency).
        share = self._locked[1] / self.max_clock_mhz
        return min(capped, self.idle_w + (self.tdp_w - self.idle_w) * self.load * share**2)

    def _check(self) -> None:
        if self.fault == "gpu_lost":
            raise SimNvmlError("GPU_IS_LOST", "GPU is lost")

    def power_w(self) -> float:
        self._check()
        now = self.clock()
        target = self._steady(self._limit_w)
        f = 1.0 - math.exp(-(now - self._t_set) / max(self.settle_s / 3.0, 1e-6))
        w = self._from_w + (target - self._from_w) * f
        self._energy_j += w * max(0.0, now - self._last)
        self._last = now
        return w

    def limit_constraints_w(self) -> tuple[float, float]:
        self._check()
        return self.min_w, self.tdp_w

    def limit_w(self) -> float:
        self._check()
        return self._limit_w

    def set_limit_w(self, watts: float) -> None:
        self._check()
        if self.fault == "no_permission":
            raise SimNvmlError("NO_PERMISSION", "Insufficient Permissions")
        if not self.min_w <= watts <= self.tdp_w:
            raise SimNvmlError(
                "INVALID_ARGUMENT", f"{watts} W outside [{self.min_w}, {self.tdp_w}] W"
            )
        self._from_w = self.power_w()
        self._limit_w = watts
        self._t_set = self.clock()

    def energy_j(self) -> float:
        self.power_w()
        return self._energy_j

    def utilisation_pct(self) -> float:
        self._check()
        return round(100.0 * self.load, 1)

    def sm_clock_mhz(self) -> float:
        self._check()
        driver = round(self.max_clock_mhz * (0.55 + 0.45 * self._limit_w / self.tdp_w))
        return float(driver if self._locked is None else min(driver, self._locked[1]))

    def _check_clocks(self) -> None:
        self._check()
        if self.fault == "no_permission":
            raise SimNvmlError("NO_PERMISSION", "Insufficient Permissions")
        if self.fault == "clocks_unsupported":
            raise SimNvmlError("NOT_SUPPORTED", "Not Supported")

    def set_locked_clocks(self, lo_mhz: float, hi_mhz: float) -> None:
        """nvmlDeviceSetGpuLockedClocks: needs root (NO_PERMISSION), a range the GPU
        supports (INVALID_ARGUMENT otherwise)."""
        self._check_clocks()
        lo, hi = self.clock_range_mhz
        if not lo <= lo_mhz <= hi_mhz <= hi:
            raise SimNvmlError(
                "INVALID_ARGUMENT", f"clocks [{lo_mhz:g}, {hi_mhz:g}] MHz outside [{lo}, {hi}]"
            )
        self._from_w = self.power_w()
        self._locked = (int(lo_mhz), int(hi_mhz))
        self._t_set = self.clock()

    def reset_locked_clocks(self) -> None:
        self._check_clocks()
        self._from_w = self.power_w()
        self._locked = None
        self._t_set = self.clock()

    def temperature_c(self) -> float:
        return round(32.0 + 45.0 * self.power_w() / self.tdp_w, 1)

    def reading(self) -> tuple[float, float, float, float, float, float]:
        """The figures of one reading, by the same calls in the adapter's order
        (``adapters.nvml.READING``): one answer for a reading, as ``PynvmlBackend`` makes
        them in one worker-thread hop, instead of six round trips to the control port."""
        return (
            self.power_w(),
            self.limit_w(),
            self.energy_j(),
            self.utilisation_pct(),
            self.sm_clock_mhz(),
            self.temperature_c(),
        )
