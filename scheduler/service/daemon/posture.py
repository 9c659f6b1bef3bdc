"""The shutdown posture read back: an accepted command is not a device asleep."""

from __future__ import annotations

import time
from typing import Any

from adapters.fleet import Fleet, Outcome


async def confirm_posture(fleet: Fleet, outcomes: list[Outcome], limit_s: float) -> dict[str, Any]:
    """Read the devices told to take a posture (the shutdown's) back until each shows it,
    for at most ``limit_s`` and no longer than their firmware's deadline: an accepted
    command is not a device asleep. Returns how many were told, confirmed by read-back,
    not confirmed in time, and failed."""
    accepted = [o for o in outcomes if o.ok]
    wait_s = min(
        limit_s,
        max((fleet.by_id[o.device_id].confirm_deadline_s() for o in accepted), default=0),
    )
    t0 = time.monotonic()
    seen = await fleet.confirm(accepted, wait_s) if accepted and wait_s > 0 else {}
    confirmed = sum(1 for s in seen.values() if s is not None)
    return {
        "told": len(outcomes),
        "confirmed": confirmed,
        "unconfirmed": len(accepted) - confirmed,
        "failed": len(outcomes) - len(accepted),
        "waited_s": round(time.monotonic() - t0, 1),  # the read-back's own time
        "limit_s": round(wait_s, 1),  # the most it would wait
    }
