"""Command-line values that ``plan`` and ``backtest`` share: the usage error, and the grid
events that ``--events`` names."""

from __future__ import annotations

import argparse
from datetime import datetime

from models.errors import GridschedError
from models.signals import GridEvent, events_from_power_trace, load_events
from models.site import SiteConfig


class UsageError(GridschedError):
    """A command-line value is invalid."""


def read_events(args: argparse.Namespace, config: SiteConfig) -> list[GridEvent]:
    """``--events``: a JSON list of signals, or a CSV power trace of a real DR event
    replayed as caps (``--events-at`` places it; ``--events-scale-kw`` scales it)."""
    if not args.events:
        return []
    if not args.events.endswith(".csv"):
        return load_events(args.events)
    if not args.events_at:
        raise UsageError(
            "a power-trace event file (.csv) needs --events-at, the time its "
            "first row is replayed at (ISO 8601 with offset)"
        )
    try:
        at = datetime.fromisoformat(args.events_at.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--events-at {args.events_at!r} is not ISO 8601") from None
    scale = args.events_scale_kw or config.site.interconnect_kw
    return events_from_power_trace(args.events, at, scale)
