"""A signal's request as a utility's webhook sends it: the Standard Webhooks headers that
sign its body (``scheduler.service.security.sign``) and its content type."""

from __future__ import annotations

import time

from scheduler.service.security import sign


def signed_headers(secret: str, msg_id: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    """The headers of ``body`` sent as message ``msg_id`` at ``ts`` (now, if None), signed
    with ``secret``."""
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }
