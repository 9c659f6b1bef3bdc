"""Whether an OpenADR 3 event is for this VEN, and for which of its resources.

3.1.0 events carry ``targets`` as strings (Definition, Object Privacy: the VTN grants them to
a VEN and its resources); 3.0.1 events as valuesMaps ``{type, values}`` (VEN_NAME,
RESOURCE_NAME, GROUP, ...). An event without targets is for every VEN and all its resources.
Matching a resource (its name or one of its targets) narrows the event to those resources;
otherwise matching the VEN (its name or one of its targets) makes it the VEN's as a whole.
"""

from __future__ import annotations

from typing import Any

from models.site import OpenADR
from scheduler.service.openadr_payloads import PayloadError, Scope


def match_targets(raw: Any, site: OpenADR) -> Scope:
    if raw is None or raw == []:
        return Scope(True, None, True, site.resources)
    if not isinstance(raw, list):
        raise PayloadError("object.targets", "expected a list of targets")
    ven_names: set[str] = set()
    resource_names: set[str] = set()
    others: set[str] = set()
    for k, t in enumerate(raw):
        if isinstance(t, str):  # 3.1.0
            others.add(t)
        elif isinstance(t, dict) and "type" in t and isinstance(t.get("values"), list):  # 3.0.1
            values = {str(v) for v in t["values"]}
            kind = str(t["type"]).upper()
            if kind == "VEN_NAME":
                ven_names |= values
            elif kind == "RESOURCE_NAME":
                resource_names |= values
            else:
                others |= values
        else:
            raise PayloadError(
                f"object.targets[{k}]",
                f"expected a string (3.1.0) or {{type, values}} (3.0.1), got {t!r}",
            )
    shown = sorted(ven_names | resource_names | others)
    if site.ven_name is None:
        return Scope(
            False,
            f"the event has targets {shown}; set [openadr] ven_name (and targets, resources)"
            " to say which of them name this site",
            False,
            (),
        )
    mine = {site.ven_name, *site.targets}
    resources = tuple(
        r
        for r in site.resources
        if r.name in resource_names or r.name in others or set(r.targets) & others
    )
    named_ven = (not ven_names or site.ven_name in ven_names) and (
        bool(ven_names) or bool(mine & others)
    )
    if resources and (not ven_names or site.ven_name in ven_names):
        return Scope(True, None, False, resources)
    if named_ven:
        return Scope(True, None, True, site.resources)
    ours = sorted(
        mine | {r.name for r in site.resources} | {t for r in site.resources for t in r.targets}
    )
    return Scope(
        False,
        f"its targets {shown} name neither this VEN nor its resources ({', '.join(ours)})",
        False,
        (),
    )
