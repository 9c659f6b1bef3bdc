"""Shed load by a fixed, precomputed order: least valuable kW first.

One order, used by the baseline policies (which cannot plan; over class-mode arrays here)
and by the daemon's fast path (which must not wait for the optimiser; over devices):
miners put to sleep from the least to the most valuable kW (worst J/TH first); then serving
units moved down to their lowest-power mode, fewest tokens lost per kW first; then serving
units put to sleep, again fewest tokens per kW first, but never below what committed
inference needs. ``value_per_kw`` is the one measure of "valuable" both use.
"""

from __future__ import annotations

import numpy as np

from scheduler.planner.inputs import PlanInputs
from scheduler.planner.rounding import EPS, import_kw


def value_per_kw(given_up: np.ndarray | float, saved_kw: np.ndarray | float) -> np.ndarray:
    """What a shedding step gives up (TH/s for a miner, tokens/s for a serving unit) per kW
    it takes off the meter; the lower, the earlier it sheds."""
    return np.asarray(given_up, dtype=np.float64) / np.maximum(saved_kw, EPS)


def mining_order(inp: PlanInputs) -> np.ndarray:
    """Mining modes, least revenue per kW first."""
    m = inp.marginal_kw
    mining = np.flatnonzero((inp.tput_tok_s == 0) & (m > 0))
    value = value_per_kw(inp.hashrate_ths[mining], m[mining])
    return mining[np.argsort(value, kind="stable")]


def _lowest_serving(inp: PlanInputs, m: np.ndarray, k: int) -> int:
    """The lowest-power serving mode of class-mode k's class."""
    peers = np.flatnonzero((inp.cm_class == inp.cm_class[k]) & (inp.tput_tok_s > 0))
    return int(peers[np.argmin(m[peers])])


def downcap_order(inp: PlanInputs) -> list[tuple[int, int]]:
    """Serving modes that have a lower-power serving mode in their class, as (mode, its
    class's lowest serving mode), fewest tokens/s lost per kW taken off first."""
    m = inp.marginal_kw
    serving = np.flatnonzero(inp.tput_tok_s > 0)
    if len(serving) == 0:
        return []
    lows = np.array([_lowest_serving(inp, m, int(k)) for k in serving])
    down = value_per_kw(inp.tput_tok_s[serving] - inp.tput_tok_s[lows], m[serving] - m[lows])
    return [
        (int(serving[i]), int(lows[i]))
        for i in np.argsort(down, kind="stable")
        if lows[i] != serving[i]
    ]


def sleep_order(inp: PlanInputs) -> np.ndarray:
    """Serving modes, fewest tokens/s given up per kW first (units put to sleep)."""
    m = inp.marginal_kw
    serving = np.flatnonzero(inp.tput_tok_s > 0)
    return serving[np.argsort(value_per_kw(inp.tput_tok_s[serving], m[serving]), kind="stable")]


def shed_to_limit(inp: PlanInputs, n: np.ndarray, limit_kw: np.ndarray) -> np.ndarray:
    """Units after shedding until import <= limit where possible; ``n`` is (K, T)."""
    n = n.copy()
    m = inp.marginal_kw
    excess = import_kw(inp, n) - limit_kw - EPS
    for k in mining_order(inp):
        if not (excess > 0).any():
            return n
        drop = np.minimum(n[k], np.ceil(np.maximum(excess, 0.0) / m[k] - EPS)).astype(np.int64)
        n[k] -= drop
        excess -= drop * m[k]
    if not (inp.tput_tok_s > 0).any() or not (excess > 0).any():
        return n
    # serving units to the lowest-power mode of their class, keeping committed throughput
    for k, low in downcap_order(inp):
        if not (excess > 0).any():
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
    for k in sleep_order(inp):
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
