"""The programs this daemon has heard of, for their payload descriptors.

User Guide 7.6: "A payloadDescriptor list may also be included in a program object. This
provides default values for all events associated with a program." PROGRAM notifications
(webhook or VEN) are remembered here; an event's own descriptors override its program's,
field by field, and ``[openadr] units``/``currency`` apply only where neither gives one.

Kept in the state database too (``Store.put_openadr_programs``): what was learned is
written (:meth:`Programs.flush`) before the notification is answered or marked seen, and
loaded on start, so that after a restart with the VTN unreachable an event whose units only
its program gave is still acted on. A program never heard of leaves such a payload recorded
as not acted on, never guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
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


#: writes programs' descriptors durably (None: the program was deleted)
Save = Callable[[dict[str, Descriptors | None]], Awaitable[None]]


class Programs:
    def __init__(
        self, saved: Mapping[str, Descriptors] | None = None, save: Save | None = None
    ) -> None:
        """``saved``: what an earlier run stored; ``save``: how :meth:`flush` stores."""
        self._by_id: dict[str, Descriptors] = {k: dict(v) for k, v in (saved or {}).items()}
        self._save = save
        self._pending: dict[str, Descriptors | None] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._by_id)

    def learn(self, operation: str, obj: Any) -> None:
        """Take a PROGRAM notification's object: created or updated, or deleted."""
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            return
        pid = obj["id"]
        if operation.upper() == "DELETE":
            if self._by_id.pop(pid, None) is not None:
                self._pending[pid] = None
        elif operation.upper() in ("POST", "PUT", "CREATE", "UPDATE"):
            got = descriptors_of(obj.get("payloadDescriptors"))
            if self._by_id.get(pid) != got:  # a poll hands every program on: write changes
                self._pending[pid] = got
            self._by_id[pid] = got

    async def flush(self) -> None:
        """Store what was learned since the last flush; on failure it stays pending (and
        in force in memory) and the error is raised, so the caller does not answer or
        mark seen a notification whose program is not on disk."""
        if self._save is None:
            self._pending.clear()
            return
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await self._save(batch)
            except BaseException:
                self._pending = batch | self._pending  # later news over the failed batch
                raise

    def descriptors(self, program_id: Any) -> Descriptors:
        return self._by_id.get(str(program_id), {}) if program_id is not None else {}


def merged(event: Descriptors, program: Descriptors) -> Descriptors:
    """The event's descriptors over its program's, field by field."""
    out = {k: dict(v) for k, v in program.items()}
    for kind, fields in event.items():
        out.setdefault(kind, {}).update(fields)
    return out
