"""Inference under demand response: per interval of a backtest, was committed inference
served and did the site follow the cap, and how much GPU energy the SM clock modes saved
against the same run with power caps only.

``gridsched backtest --inference-dr`` runs every policy twice: with the site's modes, and
with every clock-locked GPU mode removed (``without_clock_modes``; ``--caps-only`` runs
only that). Both are settled by the same code (``engine.evaluate``); this module reads the
units each run applied and the realised inputs, nothing the policies did not see.

Latency objectives (``[inference] ttft_p95_s`` / ``itl_p95_s``) cannot be measured in a
replay: no serving engine runs. Where the site states them they are reported
``unverified``, never met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.market import iso
from models.site import SiteConfig
from scheduler.backtest.engine import PolicyRun
from scheduler.backtest.period import BacktestSetup, period_inputs
from scheduler.planner.extract import settle
from scheduler.planner.inputs import PlanInputs

#: tolerances of ``engine.evaluate``: a shortfall above 0.01 tokens/s breaches the SLA, an
#: import above the cap by more than 1 W breaks the cap
SLA_TOL_TOK_S = 1e-2
CAP_TOL_KW = 1e-3


def without_clock_modes(config: SiteConfig) -> SiteConfig:
    """The site with every GPU mode that locks the SM clock removed (caps only). A class
    left without a mode is refused, naming it: it has nothing to compare against."""
    devices = []
    for dc in config.devices:
        kept = tuple(m for m in dc.modes if m.sm_clock_mhz is None)
        if not kept:
            raise ValueError(
                f"device class {dc.name!r}: every mode locks the SM clock; with clock "
                "modes removed it has none (give it a cap mode to compare against)"
            )
        devices.append(dc if len(kept) == len(dc.modes) else dc.model_copy(update={"modes": kept}))
    return config.model_copy(update={"devices": devices})


def has_clock_modes(config: SiteConfig) -> bool:
    return any(m.sm_clock_mhz is not None for dc in config.devices for m in dc.modes)


def gpu_power_kw(pin: PlanInputs, n: np.ndarray) -> np.ndarray:
    """IT power of the GPU classes per step (awake units in their modes, the rest
    asleep at idle; host overhead included where the class has it; no PUE)."""
    gpu_c = np.array([k == "gpu" for k in pin.class_kind])
    out = (pin.idle_kw * pin.units * gpu_c).sum() * np.ones(n.shape[1])
    for k in np.flatnonzero(gpu_c[pin.cm_class]):
        extra = pin.power_kw[k] - pin.idle_kw[pin.cm_class[k]]
        out = out + extra * n[k]
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Interval:
    start_s: int
    cap_kw: float | None  # the DR cap in force; None when none
    import_kw: float
    followed: bool | None  # None when no cap was in force
    committed_tok_s: float
    served_tok_s: float
    sla_met: bool
    latency: str  # "unverified" (objectives stated) or "none stated"
    gpu_kw: float
    gpu_modes: dict[str, int]  # units per GPU mode ("class/mode")

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start_s),
            "dr_cap_kw": None if self.cap_kw is None else round(self.cap_kw, 3),
            "import_kw": round(self.import_kw, 3),
            "cap_followed": self.followed,
            "committed_tokens_s": round(self.committed_tok_s, 1),
            "served_committed_tokens_s": round(self.served_tok_s, 1),
            "sla_met": self.sla_met,
            "latency_objectives": self.latency,
            "gpu_kw": round(self.gpu_kw, 3),
            "gpu_modes": self.gpu_modes,
        }


def intervals(setup: BacktestSetup, run: PolicyRun) -> list[Interval]:
    """Every interval of the period: the cap and the import, committed demand and what was
    served of it, and the GPU classes' power and modes."""
    pin = period_inputs(setup)
    st = settle(pin, run.n, run.batch_tok_s, run.batch_usd)
    gpu_kw = gpu_power_kw(pin, run.n)
    inf = setup.config.inference
    stated = inf.ttft_p95_s is not None or inf.itl_p95_s is not None
    gpu_k = [k for k in range(pin.K) if pin.class_kind[pin.cm_class[k]] == "gpu"]
    labels = {k: f"{pin.class_names[pin.cm_class[k]]}/{pin.mode_names[k]}" for k in gpu_k}
    out = []
    for t in range(pin.T):
        cap = float(pin.dr_cap_kw[t])
        has_cap = bool(np.isfinite(cap))
        imp = float(st.import_kw[t])
        out.append(
            Interval(
                start_s=int(pin.grid.starts_s[t]),
                cap_kw=cap if has_cap else None,
                import_kw=imp,
                followed=(imp <= cap + CAP_TOL_KW) if has_cap else None,
                committed_tok_s=float(pin.committed_tok_s[t]),
                served_tok_s=float(st.committed_served[t]),
                sla_met=bool(pin.committed_tok_s[t] - st.committed_served[t] <= SLA_TOL_TOK_S),
                latency="unverified" if stated else "none stated",
                gpu_kw=float(gpu_kw[t]),
                gpu_modes={labels[k]: int(run.n[k, t]) for k in gpu_k if run.n[k, t] > 0},
            )
        )
    return out


