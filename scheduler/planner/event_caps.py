"""Grid events as the planner reads them: a site cap and a price override per step.

Curtail and alert events cap the whole site (a level is looked up in the tariff's DR
levels); price events override the market price where they overlap, the highest priority
winning. Caps on some device classes only are read by ``class_caps.class_cap_series``.
"""

from __future__ import annotations

import numpy as np

from models.errors import ConfigError
from models.signals import EventType, GridEvent, level_problems
from models.site import SiteConfig
from scheduler.planner.timegrid import TimeGrid


def overlap(grid: TimeGrid, ev: GridEvent) -> np.ndarray:
    s = ev.start_utc.timestamp()
    e = min(ev.end_utc.timestamp(), 4e11)
    return (grid.starts_s < e) & (grid.ends_s > s)


def event_caps(
    config: SiteConfig, grid: TimeGrid, events: list[GridEvent], protected_kw: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """DR cap per step (inf where none) and price overrides (NaN where none). Caps on
    device classes are not the site's: ``class_cap_series`` reads them."""
    cap = np.full(grid.n, np.inf)
    price = np.full(grid.n, np.nan)
    price_prio = np.full(grid.n, -np.inf)
    levels = config.tariff.dr_levels_kw
    events = [ev for ev in events if overlap(grid, ev).any()]
    problems = [("events", what) for what in level_problems(events, levels)]
    if problems:
        raise ConfigError("events", problems)
    for ev in events:
        on = overlap(grid, ev)
        if ev.classes:  # a cap on part of the site: class_cap_series
            continue
        if ev.type in (EventType.CURTAIL, EventType.ALERT):
            limit = ev.limit_kw
            if limit is None and ev.level is not None:
                if ev.level == 0:
                    continue
                limit = levels[str(ev.level)]
            if limit is None:  # an alert with no figure: shed all but the protected load
                limit = levels.get("3", protected_kw)
            cap[on] = np.minimum(cap[on], limit)
        elif ev.type is EventType.PRICE and ev.price is not None:
            take = on & (ev.priority >= price_prio)
            price[take] = ev.price
            price_prio[take] = ev.priority
    return cap, (price if np.isfinite(price).any() else None)
