"""Catalog of real hardware, so a site config can say ``model = "S19j Pro"``.

Numbers come from public sources (see ../shared/data/README.md, which a test cross-checks
when present):

- ASIC nameplate hashrate and wall power: manufacturer specs as collected in
  ``asic_miner_specs_nameplate.csv``.
- GPU power-cap curve: throughput of Llama-8B inference against the GPU power cap,
  measured on A100s in the Emerald AI field demonstration (arXiv 2507.00909,
  ``emerald_a100_dvfs_power_cap_sweep.csv``), as a fraction of the full-power throughput,
  keyed by cap / TDP.
- GPU inference throughput at full power: ML.ENERGY leaderboard v2 (vLLM, chat task,
  ``mlenergy_llm_inference_a100_h100_v2.csv``), tokens/s per GPU at the batch size that
  gave the highest throughput.

Assumptions, stated so an operator can replace them with measured fleet profiles:

- ASIC ``eco`` and ``turbo`` profiles scale nameplate power and hashrate by the factors in
  ``ASIC_PROFILES`` (typical of autotuning firmware: under-clocking improves J/TH).
- H100 caps follow the A100's curve at the same fraction of TDP (no published H100 sweep).
- A capped GPU is budgeted at its cap: the cap is the power the site can rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AsicSpec:
    manufacturer: str
    model: str
    hashrate_ths: float
    power_w: float
    cooling: str

    @property
    def efficiency_j_per_th(self) -> float:
        return self.power_w / self.hashrate_ths


@dataclass(frozen=True)
class AsicProfile:
    """A firmware operating profile relative to nameplate."""

    name: str
    power_factor: float
    hashrate_factor: float


@dataclass(frozen=True)
class GpuSpec:
    model: str
    tdp_w: float
    min_cap_w: float
    idle_w: float
    default_caps_w: tuple[float, ...]


ASIC_SPECS: tuple[AsicSpec, ...] = (
    AsicSpec("Bitmain", "Antminer S9", 13.5, 1400.0, "air"),
    AsicSpec("Bitmain", "Antminer S19j Pro", 100.0, 3050.0, "air"),
    AsicSpec("Bitmain", "Antminer S19 XP", 140.0, 3010.0, "air"),
    AsicSpec("Bitmain", "Antminer S19k Pro", 120.0, 2760.0, "air"),
    AsicSpec("Bitmain", "Antminer S21", 200.0, 3500.0, "air"),
    AsicSpec("Bitmain", "Antminer S21 Pro", 234.0, 3510.0, "air"),
    AsicSpec("Bitmain", "Antminer S21 XP", 270.0, 3645.0, "air"),
    AsicSpec("Bitmain", "Antminer S21+ Hydro", 319.0, 4785.0, "hydro"),
    AsicSpec("Bitmain", "Antminer T21", 190.0, 3610.0, "air"),
    AsicSpec("MicroBT", "Whatsminer M21S", 56.0, 3360.0, "air"),
    AsicSpec("MicroBT", "Whatsminer M50", 118.0, 3422.0, "air"),
    AsicSpec("MicroBT", "Whatsminer M50S++", 140.0, 3080.0, "air"),
    AsicSpec("MicroBT", "Whatsminer M56S++", 242.0, 5445.0, "hydro"),
    AsicSpec("MicroBT", "Whatsminer M60", 172.0, 3422.8, "air"),
)

ASIC_PROFILES: tuple[AsicProfile, ...] = (
    AsicProfile("eco", 0.70, 0.80),
    AsicProfile("stock", 1.00, 1.00),
    AsicProfile("turbo", 1.25, 1.12),
)

#: Control board and fans of a sleeping ASIC (curtail sleep), kW.
ASIC_SLEEP_KW = 0.015

GPU_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec(
        "A100 SXM4",
        tdp_w=400.0,
        min_cap_w=100.0,
        idle_w=50.0,
        default_caps_w=(400.0, 300.0, 250.0, 200.0),
    ),
    GpuSpec(
        "H100 SXM", tdp_w=700.0, min_cap_w=200.0, idle_w=70.0, default_caps_w=(700.0, 500.0, 350.0)
    ),
)

#: (cap / TDP, throughput / full-power throughput), Llama-8B inference on A100.
GPU_CAP_CURVE: tuple[tuple[float, float], ...] = (
    (0.25, 0.2252),
    (0.50, 0.7808),
    (0.625, 0.8709),
    (0.75, 0.9309),
    (0.875, 0.9760),
    (1.00, 1.0000),
)

#: tokens/s per GPU at full power, keyed by (gpu model, workload).
GPU_WORKLOADS: dict[tuple[str, str], float] = {
    ("A100 SXM4", "llama-3.1-8b"): 1850.0,  # bs 320, 1 GPU
    ("A100 SXM4", "llama-3.1-70b"): 1229.0 / 8,  # bs 768, TP 8
    ("H100 SXM", "llama-3.1-8b"): 2475.0,  # bs 192, 1 GPU
    ("H100 SXM", "llama-3.1-70b"): 1923.0 / 4,  # bs 1024, TP 4
}


def _key(name: str) -> str:
    k = name.lower().replace("antminer", "").replace("whatsminer", "")
    for token in ("nvidia", "80gb", "40gb", "hbm3", "-"):
        k = k.replace(token, " ")
    return " ".join(k.split())


def find_asic(model: str) -> AsicSpec:
    """Look an ASIC up by model name (``"S19j Pro"`` or ``"Antminer S19j Pro"``)."""
    wanted = _key(model)
    for spec in ASIC_SPECS:
        if _key(spec.model) == wanted:
            return spec
    known = ", ".join(s.model for s in ASIC_SPECS)
    raise KeyError(f"unknown ASIC model {model!r}; known: {known}")


def find_gpu(model: str) -> GpuSpec:
    """Look a GPU up by model name (``"H100"``, ``"H100 SXM"``, ``"A100"``)."""
    wanted = _key(model)
    for spec in GPU_SPECS:
        k = _key(spec.model)
        if wanted in (k, k.split()[0]):
            return spec
    known = ", ".join(s.model for s in GPU_SPECS)
    raise KeyError(f"unknown GPU model {model!r}; known: {known}")


def gpu_workloads(gpu: GpuSpec) -> list[str]:
    return sorted(w for (g, w) in GPU_WORKLOADS if g == gpu.model)


def gpu_full_throughput(gpu: GpuSpec, workload: str) -> float:
    try:
        return GPU_WORKLOADS[(gpu.model, workload)]
    except KeyError:
        known = ", ".join(gpu_workloads(gpu))
        raise KeyError(
            f"no throughput for workload {workload!r} on {gpu.model}; known: {known}"
        ) from None


def cap_throughput_fraction(cap_w: float, tdp_w: float) -> float:
    """Fraction of full-power throughput kept at a power cap (linear between measured points)."""
    xs = np.array([p[0] for p in GPU_CAP_CURVE])
    ys = np.array([p[1] for p in GPU_CAP_CURVE])
    return float(np.interp(min(cap_w / tdp_w, 1.0), xs, ys))