@dataclass(frozen=True)
class DrSummary:
    policy: str
    intervals: list[Interval]
    dt_h: float
    #: GPU energy of the same policy with clock modes removed (None: not run)
    caps_only_gpu_kwh: float | None = None
    caps_only_dr_gpu_kwh: float | None = None
    caps_only_sla_met: int | None = None
    caps_only_followed: int | None = None

    @property
    def dr(self) -> list[Interval]:
        return [i for i in self.intervals if i.cap_kw is not None]

    @property
    def gpu_kwh(self) -> float:
        return sum(i.gpu_kw for i in self.intervals) * self.dt_h

    @property
    def dr_gpu_kwh(self) -> float:
        return sum(i.gpu_kw for i in self.dr) * self.dt_h

    def to_dict(self) -> dict[str, Any]:
        dr = self.dr
        saved = None if self.caps_only_gpu_kwh is None else self.caps_only_gpu_kwh - self.gpu_kwh
        return {
            "policy": self.policy,
            "intervals": len(self.intervals),
            "sla_met_intervals": sum(i.sla_met for i in self.intervals),
            "dr_intervals": len(dr),
            "dr_cap_followed": sum(bool(i.followed) for i in dr),
            "dr_sla_met": sum(i.sla_met and bool(i.followed) for i in dr),
            "gpu_energy_kwh": round(self.gpu_kwh, 3),
            "dr_gpu_energy_kwh": round(self.dr_gpu_kwh, 3),
            "caps_only": None
            if self.caps_only_gpu_kwh is None
            else {
                "gpu_energy_kwh": round(self.caps_only_gpu_kwh, 3),
                "dr_gpu_energy_kwh": round(self.caps_only_dr_gpu_kwh or 0.0, 3),
                "sla_met_intervals": self.caps_only_sla_met,
                "dr_cap_followed": self.caps_only_followed,
            },
            "gpu_energy_saved_by_clock_modes_kwh": None if saved is None else round(saved, 3),
            "gpu_energy_saved_by_clock_modes_pct": None
            if saved is None or not self.caps_only_gpu_kwh
            else round(100.0 * saved / self.caps_only_gpu_kwh, 2),
            "per_interval": [i.to_dict() for i in self.intervals],
        }


def summarise(
    setup: BacktestSetup,
    run: PolicyRun,
    caps_setup: BacktestSetup | None = None,
    caps_run: PolicyRun | None = None,
) -> DrSummary:
    rows = intervals(setup, run)
    dt_h = setup.dt_h
    if caps_setup is None or caps_run is None:
        return DrSummary(run.name, rows, dt_h)
    other = DrSummary(caps_run.name, intervals(caps_setup, caps_run), dt_h)
    return DrSummary(
        run.name,
        rows,
        dt_h,
        caps_only_gpu_kwh=other.gpu_kwh,
        caps_only_dr_gpu_kwh=other.dr_gpu_kwh,
        caps_only_sla_met=sum(i.sla_met for i in other.intervals),
        caps_only_followed=sum(bool(i.followed) for i in other.dr),
    )


def render(summaries: list[DrSummary]) -> list[str]:
    """The report section: a summary line per policy, then its DR intervals."""
    out = ["", "inference under DR (committed SLA and the cap, per interval)"]
    for s in summaries:
        d = s.to_dict()
        out.append(
            f"  {s.policy}: committed SLA met in {d['sla_met_intervals']} of {d['intervals']} "
            f"intervals; {d['dr_intervals']} under a DR cap, cap followed in "
            f"{d['dr_cap_followed']}, followed with the SLA met in {d['dr_sla_met']}"
        )
        if d["caps_only"] is not None:
            c = d["caps_only"]
            out.append(
                f"  GPU energy: {d['gpu_energy_kwh']:,.1f} kWh with clock modes, "
                f"{c['gpu_energy_kwh']:,.1f} kWh with caps only: "
                f"{d['gpu_energy_saved_by_clock_modes_kwh']:,.1f} kWh saved "
                f"({d['gpu_energy_saved_by_clock_modes_pct']} %); under the cap "
                f"{d['dr_gpu_energy_kwh']:,.1f} against {c['dr_gpu_energy_kwh']:,.1f} kWh"
            )
        else:
            out.append(f"  GPU energy: {d['gpu_energy_kwh']:,.1f} kWh")
        latency = {i.latency for i in s.intervals}
        if "unverified" in latency:
            out.append("  latency objectives: unverified (no serving engine runs in a replay)")
        out.append(
            "  start (UTC)              cap kW  import kW  followed   committed      served  SLA"
        )
        for i in s.dr:
            out.append(
                f"  {iso(i.start_s)}  {i.cap_kw or 0:9,.0f}  {i.import_kw:9,.0f}  "
                f"{'yes' if i.followed else 'NO':>8}  {i.committed_tok_s:10,.0f}  "
                f"{i.served_tok_s:10,.0f}  {'met' if i.sla_met else 'MISSED'}"
            )
    return out
