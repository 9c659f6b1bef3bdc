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
import re
import time
from collections import OrderedDict
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
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ValueError(
                "a whsec_ secret must be base64 after the prefix (A-Z a-z 0-9 + / =)"
            ) from None
        if not key:
            raise ValueError("a whsec_ secret needs a key after the prefix")
        return key
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
        off = abs(round(now) - t)  # in integers: a 40-digit timestamp is no float's
        raise AuthError(
            401,
            f"webhook-timestamp {t} is {off} s in the "
            f"{'past' if t < now else 'future'} by this server's clock; "
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
    """``Authorization: Bearer <token>`` against the configured tokens, in constant time.
    The scheme is case-insensitive (RFC 9110 section 11.1): ``bearer`` is accepted."""
    scheme, _, given_text = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given_text.strip():
        raise AuthError(401, f"{what} needs 'Authorization: Bearer <token>'")
    given = given_text.strip().encode()
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given, t.encode())
    if not ok:
        raise AuthError(403, f"the bearer token is not valid for {what}")


class SecretConfigError(ValueError):
    """A configured secret cannot work (unreadable file, placeholder, malformed): the
    message names the variable, never the value, and says how to fix it."""


#: Values shipped as examples (deploy/systemd/gridsched.env): never a real credential.
_PLACEHOLDER = re.compile(r"(change|replace)[_-]?me|^<.*>$|^\.\.\.$", re.IGNORECASE)
#: The fewest bytes (webhook key) or characters (bearer token) a secret may have, as the
#: GPU agents' secrets (Standard Webhooks suggests 24-64 random bytes).
MIN_SECRET = 16
GENERATE_WEBHOOK = "whsec_$(head -c 24 /dev/urandom | base64)"
GENERATE_TOKEN = "$(head -c 24 /dev/urandom | base64 | tr -d /+=)"


def read_secret_list(
    env: str, file_env: str | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Secrets from ``$ENV`` (comma-separated) or from the file named by ``$FILE_ENV``;
    raises :class:`SecretConfigError` when that file cannot be read or holds nothing."""
    environ = os.environ if environ is None else environ
    values: list[str] = []
    raw = environ.get(env)
    if raw:
        values += [v.strip() for v in raw.split(",") if v.strip()]
    if file_env and environ.get(file_env):
        path = environ[file_env]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SecretConfigError(
                f"{file_env}={path}: cannot read the secret file ({why}); create it "
                f"(mode 0600, readable by the daemon's user) or unset {file_env}"
            ) from None
        from_file = [v.strip() for v in text.replace(",", "\n").splitlines() if v.strip()]
        if not from_file:
            raise SecretConfigError(
                f"{file_env}={path}: the secret file is empty; write the secret into it"
            )
        values += from_file
    return values


def secret_problems(
    env: str, file_env: str, webhook: bool, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Why the secrets under ``env``/``file_env`` cannot work, one line each (empty: they
    can, or none is configured). ``webhook``: Standard Webhooks secrets, else bearer tokens."""
    try:
        values = read_secret_list(env, file_env, environ)
    except SecretConfigError as exc:
        return [str(exc)]
    problems = []
    how = GENERATE_WEBHOOK if webhook else GENERATE_TOKEN
    for k, value in enumerate(values, 1):
        entry = f"{env} entry {k} of {len(values)}" if len(values) > 1 else env
        if _PLACEHOLDER.search(value.removeprefix("whsec_")):
            problems.append(
                f"{entry} is the shipped placeholder {value!r}, not a secret; generate one "
                f"(e.g. {how}) and give the same value to the sender"
            )
        elif webhook:
            try:
                size = len(_secret_bytes(value))
            except ValueError as exc:
                problems.append(f"{entry}: {exc} (e.g. {how})")
                continue
            if size < MIN_SECRET:
                problems.append(
                    f"{entry}: {size} bytes of key, short enough to find from one signed "
                    f"request; a webhook secret needs {MIN_SECRET} or more (e.g. {how}, "
                    "24 random bytes), given to the sender too"
                )
        elif len(value) < MIN_SECRET:
            problems.append(
                f"{entry}: {len(value)} character{'s' * (len(value) != 1)}, short enough to "
                f"guess; a token needs {MIN_SECRET} or more (e.g. {how}), given to the "
                "VTN too"
            )
    return problems


def webhook_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The Standard Webhooks secrets in force; :class:`SecretConfigError` when one of them
    cannot be used (each request re-reads them, so a rotated file takes effect)."""
    env, file_env = "GRIDSCHED_WEBHOOK_SECRET", "GRIDSCHED_WEBHOOK_SECRET_FILE"
    problems = secret_problems(env, file_env, True, environ)
    if problems:
        raise SecretConfigError("; ".join(problems))
    return read_secret_list(env, file_env, environ)


@dataclass
class RateLimiter:
    """Token bucket per client: ``rate`` requests per second, bursts up to ``burst``.

    At most ``max_clients`` buckets are kept, least recently seen dropped first (O(1) per
    request): a client dropped returns with a full bucket, so the bound must stay well
    above the clients a site has (its VTN, its operators, its proxies)."""

    rate: float = 2000.0
    burst: float = 4000.0
    max_clients: int = 10_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class RecentBodies:
    """Body digests of recent webhook ids, so that an id reused with another body is told
    apart from a retry (409, not a silent 200). Bounded: ids older than ``keep_s`` (past
    the timestamp tolerance a retry must meet) or beyond ``max_ids`` are forgotten."""

    def __init__(self, keep_s: float = 2 * TOLERANCE_S + 60, max_ids: int = 100_000) -> None:
        self.keep_s = keep_s
        self.max_ids = max_ids
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def check(self, msg_id: str, body: bytes, now: float | None = None) -> bool:
        """True when ``msg_id`` is new or was seen with this same body; records it."""
        now = time.monotonic() if now is None else now
        while self._seen and next(iter(self._seen.values()))[1] < now - self.keep_s:
            self._seen.popitem(last=False)
        digest = hashlib.sha256(body).hexdigest()
        seen = self._seen.get(msg_id)
        if seen is not None:
            return hmac.compare_digest(seen[0], digest)
        self._seen[msg_id] = (digest, now)
        if len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        return True

    def forget(self, msg_id: str) -> None:
        """A request refused after :meth:`check` (nothing stored): the id is free again."""
        self._seen.pop(msg_id, None)


def json_depth_over(body: bytes, max_depth: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``max_depth``, found without
    parsing (Python's parser recurses: a deep enough body raises RecursionError)."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False
