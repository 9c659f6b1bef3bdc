"""A signal carries only the fields its type acts on (field audit, session 21): a ``price``
with ``limit_kw`` or ``level``, a ``curtail`` or ``alert`` with ``price``, a ``cancel`` with a
cap, a price, ``classes`` or a time, a ``notice`` with a cap or a price, were accepted and the
field silently ignored; what the sender meant (a cap? a price? a cancel from 14:00?) is a
guess. Refused wherever a simple-format event comes in (the webhook 422, event files and
``[[events]]``, ``gridsched signal``), each refusal naming the field, the type and what the
type takes; an event stored before, with such a field, still loads and acts as it did, so an
upgrade drops no cap in force. OpenADR 3 payloads never become such an event
(tests/test_openadr*.py); docs/daemon.md's table says what each type takes, as the model does.
"""

from __future__ import annotations

import logging
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.errors import ConfigError
from models.signals import TAKES, EventType, GridEvent, parse_events
from models.site import OpenADR, OpenADRResource, parse_site
from scheduler.service.openadr import read_notification
from scheduler.service.openadr_payloads import PAYLOAD_TYPES
from tests.support.cli import run_main
from tests.support.clock import FakeClock
from tests.support.memfleet import run_open
from tests.support.sitefile import site_text
from tests.test_daemon import (
    api_daemon,  # noqa: F401 (a fixture)
    now_iso,
    post_signal,
    read_only_daemon,  # noqa: F401 (a fixture)
)
from tests.test_daemon_parts import _daemon as parts_daemon
from tests.test_signal_types_doc import SECTION

ROOT = Path(__file__).resolve().parent.parent
TIMES = {"start": "2026-12-02T12:00:00Z", "duration": "1h"}
#: (type, the fields it ignores that the event gives, a word of what the type takes)
IGNORED: list[tuple[str, dict[str, Any], str]] = [
    ("price", {"price": 50, "limit_kw": 500}, "price (USD/MWh)"),
    ("price", {"price": 50, "level": 2}, "price (USD/MWh)"),
    ("curtail", {"limit_kw": 500, "price": 50}, "limit_kw or level"),
    ("curtail", {"level": 2, "price": 50}, "limit_kw or level"),
    ("alert", {"price": 50}, "limit_kw or level"),
    ("cancel", {"limit_kw": 500}, "id only"),
    ("cancel", {"level": 2}, "id only"),
    ("cancel", {"price": 50}, "id only"),
    ("cancel", {"classes": ["asic"]}, "id only"),
    ("cancel", {"start": TIMES["start"]}, "id only"),
    ("cancel", {"duration": "1h"}, "id only"),
    ("cancel", {"end": "2026-12-02T13:00:00Z"}, "id only"),
    ("notice", {"detail": "why", "limit_kw": 500}, "detail"),
    ("notice", {"detail": "why", "price": 50}, "detail"),
]
#: the fields whose type decides whether they act (id, source, priority, detail and
#: payload_type any type may carry: a record of what was sent)
CHECKED = {"limit_kw", "level", "price", "classes", "start", "end", "duration"}


def event(kind: str, fields: dict[str, Any], eid: str = "f-1") -> dict[str, Any]:
    times = {} if kind == "cancel" else TIMES
    return {"id": eid, "type": kind, **times, **fields}


def ignored_names(kind: str, fields: dict[str, Any]) -> list[str]:
    """The fields of ``fields`` that a ``kind`` does not take (what the refusal names)."""
    return [f for f in fields if f in CHECKED and f not in TAKES[EventType(kind)]]


def assert_says(text: str, kind: str, fields: dict[str, Any], takes: str) -> None:
    names = ignored_names(kind, fields)
    assert names, (kind, fields)  # each case gives at least one field its type ignores
    assert all(n in text for n in names), text
    assert f"a {kind} event" in text and takes in text and "leave" in text, text


@pytest.mark.parametrize(("kind", "fields", "takes"), IGNORED)
def test_the_model_refuses_a_field_the_type_ignores(
    kind: str, fields: dict[str, Any], takes: str
) -> None:
    with pytest.raises(ValidationError) as err:
        GridEvent.model_validate(event(kind, fields))
    assert_says(str(err.value), kind, fields, takes)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("curtail", {"limit_kw": 500, "classes": ["asic"]}),
        ("curtail", {"level": 2, "priority": 3, "detail": "ERCOT EEA2"}),
        ("price", {"price": 50, "priority": 2}),
        ("alert", {}),
        ("alert", {"level": 3, "detail": "grid emergency"}),
        ("cancel", {}),
        ("notice", {"detail": "a heads-up"}),
        ("price", {"price": 50, "limit_kw": None, "level": None}),  # null: not given
    ],
)
def test_what_each_type_takes_is_taken(kind: str, fields: dict[str, Any]) -> None:
    ev = GridEvent.model_validate(event(kind, fields))
    for name, value in fields.items():
        got = getattr(ev, name)
        assert got == (tuple(value) if isinstance(value, list) else value), name


def test_an_events_file_names_the_event() -> None:
    bad = event("price", {"price": 50, "limit_kw": 500}, "f-2")
    with pytest.raises(ConfigError) as err:
        parse_events([event("price", {"price": 50}), bad], "events.json")
    text = str(err.value)
    assert "[1]" in text, text
    assert_says(text, "price", {"price": 50, "limit_kw": 500}, "price (USD/MWh)")


def test_a_site_files_events_name_the_event() -> None:
    ok = {"id": "p", "type": "price", **TIMES, "price": 50.0}
    bad = {"id": "c", "type": "curtail", **TIMES, "limit_kw": 5.0, "price": 50.0}
    text = site_text("fields") + "".join(
        "\n[[events]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in e.items()) for e in (ok, bad)
    )
    with pytest.raises(ConfigError) as err:
        parse_site(tomllib.loads(text), "site.toml")
    said = str(err.value)
    assert re.search(r"events\W+1", said), said
    assert_says(said, "curtail", {"price": 50.0}, "limit_kw or level")


