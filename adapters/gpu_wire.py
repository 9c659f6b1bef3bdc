"""The GPU agent's protocol (``gridsched gpu-agent``), shared by the agent and the daemon.

JSON lines over TCP, optionally inside TLS. The agent speaks first, a hello::

    {"protocol": "gridsched-gpu-agent/1", "auth": "hmac-sha256", "challenge": "<64 hex>"}

With ``auth = "hmac-sha256"`` the client answers ``{"nonce": "<64 hex>", "mac": "<hex>"}``,
an HMAC-SHA256 under the shared secret of the agent's challenge and its own nonce; the
agent answers ``{"ok": true, "mac": ...}`` (its own proof over the same two, so the client
knows it talks to an agent that holds the secret) or ``AUTH_FAILED`` and closes. The
secret never crosses the wire. Each line after that is ``<64 hex> <json>``: an HMAC of
the direction, a per-direction sequence number and the JSON under a session key drawn
from both random values, so a line cannot be forged, altered, replayed or moved to
another connection. With ``auth = "none"`` (loopback only) the lines are the JSON alone.

Requests and answers have the shape of the simulator's control port
(``adapters.sim.fleet``)::

    {"op": "count"}                                     -> {"ok": true, "gpus": 8}
    {"op": "gpu", "index": 3, "call": "set_limit_w", "args": [350]}
                                                        -> {"ok": true, "result": null}
    -> {"ok": false, "code": "NOT_SUPPORTED", "error": "Not Supported"}

``code`` is NVML's own (``NVML_ERROR_*`` without the prefix) for NVML's refusals,
``NOT_ALLOWED`` for a call outside :data:`CALLS`, ``BAD_REQUEST`` for a line that is not a
valid request, ``AGENT_ERROR`` (with ``class``) for the agent's own failures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from typing import Any

PROTOCOL = "gridsched-gpu-agent/1"
DEFAULT_PORT = 7731
#: Shortest shared secret either side accepts (a guessable one would make the HMAC moot).
MIN_SECRET_CHARS = 16
#: Longest line either side reads (a request is under 200 bytes; a reading's answer too).
MAX_LINE_BYTES = 1 << 14
#: The NVML calls the daemon's GPU adapter (``adapters.gpu.NvmlGpu``) makes, and how many
#: numbers each takes: nothing else is served (``adapters.nvml.PynvmlBackend`` names them).
CALLS: dict[str, int] = {
    "identity": 0,
    "driver_version": 0,
    "limit_constraints_w": 0,
    "reading": 0,
    "power_w": 0,
    "limit_w": 0,
    "energy_j": 0,
    "utilisation_pct": 0,
    "sm_clock_mhz": 0,
    "temperature_c": 0,
    "set_limit_w": 1,
    "set_locked_clocks": 2,
    "reset_locked_clocks": 0,
}
#: Calls about the host, not one GPU: the index is not checked.
HOST_CALLS = ("driver_version",)


class WireError(Exception):
    """A line that breaks the protocol (bad MAC, not JSON, wrong shape)."""


def nonce() -> str:
    return secrets.token_hex(32)


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join((PROTOCOL, *parts)).encode(), hashlib.sha256).hexdigest()


def client_proof(secret: bytes, challenge: str, client_nonce: str) -> str:
    return _mac(secret, "client", challenge, client_nonce)


def agent_proof(secret: bytes, challenge: str, client_nonce: str) -> str:
    return _mac(secret, "agent", challenge, client_nonce)


def same(a: str, b: str) -> bool:
    """Constant-time comparison (a timing leak would let a MAC be guessed byte by byte)."""
    return hmac.compare_digest(a.encode(), b.encode())


class Channel:
    """One connection's framing: plain JSON lines, or MAC'd ones under a session key."""

    def __init__(self, key: bytes | None, send: str, receive: str) -> None:
        self.key, self._send_dir, self._recv_dir = key, send, receive
        self._sent = self._received = 0

    @classmethod
    def session(cls, secret: bytes, challenge: str, client_nonce: str, agent: bool) -> Channel:
        key = bytes.fromhex(_mac(secret, "session", challenge, client_nonce))
        return cls(key, "a2c", "c2a") if agent else cls(key, "c2a", "a2c")

    def encode(self, obj: dict[str, Any]) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        if self.key is None:
            return body + b"\n"
        mac = self._line_mac(self._send_dir, self._sent, body)
        self._sent += 1
        return mac.encode() + b" " + body + b"\n"

    def decode(self, line: bytes) -> dict[str, Any]:
        body = line.strip()
        if self.key is not None:
            mac, _, body = body.partition(b" ")
            want = self._line_mac(self._recv_dir, self._received, body)
            if not hmac.compare_digest(mac, want.encode()):
                raise WireError("line MAC does not match (altered, replayed or wrong key)")
            self._received += 1
        return parse_json(body)

    def _line_mac(self, direction: str, seq: int, body: bytes) -> str:
        assert self.key is not None
        head = f"{direction}|{seq}|".encode()
        return hmac.new(self.key, head + body, hashlib.sha256).hexdigest()


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WireError(f"not a JSON line: {body[:60]!r}") from None
    if not isinstance(obj, dict):
        raise WireError(f"not a JSON object: {body[:60]!r}")
    return obj


def check_request(req: dict[str, Any], gpus: int) -> tuple[int, str, tuple[float, ...]]:
    """A GPU call's (index, call, args), or ValueError naming what is wrong; a call outside
    :data:`CALLS` is :class:`NotAllowed`."""
    call = req.get("call")
    if not isinstance(call, str):
        raise ValueError('"call" must be a string naming an NVML call')
    if call not in CALLS:
        raise NotAllowed(call)
    index = req.get("index")
    if call not in HOST_CALLS and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < gpus
    ):
        raise ValueError(f"GPU index {index!r}: this host has {gpus} GPUs (0..{gpus - 1})")
    args = req.get("args", [])
    if not isinstance(args, list) or len(args) != CALLS[call]:
        raise ValueError(f'{call} takes {CALLS[call]} numbers in "args", got {args!r}')
    nums = []
    for a in args:
        if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a):
            raise ValueError(f"{call}: argument {a!r} is not a finite number")
        nums.append(float(a))
    return (index if isinstance(index, int) else -1), call, tuple(nums)


class NotAllowed(ValueError):
    """A call the agent does not serve."""

    def __init__(self, call: str) -> None:
        super().__init__(
            f"call {call!r} is not served by the GPU agent; allowed: {', '.join(CALLS)}"
        )
        self.call = call
