"""Price files the tests write for a daemon to plan on (``[prices] format = "csv"``, the
columns interval_start_utc and price): a flat price, hour by hour, around a moment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path


def write_flat_prices(path: Path, now_s: float, usd_per_mwh: float) -> None:
    """``usd_per_mwh`` every hour from a day before ``now_s``'s hour to two days after."""
    hour = int(now_s) // 3600 * 3600
    rows = "".join(
        f"{datetime.fromtimestamp(hour + h * 3600, UTC).isoformat()},{usd_per_mwh}\n"
        for h in range(-24, 48)
    )
    path.write_text("interval_start_utc,price\n" + rows)
