"""Device classes and their operating modes.

A device class is a set of identical units (one ASIC model, one GPU type serving one
workload). Each unit is, at every step, asleep/idle (``idle_power_kw``) or in exactly one
of the class's productive modes. Modes are data: an ASIC has firmware profiles, a GPU has
power caps, and a class may mix mining and serving modes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from models import catalog, gpu_modes
from models.config_base import NoBoolNumbers
from models.device_adapter import AdapterConfig, AdapterKind, expand_agents, expand_hosts
from models.errors import at_key

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$")]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class DeviceKind(StrEnum):
    ASIC = "asic"
    GPU = "gpu"


#: J/TH a miner mode may have: the first Antminer (S1, 2013) drew about 2,000 J/TH, no
#: miner near 0.5; outside these a figure is a unit slip, and ``Mode`` names which
MIN_J_PER_TH, MAX_J_PER_TH = 0.5, 2500.0


class Mode(NoBoolNumbers):
    """One productive operating mode of a unit; figures are per unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    power_kw: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    hashrate_ths: NonNeg = 0.0
    throughput_tokens_s: NonNeg = 0.0
    #: GPU modes only: lock the SM clock to [min, max] MHz (NVML
    #: nvmlDeviceSetGpuLockedClocks) besides the power limit. LLM decode is memory-bound
    #: and often draws well below its power limit, where a cap never binds and a lower
    #: clock is what saves energy. None leaves the clocks to the driver (reset on entry).
    sm_clock_mhz: tuple[Annotated[int, Field(gt=0, le=10_000)], ...] | None = None
    #: GPU modes only: the NVML power limit to set, W, where it is not the mode's power
    #: (a decode mode budgets its measured draw, below the cap that bounds it). None:
    #: ``power_kw`` less the class's host overhead.
    power_limit_w: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _productive(self) -> Self:
        if self.name in ("sleep", "idle", "off"):
            raise ValueError(
                f"mode name {self.name!r} is reserved for the resting state; "
                "set idle_power_kw on the class instead"
            )
        if self.hashrate_ths == 0 and self.throughput_tokens_s == 0:
            raise ValueError(
                f"mode {self.name!r} produces nothing: give hashrate_ths or throughput_tokens_s"
            )
        j_per_th = self.efficiency_j_per_th
        if j_per_th is not None and not MIN_J_PER_TH <= j_per_th <= MAX_J_PER_TH:
            # a unit slip (W for kW, GH/s for TH/s) planned on as written is a site that
            # never pays or always does: name the likely slip rather than plan it
            slip = (
                f"is power_kw in W ({self.power_kw / 1000:g} kW)?"
                if j_per_th > MAX_J_PER_TH
                else f"is hashrate_ths in GH/s ({self.hashrate_ths / 1000:g} TH/s)?"
            )
            j_text = f"{j_per_th:,.0f}" if j_per_th >= 1 else f"{j_per_th:.3g}"
            raise ValueError(
                f"mode {self.name!r}: power_kw {self.power_kw:g} at hashrate_ths "
                f"{self.hashrate_ths:g} is {j_text} J/TH; miners draw about 10-100 J/TH "
                f"(S21 17.5, S9 98): {slip}"
            )
        if self.sm_clock_mhz is not None and (
            len(self.sm_clock_mhz) != 2 or self.sm_clock_mhz[0] > self.sm_clock_mhz[1]
        ):
            raise ValueError(
                f"mode {self.name!r}: sm_clock_mhz = {list(self.sm_clock_mhz)}; "
                "give [min, max] MHz with min <= max, e.g. [1200, 1410]"
            )
        return self

    @property
    def efficiency_j_per_th(self) -> float | None:
        return self.power_kw * 1000.0 / self.hashrate_ths if self.hashrate_ths else None


