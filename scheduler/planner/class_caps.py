"""Caps on part of the site: events that name device classes (``GridEvent.classes``).

Such a cap limits the power of those classes at the meter, as ``site_load_kw`` counts it
with no base load: PUE x (idle power of every unit in service + what awake units draw above
idle). It leaves the site's import and every other class alone. Events naming the same set
of classes are one group; where several are in force, the tightest cap holds.

The LP gets one row per (group, step) of the horizon, soft at the DR cap's price, so that a
cap moving across a rolling horizon changes bounds, not the matrix; rounding sheds to it;
``class_caps_at`` gives the daemon's fast path the caps in force at one moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from models.economics import site_load_kw
from models.errors import ConfigError
from models.signals import EventType, GridEvent, class_problems, resolve_cancels
from models.site import SiteConfig
from scheduler.planner.matrices import INF, ModelBuilder

if TYPE_CHECKING:
    from scheduler.planner.inputs import PlanInputs
    from scheduler.planner.timegrid import TimeGrid

__all__ = [
    "class_cap_series",
    "class_caps_at",
    "class_excess_kw",
    "define_class_caps",
    "group_power_kw",
    "shed_to_class_caps",
]


def _capping(events: list[GridEvent]) -> list[GridEvent]:
    return [e for e in events if e.type is EventType.CURTAIL and e.classes]


def _check(events: list[GridEvent], class_names: list[str]) -> None:
    problems = class_problems(events, class_names)
    if problems:
        raise ConfigError("events", problems)


def class_cap_series(
    class_names: list[str], grid: TimeGrid, events: list[GridEvent]
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The groups of classes capped within the horizon (class indices) and their cap per
    step, (G, T) kW at the meter, inf where none holds. ``events``: cancels resolved.
    Raises ConfigError naming an event whose classes the site has not got."""
    capping = _capping(events)
    _check(capping, class_names)
    groups: list[tuple[int, ...]] = []
    rows: list[np.ndarray] = []
    for ev in capping:
        on = (grid.starts_s < min(ev.end_utc.timestamp(), 4e11)) & (
            grid.ends_s > ev.start_utc.timestamp()
        )
        if not on.any() or ev.limit_kw is None:
            continue
        key = tuple(sorted(class_names.index(c) for c in ev.classes or ()))
        if key not in groups:
            groups.append(key)
            rows.append(np.full(grid.n, np.inf))
        row = rows[groups.index(key)]
        row[on] = np.minimum(row[on], ev.limit_kw)
    caps = np.array(rows) if rows else np.zeros((0, grid.n))
    return groups, caps


def class_caps_at(
    config: SiteConfig, events: list[GridEvent], t: datetime
) -> dict[tuple[str, ...], float]:
    """Caps in force at ``t``: {classes (in the site's order): kW at the meter}, the
    tightest where several events name the same classes. The site file's events count;
    cancels are resolved as the planner resolves them. Compare each with
    ``site_load_kw(IT kW of those classes, pue, 0.0)``. Raises ConfigError naming an
    event whose classes the site has not got."""
    names = [d.name for d in config.devices]
    live = _capping(resolve_cancels([*config.events, *events]))
    _check(live, names)
    out: dict[tuple[str, ...], float] = {}
    for ev in live:
        if ev.active_at(t) and ev.limit_kw is not None:
            key = tuple(sorted(ev.classes or (), key=names.index))
            out[key] = min(out.get(key, np.inf), ev.limit_kw)
    return out


def class_excess_kw(
    config: SiteConfig, caps: dict[tuple[str, ...], float], it_kw_by_class: Mapping[str, float]
) -> dict[tuple[str, ...], float]:
    """Meter kW above each cap of ``caps`` (``class_caps_at``), for the groups above it:
    PUE x the IT kW of the group's classes (read, else last known: never 0 for a device
    that cannot be read) less the cap. Raises ValueError naming a capped class with no
    figure in ``it_kw_by_class``."""
    out: dict[tuple[str, ...], float] = {}
    for classes, cap_kw in caps.items():
        missing = [c for c in classes if c not in it_kw_by_class]
        if missing:
            raise ValueError(f"no IT power figure for capped classes {missing}")
        it_kw = sum(float(it_kw_by_class[c]) for c in classes)
        excess = float(site_load_kw(it_kw, config.site.pue, 0.0)) - cap_kw
        if excess > 0:
            out[classes] = excess
    return out


