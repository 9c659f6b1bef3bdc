"""What the daemon's HTTP API documents about its bodies (OpenAPI): the answers, the
errors, and the signal and notification request schemas (the handlers parse the raw body
themselves, after the signature is checked)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from models.signals import FOREVER


class Accepted(BaseModel):
    accepted: bool
    duplicate: bool
    ids: list[str]
    #: the ids among them that had already ended when they came: stored (the audit log has
    #: them), capping nothing, and not listed by GET /v1/signals (in force or to come)
    ended: list[str] = []


class ErrorBody(BaseModel):
    error: str
    detail: list[dict[str, Any]] = []


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (401, 403, 413, 415, 422, 429)
}
#: A signal endpoint also answers 503 when the state file refuses the write.
SIGNAL_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 503: {"model": ErrorBody}}


SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 200},
        "type": {"type": "string", "enum": ["curtail", "price", "alert", "cancel"]},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "duration": {"type": "string", "example": "1h"},
        "limit_kw": {"type": "number", "minimum": 0},
        "level": {"type": "integer", "minimum": 0, "maximum": 3},
        "price": {"type": "number", "description": "USD/MWh"},
        "priority": {"type": "integer"},
        "classes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "device classes whose power at the meter a curtail's limit_kw caps",
        },
    },
}
NOTIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["objectType", "operation", "object"],
    "properties": {
        "objectType": {"type": "string", "example": "EVENT"},
        "operation": {"type": "string", "example": "CREATE"},
        "object": {"type": "object"},
    },
}


def shown_signal(event: dict[str, Any]) -> dict[str, Any]:
    """A stored signal as ``GET /v1/signals`` shows it: the event as it was sent, and under
    ``stored`` when it was received, from which intake (``simple``, ``openadr3``, ...) and
    until when it holds (``ends_at`` null: until cancelled), in ISO 8601 UTC. The store's
    own fields (``_received_at``, ``_source``, ``_ends_at``) stay the store's."""
    shown = {k: v for k, v in event.items() if not k.startswith("_")}
    received, ends = event.get("_received_at"), event.get("_ends_at")
    shown["stored"] = {
        "received_at": None if received is None else _iso(float(received)),
        "source": event.get("_source"),
        "ends_at": None if ends is None or float(ends) >= _FOREVER_S else _iso(float(ends)),
    }
    return shown


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


#: "until cancelled" as stored (OpenADR 3's P9999Y, ``models.signals.FOREVER``)
_FOREVER_S = FOREVER.timestamp()
