"""The programs this daemon has heard of, for their payload descriptors.

User Guide 7.6: "A payloadDescriptor list may also be included in a program object. This
provides default values for all events associated with a program." PROGRAM notifications
(webhook or VEN) are remembered here; an event's own descriptors override its program's,
field by field, and ``[openadr] units``/``currency`` apply only where neither gives one.
Kept in memory: a VEN reads every program again on start, and without them an event's
payload whose units are unknown is recorded as not acted on rather than guessed.
"""

from __future__ import annotations

from typing import Any

#: payload type -> descriptor fields (units, currency)
Descriptors = dict[str, dict[str, Any]]


def descriptors_of(raw: Any) -> Descriptors:
    """A payloadDescriptors list by payload type (entries without payloadType are skipped)."""
    out: Descriptors = {}
    for d in raw if isinstance(raw, list) else []:
        if isinstance(d, dict) and "payloadType" in d:
            out[str(d["payloadType"])] = {k: v for k, v in d.items() if v is not None}
    return out


class Programs:
    def __init__(self) -> None:
        self._by_id: dict[str, Descriptors] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def learn(self, operation: str, obj: Any) -> None:
        """Take a PROGRAM notification's object: created or updated, or deleted."""
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            return
        if operation.upper() == "DELETE":
            self._by_id.pop(obj["id"], None)
        elif operation.upper() in ("POST", "PUT", "CREATE", "UPDATE"):
            self._by_id[obj["id"]] = descriptors_of(obj.get("payloadDescriptors"))

    def descriptors(self, program_id: Any) -> Descriptors:
        return self._by_id.get(str(program_id), {}) if program_id is not None else {}


def merged(event: Descriptors, program: Descriptors) -> Descriptors:
    """The event's descriptors over its program's, field by field."""
    out = {k: dict(v) for k, v in program.items()}
    for kind, fields in event.items():
        out.setdefault(kind, {}).update(fields)
    return out