def _toml(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def test_the_webhook_refuses_with_422_naming_the_field(read_only_daemon: Any) -> None:  # noqa: F811
    """Nothing is stored (``read_only_daemon`` checks); the answer names the field, the
    type and what the type takes, at the event's place in the body."""
    bodies = [
        {"id": "wh-ok", "type": "price", "start": now_iso(), "price": 40},
        {"id": "wh-bad", "type": "price", "start": now_iso(), "price": 40, "level": 2},
    ]
    r = post_signal(read_only_daemon.url, bodies)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [d["field"].split(".")[0] for d in detail] == ["[1]"], detail
    assert_says(detail[0]["problem"], "price", {"level": 2}, "price (USD/MWh)")


def test_the_webhook_refuses_a_cancel_with_a_time(read_only_daemon: Any) -> None:  # noqa: F811
    r = post_signal(read_only_daemon.url, {"id": "wh-c", "type": "cancel", "start": now_iso()})
    assert r.status_code == 422, r.text
    assert_says(r.json()["detail"][0]["problem"], "cancel", {"start": 0}, "id only")


@pytest.mark.parametrize(
    "argv",
    [
        ("price", "--price", "50", "--limit-kw", "500"),
        ("price", "--price", "50", "--level", "2"),
        ("curtail", "--limit-kw", "500", "--price", "50"),
        ("alert", "--price", "50"),
        ("cancel", "--id", "x", "--limit-kw", "5"),
        ("cancel", "--id", "x", "--price", "50"),
        ("cancel", "--id", "x", "--start", "2026-12-02T12:00:00Z"),
        ("cancel", "--id", "x", "--duration", "1h"),
        ("cancel", "--id", "x", "--end", "2026-12-02T12:00:00Z"),
    ],
)
def test_the_cli_refuses_a_flag_the_type_ignores_before_sending(
    argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "whsec_" + "QUJD" * 8)
    url = "http://127.0.0.1:9"  # nothing listens: a send would fail with another message
    res = run_main("signal", *argv, "--url", url)
    err = res.stderr
    assert res.returncode == 2, err
    flags = [a for a in argv[1:] if a.startswith("--") and a != "--id"]
    ignored = [f for f in flags if f.removeprefix("--").replace("-", "_") not in TAKES[
        EventType(argv[0])]]  # fmt: skip
    assert ignored and all(f in err for f in ignored), err
    assert f"a {argv[0]}" in err and "127.0.0.1:9" not in err, err  # refused before sending


def test_a_stored_event_with_an_ignored_field_still_acts_as_it_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored before the refusal: read again on a restart, a curtail that gave a price still
    caps, and a price that gave a limit still caps nothing."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    caps: list[float] = []

    async def body() -> None:
        now = d.clock.time()
        start = datetime.fromtimestamp(now - 60, UTC).isoformat()
        old = [
            {"id": "old-cut", "type": "curtail", "limit_kw": 7.0, "price": 50.0},
            {"id": "old-price", "type": "price", "price": 50.0, "limit_kw": 1.0},
        ]
        old = [{**e, "start": start, "_ends_at": now + 3600} for e in old]
        await d.store.add_signals(old, "simple", None, "{}", now + 3600)
        d.signals._book = None  # as on a restart: the book is read from the store
        cap, events = d.signals.cap_now(now)
        caps.append(cap)
        assert {e.id for e in d.signals.active_events(now)} >= {"old-cut", "old-price"}
        assert [e.id for e in events] == ["old-cut"], events

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    assert not [r for r in caplog.records if "no longer validates" in r.getMessage()]
    assert caps == [7.0], caps


#: whole VEN (a resource for the whole site) and a resource covering some device classes
OADR_SITES = {
    "whole": OpenADR(ven_name="v", resources=(OpenADRResource(name="m"),)),
    "classes": OpenADR(
        ven_name="v", resources=(OpenADRResource(name="r", targets=("r",), classes=("asic",)),)
    ),
}


@pytest.mark.parametrize("site", sorted(OADR_SITES))
@pytest.mark.parametrize("kind", [*sorted(PAYLOAD_TYPES), "PRIVATE_X"])
def test_openadr_payloads_never_make_an_event_this_refuses(kind: str, site: str) -> None:
    """Each OpenADR 3 payload type, read with units and currency declared, a priority, a
    second value (sub-intervals) and a zero-length interval (a cancel): every event it makes
    validates, so none is refused for a field its type ignores (tests/test_openadr_fuzz.py
    lets a refused event pass, since the API names it: here none may be)."""
    units = {"PRICE": "KWH"}.get(kind, "KW")
    payload = {"type": kind, "values": [2, 1]}
    obj: dict[str, Any] = {
        "id": "e1",
        "priority": 1,
        "payloadDescriptors": [{"payloadType": kind, "units": units, "currency": "USD"}],
        "intervalPeriod": {"start": "2026-08-10T18:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [payload]}, {"id": 1, "payloads": [payload]}],
    }
    zero = {"start": "2026-08-10T19:00:00Z", "duration": "PT0S"}
    obj["intervals"][1]["intervalPeriod"] = zero
    if site == "classes":
        obj["targets"] = [{"type": "RESOURCE_NAME", "values": ["r"]}]
    body = {"objectType": "EVENT", "operation": "CREATE", "object": obj}
    now = datetime(2026, 8, 10, 17, tzinfo=UTC)
    events = read_notification(body, now, OADR_SITES[site]).events
    kinds = {GridEvent.model_validate(ev).type for ev in events}  # raises if refused
    assert EventType.CANCEL in kinds and len(kinds) > 1, events


def test_the_docs_table_says_what_each_type_takes() -> None:
    """docs/daemon.md's table of the simple format's types: its ``with`` column names the
    fields each type takes, as the model's ``TAKES`` has them (times aside: every type but
    cancel takes start, end or duration, which the text after the table says)."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    rows = [r for r in section.splitlines() if re.match(r"\| `[a-z]+` \|", r)][1:]
    said = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        said[cells[0].strip("`")] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    assert set(said) == {t.value for t in EventType}, said
    for kind, names in said.items():
        takes = set(TAKES[EventType(kind)]) - {"start", "end", "duration"}
        assert names & CHECKED == takes, (kind, names, takes)
        assert "start" in TAKES[EventType(kind)] or kind == "cancel", kind
