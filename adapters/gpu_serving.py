"""A GPU adapter's side of the serving layer: telling the engine a GPU's capacity (its
serving hook) and draining a GPU's requests before it is powered down.

:class:`~adapters.gpu.NvmlGpu` decides when (less capacity: told before the power limit
drops, and a GPU put to sleep is drained first; more: told after); these say what was
heard, in the words the command's outcome carries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from adapters.base import AdapterError, contain
from adapters.serving_hook import ServingHook


async def tell(
    hook: ServingHook,
    device_id: str,
    index: int,
    target_w: float,
    capacity_tok_s: float,
    sleep: bool,
    timeout_s: float,
) -> str | None:
    """Tell the serving layer this GPU's capacity; the reason when it did not hear."""
    payload = {
        "device": device_id,
        "gpu_index": index,
        "serving": not sleep,
        "power_limit_w": target_w,
        "capacity_tokens_s": round(capacity_tok_s, 1),
    }
    try:
        await contain(device_id, "serving hook", hook.notify(payload), timeout_s)
    except AdapterError as exc:
        return exc.reason
    return None


async def drain(
    device_id: str,
    in_flight: Callable[[], Awaitable[float]] | None,
    drain_s: float,
    timeout_s: float,
    on_drain: Callable[[float], None] | None = None,
) -> str:
    """Wait until the engine has nothing in flight or ``drain_s`` passes; what happened, as
    the outcome's note. An engine that cannot be read is not counted as drained: the bound
    is waited out."""
    if in_flight is None or drain_s <= 0:
        return ""
    t0 = time.monotonic()
    deadline = t0 + drain_s
    left: float | None = None
    while True:
        try:
            left = float(await contain(device_id, "in-flight", in_flight(), timeout_s))
        except AdapterError:
            left = None
        if left is not None and left <= 0:
            break
        wait = min(0.2, deadline - time.monotonic())
        if wait <= 0:
            break
        await asyncio.sleep(wait)
    took = time.monotonic() - t0
    if on_drain is not None:
        on_drain(took)
    if left is not None and left <= 0:
        return f"drained in {took:.1f} s"
    what = "in-flight requests unknown" if left is None else f"{left:g} requests in flight"
    return f"drain bound {drain_s:g} s passed ({what})"
