"""The plan: per step and class the units in each mode, the site's power, the cap and the
value of the import limit, the money by source, and every soft limit it had to break.

``Plan.to_dict()`` is the JSON schema documented in docs/plan-json.md (``schema`` field
``gridsched.plan/1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

SCHEMA = "gridsched.plan/1"


def _iso(ts_s: float) -> str:
    return datetime.fromtimestamp(float(ts_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _r(a: np.ndarray, nd: int = 3) -> list[float]:
    return [round(float(v), nd) for v in np.asarray(a)]


@dataclass(frozen=True)
class Violation:
    """A soft constraint the plan breaks, over one contiguous window."""

    constraint: str  # family name, e.g. "inference-sla", "dr-cap"
    start_s: int
    end_s: int
    max_amount: float
    unit: str
    total: float
    total_unit: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "constraint": self.constraint,
            "start": _iso(self.start_s),
            "end": _iso(self.end_s),
            "max_amount": round(self.max_amount, 3),
            "unit": self.unit,
            "total": round(self.total, 3),
            "total_unit": self.total_unit,
            "message": self.message,
        }


@dataclass
class Money:
    """USD over the horizon. Positive numbers; ``profit`` nets them."""

    mining_revenue: float = 0.0
    inference_committed_revenue: float = 0.0
    inference_spot_revenue: float = 0.0
    inference_batch_revenue: float = 0.0
    dr_payment: float = 0.0
    energy_cost: float = 0.0
    onsite_cost: float = 0.0
    demand_charge: float = 0.0
    coincident_peak_charge: float = 0.0
    start_cost: float = 0.0

    @property
    def inference_revenue(self) -> float:
        return (
            self.inference_committed_revenue
            + self.inference_spot_revenue
            + self.inference_batch_revenue
        )

    @property
    def revenue(self) -> float:
        return (
            self.mining_revenue
            + self.inference_committed_revenue
            + self.inference_spot_revenue
            + self.inference_batch_revenue
            + self.dr_payment
        )

    @property
    def cost(self) -> float:
        return (
            self.energy_cost
            + self.onsite_cost
            + self.demand_charge
            + self.coincident_peak_charge
            + self.start_cost
        )

    @property
    def profit(self) -> float:
        return self.revenue - self.cost

    def to_dict(self) -> dict[str, float]:
        d = {k: round(float(v), 2) for k, v in self.__dict__.items()}
        d["revenue"] = round(self.revenue, 2)
        d["cost"] = round(self.cost, 2)
        d["profit"] = round(self.profit, 2)
        return d


@dataclass
class ClassPlan:
    name: str
    kind: str
    units: int
    modes: list[str]
    mode_power_kw: list[float]
    units_by_mode: np.ndarray  # (M, T) whole units, as applied
    units_by_mode_lp: np.ndarray  # (M, T) the LP's fractional units
    power_kw: np.ndarray  # (T,) IT power of the class (awake + asleep units)
    hashrate_ths: np.ndarray
    tokens_s: np.ndarray

    @property
    def asleep(self) -> np.ndarray:
        return self.units - self.units_by_mode.sum(axis=0)

    def units_at(self, k: int) -> dict[str, int]:
        """Units in each mode at step ``k``."""
        return dict(zip(self.modes, map(int, self.units_by_mode[:, k]), strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "units": self.units,
            "modes": [
                {
                    "name": m,
                    "power_kw": p,
                    "units": [int(v) for v in self.units_by_mode[i]],
                    "units_lp": _r(self.units_by_mode_lp[i], 3),
                }
                for i, (m, p) in enumerate(zip(self.modes, self.mode_power_kw, strict=True))
            ],
            "asleep": [int(v) for v in self.asleep],
            "power_kw": _r(self.power_kw, 2),
            "hashrate_ths": _r(self.hashrate_ths, 2),
            "tokens_s": _r(self.tokens_s, 1),
        }


@dataclass
class Plan:
    site: str
    timezone: str
    created_at_s: int
    starts_s: np.ndarray
    ends_s: np.ndarray
    status: str
    termination: str
    solver: str
    objective: float
    build_s: float
    solve_s: float
    warm: bool
    price_label: str
    price_synthetic: bool
    price_usd_per_mwh: np.ndarray
    hashprice: np.ndarray
    import_kw: np.ndarray
    onsite_used_kw: np.ndarray
    load_kw: np.ndarray
    cap_kw: np.ndarray
    dr_cap_kw: np.ndarray
    import_value_usd_per_mwh: np.ndarray  # dual of the import limit, as $/MWh
    committed_tok_s: np.ndarray
    served_committed_tok_s: np.ndarray
    classes: list[ClassPlan]
    money: Money
    money_lp: Money
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    model_size: str = ""
    seeded_from_steps: int | None = None  # a cold solve started from a coarser plan's basis

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    @property
    def n(self) -> int:
        return len(self.starts_s)

    def mining_kw(self) -> np.ndarray:
        """IT power of units in mining modes (hashrate > 0), per step."""
        out = np.zeros(self.n)
        for cp in self.classes:
            if cp.hashrate_ths.any():
                out += cp.power_kw * (cp.hashrate_ths > 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "site": self.site,
            "timezone": self.timezone,
            "created_at": _iso(self.created_at_s),
            "horizon": {
                "start": _iso(self.starts_s[0]),
                "end": _iso(self.ends_s[-1]),
                "steps": self.n,
            },
            "solver": {
                "name": self.solver,
                "status": self.status,
                "termination": self.termination,
                "objective": round(self.objective, 4),
                "build_s": round(self.build_s, 4),
                "solve_s": round(self.solve_s, 4),
                "warm": self.warm,
                "seeded_from_steps": self.seeded_from_steps,
                "model": self.model_size,
            },
            "prices": {"label": self.price_label, "synthetic": self.price_synthetic},
            "money_usd": self.money.to_dict(),
            "money_lp_usd": self.money_lp.to_dict(),
            "violations": [v.to_dict() for v in self.violations],
            "notes": list(self.notes),
            "events": self.events,
            "steps": {
                "start": [_iso(t) for t in self.starts_s],
                "duration_s": [int(d) for d in self.ends_s - self.starts_s],
                "price_usd_per_mwh": _r(self.price_usd_per_mwh, 2),
                "hashprice_usd_per_ths_day": _r(self.hashprice, 5),
                "import_kw": _r(self.import_kw, 2),
                "onsite_used_kw": _r(self.onsite_used_kw, 2),
                "load_kw": _r(self.load_kw, 2),
                "cap_kw": _r(self.cap_kw, 2),
                "dr_cap_kw": [
                    None if not np.isfinite(v) else round(float(v), 2) for v in self.dr_cap_kw
                ],
                "import_value_usd_per_mwh": _r(self.import_value_usd_per_mwh, 2),
                "committed_tokens_s": _r(self.committed_tok_s, 1),
                "served_committed_tokens_s": _r(self.served_committed_tok_s, 1),
            },
            "classes": [c.to_dict() for c in self.classes],
        }