def _member(inp: PlanInputs) -> np.ndarray:
    """(G, C) True where class c is in group g."""
    member = np.zeros((len(inp.class_cap_groups), inp.C), dtype=bool)
    for g, cls in enumerate(inp.class_cap_groups):
        member[g, list(cls)] = True
    return member


def _fixed_kw(inp: PlanInputs, member: np.ndarray) -> np.ndarray:
    """(G,) meter kW of each group with every unit in service idle."""
    return np.asarray(site_load_kw(member @ (inp.idle_kw * inp.units), inp.pue, 0.0))


def group_power_kw(inp: PlanInputs, n: np.ndarray) -> np.ndarray:
    """(G, T) meter kW of each capped group with ``n`` units per (class-mode, step)."""
    member = _member(inp)
    in_group = member[:, inp.cm_class].astype(np.float64)  # (G, K)
    return np.asarray(
        _fixed_kw(inp, member)[:, None] + (in_group * inp.marginal_kw[None, :]) @ n,
        dtype=np.float64,
    )


def define_class_caps(b: ModelBuilder, inp: PlanInputs, x: np.ndarray) -> None:
    """Per capped group and step: meter kW of its classes <= the cap, softened by a slack
    priced as the DR cap's. Steps without a cap get a bound no plan can reach."""
    G, T = len(inp.class_cap_groups), inp.T
    if G == 0:
        return
    member = _member(inp)
    fixed = _fixed_kw(inp, member)
    capped = np.isfinite(inp.class_cap_kw)
    marginal = inp.marginal_kw
    reach = fixed + member[:, inp.cm_class] @ (np.maximum(marginal, 0.0) * inp.units[inp.cm_class])
    upper = np.where(capped, inp.class_cap_kw - fixed[:, None], reach[:, None] + 1.0)
    price = inp.penalties.dr_cap_usd_per_mwh * inp.grid.dt_h / 1000.0
    slack = b.add_vars(
        "slack-class-cap", (G, T), 0.0, np.where(capped, INF, 0.0), np.broadcast_to(price, (G, T))
    )
    g_of, k_of = np.nonzero(member[:, inp.cm_class])  # (group, class-mode) pairs
    rows = g_of[:, None] * T + np.arange(T)[None, :]
    b.add_cons(
        "class-cap",
        (G, T),
        [
            (rows, x[k_of], np.broadcast_to(marginal[k_of][:, None], rows.shape)),
            (np.arange(G * T).reshape(G, T), slack, -1.0),
        ],
        upper=upper,
    )


def shed_to_class_caps(
    inp: PlanInputs, n: np.ndarray, lp_x: np.ndarray, order: np.ndarray, eps: float
) -> None:
    """Put units of a capped group to sleep, in ``order``, where the whole-unit plan draws
    more than the cap (or than the LP did, where the LP chose to break it)."""
    if not inp.class_cap_groups:
        return
    limit = np.maximum(inp.class_cap_kw, group_power_kw(inp, lp_x)) + eps
    marginal = inp.marginal_kw
    member = _member(inp)
    for g in range(len(inp.class_cap_groups)):
        excess = group_power_kw(inp, n)[g] - limit[g]
        shed_in_order(n, excess, order[member[g, inp.cm_class[order]]], marginal, eps)


def shed_in_order(
    n: np.ndarray, excess: np.ndarray, order: np.ndarray, marginal: np.ndarray, eps: float
) -> None:
    """Put units to sleep, class-mode by class-mode in ``order``, each step as few as cover
    what is left of its ``excess`` kW (at the mode's ``marginal`` kW a unit), until no step
    exceeds; ``n`` (and ``excess``) change in place. Modes that draw nothing are passed."""
    for k in order:
        if not (excess > 0).any():
            break
        if marginal[k] <= 0:
            continue
        drop = np.minimum(n[k], np.ceil(np.maximum(excess, 0.0) / marginal[k] - eps))
        n[k] -= drop.astype(np.int64)
        excess -= drop * marginal[k]


def class_room_kw(inp: PlanInputs, n: np.ndarray, lp_x: np.ndarray, k: int) -> np.ndarray:
    """(T,) meter kW class-mode ``k`` may still add under the caps of its groups (inf
    where none holds)."""
    room = np.full(inp.T, np.inf)
    if not inp.class_cap_groups:
        return room
    member = _member(inp)[:, inp.cm_class[k]]
    limit = np.maximum(inp.class_cap_kw, group_power_kw(inp, lp_x))[member]
    left = limit - group_power_kw(inp, n)[member]
    return np.asarray(np.minimum(room, left.min(axis=0)) if len(left) else room)
