"""Checks on a signal body after its signature and before it is stored: what parses but
cannot be meant is refused with the field named (422), a cancel of nothing is 404, a webhook
id reused for another body is 409.

Each source owns its id namespace: OpenADR 3 events are ``oadr:<event>:<interval>``; a
simple-format sender may not create, overwrite or cancel ids there (nor may it cancel an
OpenADR event by any other means), so a webhook secret does not reach the utility's events.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from models.signals import EventType, GridEvent, class_problems, level_problems
from scheduler.service.security import json_depth_over

#: Deeper than any signal format needs (an OpenADR event is about 6 levels); Python's
#: parser recurses, and a body nested a few thousand deep would exhaust its stack.
MAX_JSON_DEPTH = 32
RESERVED_PREFIXES = {"oadr:": "openadr3"}


class Refused(Exception):
    """A body that is refused: ``status`` (404, 409, 422), a message and field details."""

    def __init__(self, status: int, message: str, detail: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail or []


def parse_body(body: bytes) -> Any:
    """The body as JSON, refused (422) when not JSON or nested deeper than the limit."""
    if json_depth_over(body, MAX_JSON_DEPTH):
        raise Refused(
            422,
            f"body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
            [{"field": "(body)", "problem": f"nesting deeper than {MAX_JSON_DEPTH}"}],
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(422, f"body is not JSON: {exc}") from None


def check_ids(events: list[GridEvent], source: str, fields: list[str]) -> None:
    """Ids unique within one request, and inside the sender's namespace. ``fields`` names
    each event's place in the body (``[2].id``) for the answer."""
    problems = []
    counts = Counter(ev.id for ev in events)
    for ev, where in zip(events, fields, strict=True):
        if counts[ev.id] > 1:
            problems.append(
                {"field": where, "problem": f"id {ev.id!r} appears {counts[ev.id]} times in "
                 "this request; each event (or interval) needs its own id"}
            )  # fmt: skip
        owner = next((o for p, o in RESERVED_PREFIXES.items() if ev.id.startswith(p)), None)
        if owner is not None and owner != source:
            problems.append(
                {"field": where, "problem": f"ids beginning {ev.id.split(':')[0]!r}: belong to "
                 f"{owner} events; this sender cannot create, change or cancel them"}
            )  # fmt: skip
    if problems:
        raise Refused(422, "invalid signal ids", problems)


def check_classes(events: list[GridEvent], class_names: list[str], fields: list[str]) -> None:
    """Device classes a cap names exist at this site: stored, an unknown one would make
    every plan fail (``class_problems``) until the event ended."""
    problems = [
        {"field": where.removesuffix("id") + "classes", "problem": f"event {ev.id!r}: {what}"}
        for ev, where in zip(events, fields, strict=True)
        for _, what in class_problems([ev], class_names)
    ]
    if problems:
        raise Refused(422, "invalid signal classes", problems)


def check_levels(events: list[GridEvent], levels: dict[str, float], fields: list[str]) -> None:
    """A cap given as a level names one of the site's ``[tariff.dr_levels_kw]``: stored, one
    it has no cap for would make every plan fail (``level_problems``) until the event ended,
    the site held at the fail-safe cap and the sender told it had been taken."""
    problems = [
        {"field": where.removesuffix("id") + "level", "problem": what}
        for ev, where in zip(events, fields, strict=True)
        for what in level_problems([ev], levels)
    ]
    if problems:
        raise Refused(422, "invalid signal level", problems)


def unknown_cancels(events: list[GridEvent], stored: set[str]) -> list[str]:
    """Ids of cancels that name no stored event (``stored``: those of the request's ids
    that the store holds, cancelled or not: cancelling twice is not an error)."""
    return [ev.id for ev in events if ev.type is EventType.CANCEL and ev.id not in stored]