class DeviceClass(NoBoolNumbers):
    """Identical units of one kind. ``model`` fills modes from the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    kind: DeviceKind
    count: Annotated[int, Field(ge=0)]
    available: Annotated[int, Field(ge=0)] | None = None
    model: str | None = None
    modes: tuple[Mode, ...] = ()
    idle_power_kw: NonNeg | None = None
    # ASIC catalog options
    profiles: tuple[str, ...] | None = None
    # GPU catalog options
    workload: str | None = None
    power_caps_w: tuple[Annotated[float, Field(gt=0)], ...] | None = None
    #: the serving phase that dominates the class's work (models/gpu_modes.py): "decode"
    #: budgets the measured draw below the cap, "prefill" the draw at the cap; none: the
    #: cap itself (the catalog's older, conservative budget)
    phase: Literal["prefill", "decode"] | None = None
    #: decode only: lock the SM clock to [min, max] MHz in an extra clock mode
    decode_clock_mhz: tuple[Annotated[int, Field(gt=0, le=10_000)], ...] | None = None
    #: GPU only: the fleet's measured prefill rate (prompt tokens/s of one request) in each
    #: serving mode, by mode name; maps [inference] ttft_p95_s (models/inference_ttft.py)
    prefill_tokens_s: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    host_overhead_kw: NonNeg = 0.0
    # Wear and hysteresis
    start_cost_usd: NonNeg = 0.0
    min_on_s: NonNeg = 0.0
    min_off_s: NonNeg = 0.0
    initial_on: Annotated[int, Field(ge=0)] | None = None
    # How the daemon reaches the units
    adapter: AdapterConfig | None = None

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if self.model is not None and not self.modes:
            modes, idle = _catalog_modes(self, self.model)
            object.__setattr__(self, "modes", modes)
            if self.idle_power_kw is None:
                object.__setattr__(self, "idle_power_kw", idle)
        elif self.model is None and (
            self.profiles or self.power_caps_w or self.workload or self.phase
        ):
            raise ValueError(
                "profiles, power_caps_w, workload and phase need `model` (a catalog entry)"
            )
        if not self.modes:
            raise ValueError("a device class needs `modes` or a catalog `model`")
        names = [m.name for m in self.modes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise at_key("modes", f"duplicate mode names {dup}; each mode needs its own name")
        if self.idle_power_kw is None:
            object.__setattr__(self, "idle_power_kw", 0.0)
        if self.available is not None and self.available > self.count:
            raise at_key("available", f"available = {self.available} exceeds count = {self.count}")
        if self.adapter is not None:
            a = self.adapter
            if a.kind is AdapterKind.NVML and self.kind is not DeviceKind.GPU:
                raise ValueError("adapter kind 'nvml' drives GPUs; this class is an asic")
            miner_kinds = (AdapterKind.PYASIC, AdapterKind.ASIC_RS)
            if a.kind in miner_kinds and self.kind is not DeviceKind.ASIC:
                raise ValueError(f"adapter kind '{a.kind.value}' drives ASICs; this class is a gpu")
            n = len(expand_hosts(a.hosts)) if a.hosts else None
            if n is not None and n != self.count:
                raise at_key(
                    "adapter.hosts", f"adapter.hosts lists {n} addresses for count = {self.count}"
                )
            if a.agents:
                self._check_agent_gpus(a)
            elif a.gpus is not None and len(a.gpus) != self.count:
                msg = f"adapter.gpus lists {len(a.gpus)} GPUs for count = {self.count}"
                raise at_key("adapter.gpus", msg)
        locked = [m.name for m in self.modes if m.sm_clock_mhz is not None]
        if locked and self.kind is not DeviceKind.GPU:
            raise ValueError(f"modes {locked} lock SM clocks (sm_clock_mhz): GPU classes only")
        limited = [m.name for m in self.modes if m.power_limit_w is not None]
        if limited and self.kind is not DeviceKind.GPU:
            raise ValueError(f"modes {limited} set power_limit_w: GPU classes only")
        if self.prefill_tokens_s is not None:
            self._check_prefill(self.prefill_tokens_s)
        if self.initial_on is not None and self.initial_on > self.units:
            raise at_key(
                "initial_on",
                f"initial_on = {self.initial_on} exceeds units in service ({self.units})",
            )
        return self

    def _check_agent_gpus(self, a: AdapterConfig) -> None:
        n = len(expand_agents(a.agents))
        if a.gpus is None and self.count % n:
            raise at_key(
                "adapter.agents",
                f"count = {self.count} GPUs do not split evenly over {n} agents; give "
                "adapter.gpus, the GPU indexes served on each agent",
            )
        if a.gpus is not None and len(a.gpus) * n != self.count:
            each = f", or gpus list {self.count // n} indexes" if self.count % n == 0 else ""
            raise at_key(
                "adapter.gpus",
                f"lists {len(a.gpus)} GPUs on each of {n} agents, {len(a.gpus) * n} in all, "
                f"for count = {self.count}; count must be {len(a.gpus) * n}{each}",
            )

    def _check_prefill(self, rates: dict[str, float]) -> None:
        if self.kind is not DeviceKind.GPU:
            raise ValueError("prefill_tokens_s: GPU classes only")
        serving = sorted(m.name for m in self.modes if m.throughput_tokens_s > 0)
        for name in rates:
            if name not in serving:
                raise ValueError(
                    f"prefill_tokens_s: {name!r} is no mode of class {self.name} that serves "
                    f"tokens; valid: {serving}"
                )
        missing = [n for n in serving if n not in rates]
        if missing:
            raise ValueError(
                f"prefill_tokens_s: no rate for modes {missing}; give every serving mode's "
                "measured rate (a mode without one could not be judged against ttft_p95_s)"
            )

    @property
    def units(self) -> int:
        """Units in service (telemetry removes broken ones via ``available``)."""
        return self.count if self.available is None else self.available

    @property
    def idle_kw(self) -> float:
        return float(self.idle_power_kw or 0.0)

    def mode(self, name: str) -> Mode | None:
        """The productive mode called ``name`` (None for sleep or an unknown name)."""
        return next((m for m in self.modes if m.name == name), None)

    def device_target_w(self, mode_name: str) -> float:
        """The per-device power target of a mode: ASIC profile watts or GPU power limit."""
        m = self.mode(mode_name)
        if m is None:
            raise KeyError(f"class {self.name!r} has no mode {mode_name!r}")
        if self.kind is DeviceKind.GPU:
            if m.power_limit_w is not None:
                return round(m.power_limit_w, 3)
            return round((m.power_kw - self.host_overhead_kw) * 1000.0, 3)
        return round(m.power_kw * 1000.0, 3)


def _catalog_modes(dc: DeviceClass, model: str) -> tuple[tuple[Mode, ...], float]:
    if dc.kind is DeviceKind.ASIC and (dc.phase or dc.decode_clock_mhz):
        raise ValueError("phase and decode_clock_mhz are GPU catalog options")
    if dc.kind is DeviceKind.ASIC:
        try:
            spec = catalog.find_asic(model)
        except KeyError as exc:
            raise at_key("model", str(exc.args[0])) from None
        wanted = dc.profiles or tuple(p.name for p in catalog.ASIC_PROFILES)
        known = {p.name: p for p in catalog.ASIC_PROFILES}
        bad = [w for w in wanted if w not in known]
        if bad:
            raise at_key("profiles", f"unknown profiles {bad}; valid: {sorted(known)}")
        modes = tuple(
            Mode(
                name=known[w].name,
                power_kw=round(spec.power_w / 1000.0 * known[w].power_factor, 6),
                hashrate_ths=round(spec.hashrate_ths * known[w].hashrate_factor, 6),
            )
            for w in wanted
        )
        return modes, catalog.ASIC_SLEEP_KW
    try:
        gpu = catalog.find_gpu(model)
    except KeyError as exc:
        raise at_key("model", str(exc.args[0])) from None
    workload = dc.workload or "llama-3.1-70b"
    try:
        full = catalog.gpu_full_throughput(gpu, workload)
    except KeyError as exc:
        raise at_key("workload", str(exc.args[0])) from None
    caps = dc.power_caps_w or gpu.default_caps_w
    for cap in caps:
        if not gpu.min_cap_w <= cap <= gpu.tdp_w:
            raise at_key(
                "power_caps_w",
                f"power cap {cap} W outside {gpu.model}'s range [{gpu.min_cap_w}, {gpu.tdp_w}] W",
            )
    idle_kw = gpu.idle_w / 1000.0 + dc.host_overhead_kw
    if dc.phase is None:
        if dc.decode_clock_mhz is not None:
            raise ValueError(
                "decode_clock_mhz needs phase = 'decode' (the clock figures are decode's)"
            )
        modes = tuple(
            Mode(
                name=f"infer@{cap:g}W",
                power_kw=round(cap / 1000.0 + dc.host_overhead_kw, 6),
                throughput_tokens_s=round(
                    full * catalog.cap_throughput_fraction(cap, gpu.tdp_w), 3
                ),
            )
            for cap in caps
        )
        return modes, idle_kw
    return _phase_modes(dc, gpu, workload, dc.phase, caps), idle_kw


def _phase_modes(
    dc: DeviceClass,
    gpu: catalog.GpuSpec,
    workload: str,
    phase: Literal["prefill", "decode"],
    caps: tuple[float, ...],
) -> tuple[Mode, ...]:
    clocks = dc.decode_clock_mhz
    if clocks is not None and (len(clocks) != 2 or clocks[0] > clocks[1]):
        raise ValueError(f"decode_clock_mhz = {list(clocks)}; give [min, max] MHz with min <= max")
    try:
        figures = gpu_modes.gpu_mode_figures(
            gpu, workload, phase, caps, None if clocks is None else (clocks[0], clocks[1])
        )
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    return tuple(
        Mode(
            name=f.name,
            power_kw=round(f.draw_w / 1000.0 + dc.host_overhead_kw, 6),
            throughput_tokens_s=round(f.throughput_tokens_s, 3),
            sm_clock_mhz=f.sm_clock_mhz,
            power_limit_w=f.limit_w,
        )
        for f in figures
    )
