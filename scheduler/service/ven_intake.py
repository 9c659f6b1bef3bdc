"""The VEN's intake: each program and event handed to the daemon once, whatever brought it.

Polling, MQTT and the daemon's webhook route all see the same objects; an object is marked
seen (by id and ``modificationDateTime``) only after the daemon took it, so a failed
delivery is offered again by the next poll. The events held are what the poll's deletion
check and the reports (``ven_reporter``) work from. A program changed hands its held events
on again, since its payload descriptors are their defaults.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from scheduler.service.openadr_timing import OpenADRError
from scheduler.service.ven_reporter import Reporter

__all__ = ["Deliver", "VenIntake"]

# one logger for the VEN's parts (as ven_poll): an operator follows one name
log = logging.getLogger("scheduler.service.ven")

#: hands one notification-shaped dict ``{objectType, operation, object}`` to the daemon
Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class VenIntake:
    """What :class:`~scheduler.service.ven.Ven` hands on and remembers; its ``__init__``
    sets these."""

    _deliver: Deliver
    _status: dict[str, Any]
    _seen: dict[tuple[str, str], str]  # (objectType, id) -> modificationDateTime
    _events: dict[str, dict[str, Any]]  # the VTN's events as last delivered
    reports: Reporter

    async def handle(self, body: dict[str, Any], via: str = "mqtt") -> None:
        """A notification (from MQTT, or passed on by the daemon's webhook route)."""
        obj = body.get("object")
        if isinstance(obj, dict):
            await self._offer(str(body.get("objectType")), str(body.get("operation")), obj, via)

    async def _offer(self, object_type: str, operation: str, obj: dict[str, Any], via: str) -> None:
        oid = obj.get("id")
        if not isinstance(oid, str):
            return
        key = (object_type, oid)
        op = operation.upper()
        mod = str(obj.get("modificationDateTime", ""))
        if op != "DELETE" and self._seen.get(key) == mod:
            return  # already delivered (MQTT, webhook and polling all see it)
        body = {"objectType": object_type, "operation": op, "object": obj}
        try:
            await self._deliver(body)
        except (OpenADRError, ValidationError) as exc:
            # the daemon refuses what the event says, not a failure of its own: said once
            # per version of the event (the next poll offered it again, an ERROR each time)
            self._seen[key] = mod
            why = str(exc).splitlines()[0][:300] if isinstance(exc, OpenADRError) else (
                f"invalid: {exc.errors()[0].get('msg', exc)}"[:300]
            )  # fmt: skip
            refused = self._status.setdefault("events_refused", {})
            if object_type == "EVENT":
                refused[oid] = why
            log.error("VEN: the daemon refuses %s %s: %s", object_type, oid, why)
            return
        except Exception as exc:  # not marked seen: the next poll offers it again
            self._status["delivery_failures"] += 1
            self._status |= {"last_error": f"deliver {object_type} {oid}: {exc}"[:400]}
            self._status["last_error_at"] = time.time()
            log.error("VEN: could not hand %s %s to the daemon: %s", object_type, oid, exc)
            return
        self._status["deliveries"] += 1
        if object_type == "EVENT":
            self._status.get("events_refused", {}).pop(oid, None)  # read now, or deleted
        self._received(object_type, via)
        self._note(body)

    def _received(self, object_type: str, via: str) -> None:
        if object_type == "EVENT":
            got = self._status["events_received"]
            got[via] = got.get(via, 0) + 1

    def observe(self, body: dict[str, Any]) -> None:
        """A notification the daemon took by webhook itself: remember it (so polling does not
        hand it on again) and plan the reports its event asks for."""
        obj = body.get("object")
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            op = str(body.get("operation", "")).upper()
            kind = str(body.get("objectType"))
            mod = str(obj.get("modificationDateTime", ""))
            if op == "DELETE" or self._seen.get((kind, obj["id"])) != mod:
                self._received(kind, "webhook")  # first heard of by webhook
            self._note({"objectType": kind, "operation": op, "object": obj})

    def _note(self, body: dict[str, Any]) -> None:
        object_type, op, obj = body["objectType"], body["operation"], body["object"]
        oid = obj["id"]
        key = (object_type, oid)
        if op == "DELETE":
            self._seen.pop(key, None)
            if object_type == "EVENT":
                self._events.pop(oid, None)
                self.reports.forget(oid)
            return
        mod = str(obj.get("modificationDateTime", ""))
        if object_type == "PROGRAM" and self._seen.get(key, mod) != mod:
            # its payload descriptors are the defaults of its events (User Guide 7.6): the
            # events held are read again when next listed (the same poll: programs first)
            for eid, ev in self._events.items():
                if ev.get("programID") == oid:
                    self._seen.pop(("EVENT", eid), None)
        self._seen[key] = mod
        if object_type == "EVENT":
            self._events[oid] = obj
            self.reports.plan(body)
