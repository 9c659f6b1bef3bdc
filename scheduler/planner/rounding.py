"""Round fractional unit counts to whole units without breaking a hard limit.

Largest remainder within each (class, step): the class keeps the nearest whole number of
awake units, and the modes with the largest fractional parts get the spare units. Then a
repair pass: where the rounded plan would import more than the LP did (and more than the
cap), units are put to sleep, least valuable kW first; where it serves less committed
inference than the LP, serving units are woken, most tokens per kW first, while the power
headroom lasts. No step puts more units in a mode than can reach it
(``PlanInputs.mode_units_max``: a stock-firmware miner has no eco mode).
"""

from __future__ import annotations

import numpy as np

from scheduler.planner.class_caps import class_room_kw, shed_in_order, shed_to_class_caps
from scheduler.planner.inputs import PlanInputs

EPS = 1e-6


def sum_by_class(values: np.ndarray, cm_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows of a (K, T) array summed per class: (C, T). A one-hot product, many times
    faster than ``np.add.at`` on a plan's arrays."""
    member = np.zeros((n_classes, len(cm_class)))
    member[cm_class, np.arange(len(cm_class))] = 1.0
    return np.asarray(member @ values, dtype=np.float64)


def largest_remainder(
    x: np.ndarray, cm_class: np.ndarray, units: np.ndarray, bound: np.ndarray | None = None
) -> np.ndarray:
    """Integer (K, T) counts whose class totals are the rounded LP totals (<= units), and
    no class-mode above ``bound`` (K,), the units that can reach it."""
    K, T = x.shape
    C = len(units)
    # an LP answer over a mode's bound is taken at the bound: the spare unit of its class
    # then goes to a mode that can take it
    x = np.clip(x, 0.0, None if bound is None else np.asarray(bound, dtype=np.float64)[:, None])
    floor = np.floor(x + EPS)
    rem = np.where(x - floor > EPS, x - floor, 0.0)
    class_total = sum_by_class(x, cm_class, C)
    target = np.minimum(np.floor(class_total + 0.5 - EPS), units[:, None])
    floor_total = sum_by_class(floor, cm_class, C)
    extra = (target - floor_total)[cm_class]  # spare units of k's class, per step
    # rank of each mode's remainder within its class (0 = largest), per step;
    # cm_class is sorted, so a mode's position in its class is k - first k of the class
    first = np.searchsorted(cm_class, np.arange(C))
    pos = np.arange(K) - first[cm_class]
    m_max = int(pos.max()) + 1 if K else 0
    pad = np.full((C, m_max, T), -1.0)
    pad[cm_class, pos] = rem
    order = np.argsort(-pad, axis=1, kind="stable")
    rank_pad = np.empty_like(order)
    np.put_along_axis(
        rank_pad, order, np.broadcast_to(np.arange(m_max)[None, :, None], order.shape), axis=1
    )
    rank = rank_pad[cm_class, pos]
    bump = (rank < extra) & (rem > 0)
    return (floor + bump).astype(np.int64)


def units_awake(inp: PlanInputs, n: np.ndarray) -> np.ndarray:
    """Awake units per (class, step) from units per (class-mode, step)."""
    return sum_by_class(n, inp.cm_class, inp.C)


def units_woken(inp: PlanInputs, n: np.ndarray) -> np.ndarray:
    """Change of awake units per (class, step); the first step against the units awake
    before the horizon (or, when unknown, no change)."""
    on = units_awake(inp, n)
    first = np.where(inp.initial_on >= 0, inp.initial_on, on[:, 0])
    return np.diff(on, axis=1, prepend=first[:, None])


def it_load_kw(inp: PlanInputs, n: np.ndarray) -> np.ndarray:
    """Site load at the meter per step with ``n`` units per (class-mode, step)."""
    return inp.fixed_kw + inp.marginal_kw @ n


def import_kw(inp: PlanInputs, n: np.ndarray) -> np.ndarray:
    return np.maximum(it_load_kw(inp, n) - inp.onsite_kw, 0.0)


def round_plan(
    inp: PlanInputs,
    x: np.ndarray,
    lp_import: np.ndarray,
    lp_served: np.ndarray,
    peak_kw: np.ndarray | None = None,
) -> np.ndarray:
    """Whole units per (class-mode, step) that respect the LP's import and SLA.

    The import limit of a step is the cap (or the LP's own import where the LP chose to
    break the cap), and never above a billed peak the LP settled on (``peak_kw``).
    """
    bound = inp.mode_units_cap[:, None]  # units that can reach each mode
    n = largest_remainder(x, inp.cm_class, inp.units, bound[:, 0])
    marginal = inp.marginal_kw
    hard = np.maximum(inp.cap_kw, lp_import) + EPS

    # 1. restore committed throughput lost to rounding: wake serving units, most tokens
    #    per kW first, then move units of a class to its higher-throughput modes
    #    (step 2 makes room for them under the cap)
    serving = np.flatnonzero(inp.tput_tok_s > 0)
    short = np.minimum(lp_served, inp.committed_tok_s) - inp.tput_tok_s @ n
    for k in serving[np.argsort(-inp.tput_tok_s[serving] / marginal[serving])]:
        if not (short > EPS).any():
            break
        same = inp.cm_class == inp.cm_class[k]
        free = inp.units[inp.cm_class[k]] - n[same].sum(axis=0)
        add = np.minimum.reduce([free, np.ceil(short / inp.tput_tok_s[k] - EPS), bound[k] - n[k]])
        add = np.clip(add, 0, None)
        n[k] += add.astype(np.int64)
        short -= add * inp.tput_tok_s[k]
    for k in serving[np.argsort(-inp.tput_tok_s[serving])]:
        lower = np.flatnonzero(
            (inp.cm_class == inp.cm_class[k]) & (inp.tput_tok_s < inp.tput_tok_s[k])
        )
        for j in lower[np.argsort(inp.tput_tok_s[lower])]:
            if not (short > EPS).any():
                break
            gain = inp.tput_tok_s[k] - inp.tput_tok_s[j]
            room = bound[k] - n[k]
            move = np.clip(np.minimum.reduce([n[j], np.ceil(short / gain - EPS), room]), 0, None)
            move = move.astype(np.int64)
            n[j] -= move
            n[k] += move
            short -= move * gain

    # 2. shed where a limit is exceeded: mining modes first, least revenue per kW first,
    #    then serving modes, fewest tokens per kW first (committed inference is protected).
    #    The hard cap binds every mode; a billed peak binds only modes that serve nothing.
    serves = inp.tput_tok_s > 0
    per_kw = np.where(serves, inp.tput_tok_s, inp.hashrate_ths) / np.maximum(marginal, EPS)
    order = np.lexsort((per_kw, serves))
    _shed(inp, n, hard, order, marginal)
    if peak_kw is not None:
        soft = np.minimum(hard, np.maximum(peak_kw, lp_import) + EPS)
        _shed(inp, n, soft, order[inp.tput_tok_s[order] == 0], marginal)
    shed_to_class_caps(inp, n, x, order, EPS)  # caps on part of the site, same order
    # 3. where committed inference is still short, wake serving units that fit under the
    #    hard limit, most tokens per kW first (a shed fast mode may leave room for a slow one)
    short = np.minimum(lp_served, inp.committed_tok_s) - inp.tput_tok_s @ n
    if (short > EPS).any():
        headroom = hard - import_kw(inp, n)
        for k in serving[np.argsort(-inp.tput_tok_s[serving] / marginal[serving])]:
            same = inp.cm_class == inp.cm_class[k]
            free = inp.units[inp.cm_class[k]] - n[same].sum(axis=0)
            add = np.minimum.reduce(
                [
                    free,
                    bound[k] - n[k],
                    np.ceil(np.maximum(short, 0.0) / inp.tput_tok_s[k] - EPS),
                    np.floor(
                        np.maximum(np.minimum(headroom, class_room_kw(inp, n, x, k)), 0.0)
                        / max(marginal[k], EPS)
                        + EPS
                    ),
                ]
            )
            add = np.clip(add, 0, None).astype(np.int64)
            n[k] += add
            short -= add * inp.tput_tok_s[k]
            headroom -= add * marginal[k]
    return n


def _shed(
    inp: PlanInputs, n: np.ndarray, limit: np.ndarray, order: np.ndarray, marginal: np.ndarray
) -> None:
    shed_in_order(n, import_kw(inp, n) - limit, order, marginal, EPS)
