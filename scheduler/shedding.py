"""Shed load by a fixed, precomputed order: least valuable kW first.

Pure functions over (class-mode, step) arrays, shared by the baseline policies (which
cannot plan) and, later, the daemon's fast path (which must not wait for the optimiser).
The order: miners from the least to the most valuable kW (worst J/TH first), each put to
sleep; then serving units moved down to their lowest-power mode; then serving units put to
sleep, but never below what committed inference needs.
"""

from __future__ import annotations

import numpy as np

from scheduler.inputs import PlanInputs
from scheduler.rounding import EPS, import_kw


def marginal_kw(inp: PlanInputs) -> np.ndarray:
    """Meter kW added by waking one unit of each class-mode."""
    return inp.pue * (inp.power_kw - inp.idle_kw[inp.cm_class])


def mining_order(inp: PlanInputs) -> np.ndarray:
    """Mining modes, least revenue per kW first."""
    m = marginal_kw(inp)
    mining = np.flatnonzero((inp.tput_tok_s == 0) & (m > 0))
    value = inp.hashrate_ths[mining] / m[mining]
    return mining[np.argsort(value, kind="stable")]


def shed_to_limit(inp: PlanInputs, n: np.ndarray, limit_kw: np.ndarray) -> np.ndarray:
    """Units after shedding until import <= limit where possible; ``n`` is (K, T)."""
    n = n.copy()
    m = marginal_kw(inp)
    excess = import_kw(inp, n) - limit_kw - EPS
    for k in mining_order(inp):
        if not (excess > 0).any():
            return n
        drop = np.minimum(n[k], np.ceil(np.maximum(excess, 0.0) / m[k] - EPS)).astype(np.int64)
        n[k] -= drop
        excess -= drop * m[k]
    serving = np.flatnonzero(inp.tput_tok_s > 0)
    if len(serving) == 0 or not (excess > 0).any():
        return n
    # serving units to the lowest-power mode of their class, keeping committed throughput
    for k in serving[np.argsort(-m[serving])]:
        peers = np.flatnonzero((inp.cm_class == inp.cm_class[k]) & (inp.tput_tok_s > 0))
        low = peers[np.argmin(m[peers])]
        if low == k or not (excess > 0).any():
            continue
        spare = inp.tput_tok_s @ n - inp.committed_tok_s
        loss = inp.tput_tok_s[k] - inp.tput_tok_s[low]
        allowed = np.floor(np.maximum(spare, 0.0) / loss + EPS) if loss > 0 else n[k]
        move = np.minimum.reduce(
            [
                n[k].astype(np.float64),
                allowed,
                np.ceil(np.maximum(excess, 0.0) / max(m[k] - m[low], EPS) - EPS),
            ]
        )
        move = np.maximum(move, 0).astype(np.int64)
        n[k] -= move
        n[low] += move
        excess -= move * (m[k] - m[low])
    for k in serving[np.argsort(inp.tput_tok_s[serving] / m[serving])]:
        if not (excess > 0).any():
            break
        spare = inp.tput_tok_s @ n - inp.committed_tok_s
        allowed = np.floor(np.maximum(spare, 0.0) / inp.tput_tok_s[k] + EPS)
        drop = np.minimum.reduce(
            [n[k].astype(np.float64), allowed, np.ceil(np.maximum(excess, 0.0) / m[k] - EPS)]
        )
        drop = np.maximum(drop, 0).astype(np.int64)
        n[k] -= drop
        excess -= drop * m[k]
    return n
