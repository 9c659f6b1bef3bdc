"""Backtest: replay a period with honest information and settle every policy alike.

The period's inputs come from ``prepare`` (``scheduler/backtest/period.py``, re-exported
here). Policies (``scheduler/backtest/policies.py``) return whole units per (class-mode,
step) as a ``PolicyRun``; ``evaluate`` prices them at realised prices with the same code
for every policy, into a ``PolicyResult``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.economics import mining_revenue_usd_per_hour
from scheduler.backtest.period import (
    DAY_S,
    BacktestSetup,
    period_inputs,
    prepare,
    slice_inputs,
)
from scheduler.planner.extract import Settlement, settle
from scheduler.planner.inputs import PlanInputs
from scheduler.planner.plan import Money
from scheduler.planner.rounding import units_woken

__all__ = [
    "DAY_S",
    "BacktestSetup",
    "PolicyResult",
    "PolicyRun",
    "Progress",
    "evaluate",
    "period_inputs",
    "prepare",
    "slice_inputs",
]


@dataclass
class PolicyRun:
    """What a policy decided: whole units per (class-mode, step) of the period."""

    name: str
    n: np.ndarray  # (K, T_period)
    batch_tok_s: np.ndarray
    batch_usd: np.ndarray
    seconds: float = 0.0
    plans: int = 0
    solver_failures: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class PolicyResult:
    name: str
    money: Money
    energy_mwh: float
    avg_price_paid: float
    sla_breach_steps: int
    sla_short_mtok: float
    dr_steps: int
    dr_compliant_steps: int
    dr_excess_mwh: float
    miner_starts: int
    miner_stops: int
    monthly_profit: dict[str, float]
    seconds: float
    plans: int
    solver_failures: int
    import_kw: np.ndarray
    profit_by_step: np.ndarray
    notes: list[str]

    @property
    def dr_compliance(self) -> float | None:
        """Share of DR steps obeyed; None where there was no DR step to obey."""
        return None if self.dr_steps == 0 else self.dr_compliant_steps / self.dr_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "money_usd": self.money.to_dict(),
            "energy_mwh": round(self.energy_mwh, 3),
            "avg_price_paid_usd_per_mwh": round(self.avg_price_paid, 3),
            "sla_breach_steps": self.sla_breach_steps,
            "sla_short_mtok": round(self.sla_short_mtok, 3),
            "dr_steps": self.dr_steps,
            "dr_compliant_steps": self.dr_compliant_steps,
            "dr_compliance": None if self.dr_compliance is None else round(self.dr_compliance, 6),
            "dr_excess_mwh": round(self.dr_excess_mwh, 4),
            "miner_starts": self.miner_starts,
            "miner_stops": self.miner_stops,
            "monthly_profit_usd": {k: round(v, 2) for k, v in self.monthly_profit.items()},
            "runtime_s": round(self.seconds, 3),
            "plans": self.plans,
            "solver_failures": self.solver_failures,
            "notes": self.notes,
        }


def evaluate(setup: BacktestSetup, run: PolicyRun) -> PolicyResult:
    """Settle a policy's decisions at realised prices, with its SLA and DR record."""
    pin = period_inputs(setup)
    st: Settlement = settle(pin, run.n, run.batch_tok_s, run.batch_usd)
    dt_h = pin.grid.dt_h
    imp = st.import_kw
    short = np.maximum(pin.committed_tok_s - st.committed_served, 0.0)
    dr = np.isfinite(pin.dr_cap_kw)
    over = np.maximum(imp - pin.dr_cap_kw, 0.0)
    asic = np.array([k == "asic" for k in pin.class_kind])
    change = units_woken(pin, run.n)[asic]
    months = setup.local_month[setup.k0 : setup.k1]
    monthly: dict[str, float] = {}
    for mk in np.unique(months):
        idx = np.flatnonzero(months == mk)
        sub = slice_inputs(pin, int(idx[0]), int(idx[-1]) + 1)
        sm = settle(sub, run.n[:, idx], run.batch_tok_s[idx], run.batch_usd[idx]).money
        monthly[f"{mk // 100}-{mk % 100:02d}"] = sm.profit
    energy = float((imp * dt_h).sum() / 1000.0)
    return PolicyResult(
        name=run.name,
        money=st.money,
        energy_mwh=energy,
        avg_price_paid=st.money.energy_cost / energy if energy else 0.0,
        sla_breach_steps=int((short > 1e-2).sum()),
        sla_short_mtok=float((short * pin.grid.dur_s).sum() / 1e6),
        dr_steps=int(dr.sum()),
        dr_compliant_steps=int((dr & (over <= 1e-3)).sum()),
        dr_excess_mwh=float((over[dr] * dt_h[dr]).sum() / 1000.0),
        miner_starts=int(np.maximum(change, 0).sum()),
        miner_stops=int(np.maximum(-change, 0).sum()),
        monthly_profit=monthly,
        seconds=run.seconds,
        plans=run.plans,
        solver_failures=run.solver_failures,
        import_kw=imp,
        profit_by_step=_profit_by_step(pin, run, st),
        notes=run.notes,
    )


def _profit_by_step(pin: PlanInputs, run: PolicyRun, st: Settlement) -> np.ndarray:
    """Energy-market profit per step (peak charges are monthly; they are not spread)."""
    dt_h, tok = pin.grid.dt_h, pin.grid.dur_s.astype(np.float64)
    mining = mining_revenue_usd_per_hour(pin.hashrate_ths @ run.n, pin.hashprice) * dt_h
    infer = (
        (pin.committed_usd_per_mtok * st.committed_served + pin.spot_usd_per_mtok * st.spot_served)
        * tok
        / 1e6
    )
    energy = pin.price_usd_per_mwh * st.import_kw * dt_h / 1000.0
    return np.asarray(mining + infer - energy)


class Progress:
    """A one-line progress bar with ETA on stderr."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total = label, total
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.5 and done < self.total:
            return
        self._last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write(
            f"\r{self.label:>10} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{self.total} {100 * done / max(self.total, 1):5.1f}% "
            f"ETA {int(eta // 60):02d}:{int(eta % 60):02d}"
        )
        if done >= self.total:
            sys.stderr.write(f" done in {now - self.t0:.1f} s\n")
        sys.stderr.flush()
