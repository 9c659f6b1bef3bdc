"""Webhook security: Standard Webhooks signatures, bearer tokens, a rate limit.

Standard Webhooks: the sender signs ``"{webhook-id}.{webhook-timestamp}.{body}"`` with
HMAC-SHA256 under a shared secret (``whsec_`` + base64, or any string) and sends
``webhook-signature: v1,<base64 signature>`` (several space-separated signatures allowed,
for secret rotation). The receiver checks the timestamp is within +-300 s and compares in
constant time. Ids are remembered (in the store) until their event ends: a retried
delivery is answered without being applied twice.

Secrets come from the environment or a file, never from the site file, and are never
logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TOLERANCE_S = 300


class AuthError(Exception):
    """Rejected request: ``status`` is the HTTP status, the message says what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a message (senders and tests use it)."""
    mac = hmac.new(_secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify_webhook(
    secrets: list[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Check a Standard Webhooks request; returns its webhook id or raises AuthError(401)."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    missing = [
        n
        for n, v in (("webhook-id", msg_id), ("webhook-timestamp", ts), ("webhook-signature", sig))
        if not v
    ]
    if missing:
        raise AuthError(401, f"missing header(s) {', '.join(missing)} (Standard Webhooks)")
    assert msg_id is not None and ts is not None and sig is not None
    if len(msg_id) > 200:
        raise AuthError(401, "webhook-id longer than 200 characters")
    try:
        t = int(ts)
    except ValueError:
        raise AuthError(401, f"webhook-timestamp {ts[:40]!r} is not integer Unix seconds") from None
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise AuthError(
            401,
            f"webhook-timestamp {t} is {now - t:+.0f} s from this server's clock; "
            f"allowed +-{tolerance_s} s (check NTP on both sides)",
        )
    expected = [sign(s, msg_id, t, body).encode() for s in secrets]
    ok = False
    for part in sig.split():
        for e in expected:  # compare against every secret (rotation); constant time each
            ok |= hmac.compare_digest(part.encode(), e)
    if not ok:
        raise AuthError(401, "webhook-signature does not match (HMAC-SHA256 of id.timestamp.body)")
    return msg_id


def check_bearer(tokens: list[str], header: str | None, what: str) -> None:
    """``Authorization: Bearer <token>`` against the configured tokens, in constant time."""
    if not header or not header.startswith("Bearer "):
        raise AuthError(401, f"{what} needs 'Authorization: Bearer <token>'")
    given = header.removeprefix("Bearer ").strip().encode()
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given, t.encode())
    if not ok:
        raise AuthError(403, f"the bearer token is not valid for {what}")


def read_secret_list(env: str, file_env: str | None = None) -> list[str]:
    """Secrets from ``$ENV`` (comma-separated) or from the file named by ``$FILE_ENV``."""
    values: list[str] = []
    raw = os.environ.get(env)
    if raw:
        values += [v.strip() for v in raw.split(",") if v.strip()]
    if file_env and os.environ.get(file_env):
        text = Path(os.environ[file_env]).read_text(encoding="utf-8")
        values += [v.strip() for v in text.replace(",", "\n").splitlines() if v.strip()]
    return values


@dataclass
class RateLimiter:
    """Token bucket per client: ``rate`` requests per second, bursts up to ``burst``."""

    rate: float = 2000.0
    burst: float = 4000.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10000:  # forget idle clients
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True
