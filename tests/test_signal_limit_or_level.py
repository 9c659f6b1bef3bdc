"""A signal gives ``limit_kw`` or ``level``, not both (field audit, session 21): a body with
both was accepted and ``limit_kw`` silently applied, the level never looked at; which one the
sender meant is a guess. Refused wherever a simple-format event comes in (the webhook 422,
event files and ``[[events]]``, ``gridsched signal``); an event stored before, with both,
still loads and keeps acting as it did (``limit_kw``), so that an upgrade drops no cap in
force. OpenADR 3 is not concerned: each payload becomes an event of its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.errors import ConfigError
from models.signals import GridEvent, parse_events
from tests.support.cli import run_main
from tests.support.clock import FakeClock
from tests.support.memfleet import run_open
from tests.test_daemon import (
    api_daemon,  # noqa: F401 (a fixture)
    now_iso,
    post_signal,
    read_only_daemon,  # noqa: F401 (a fixture)
)
from tests.test_daemon_parts import _daemon as parts_daemon

BOTH: dict[str, Any] = {"limit_kw": 500, "level": 2}
WORDS = ("limit_kw", "level", "not both")


def event(kind: str = "curtail", **extra: Any) -> dict[str, Any]:
    return {"id": "both-1", "type": kind, "start": "2026-12-02T12:00:00Z", "duration": "1h"} | extra


@pytest.mark.parametrize("kind", ["curtail", "alert"])
def test_the_model_refuses_both(kind: str) -> None:
    with pytest.raises(ValidationError) as err:
        GridEvent.model_validate(event(kind, **BOTH))
    text = str(err.value)
    assert all(w in text for w in WORDS), text


@pytest.mark.parametrize("one", [{"limit_kw": 500}, {"level": 2}, {"limit_kw": 500, "level": None}])
def test_one_of_them_is_taken(one: dict[str, Any]) -> None:
    ev = GridEvent.model_validate(event(**one))
    assert (ev.limit_kw, ev.level) == (one.get("limit_kw"), one.get("level"))


def test_an_events_file_with_both_names_the_event() -> None:
    with pytest.raises(ConfigError) as err:
        parse_events([event(limit_kw=5), event(id="both-2", **BOTH)], "events.json")
    text = str(err.value)
    assert "[1]" in text and all(w in text for w in WORDS), text


def test_the_webhook_refuses_both_with_422_naming_them(read_only_daemon: Any) -> None:  # noqa: F811
    """Nothing is stored (``read_only_daemon`` checks), the answer names both fields."""
    body = {"id": "both-wh", "type": "curtail", "start": now_iso(), **BOTH}
    r = post_signal(read_only_daemon.url, [body])
    assert r.status_code == 422, r.text
    problems = " ".join(d["problem"] for d in r.json()["detail"])
    assert all(w in problems for w in WORDS), r.json()
    assert r.json()["detail"][0]["field"].startswith("[0]"), r.json()


def test_the_cli_refuses_both_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "whsec_" + "QUJD" * 8)
    url = "http://127.0.0.1:9"  # nothing listens: a send would fail with another message
    res = run_main("signal", "curtail", "--limit-kw", "500", "--level", "2", "--url", url)
    err = res.stderr
    assert res.returncode == 2, err
    assert "--limit-kw" in err and "--level" in err and "not both" in err, err
    assert "127.0.0.1:9" not in err, err  # refused before any request


def test_a_stored_event_with_both_still_caps_at_its_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored before the refusal: read again on a restart, it acts as before (limit_kw)."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    caps: list[float] = []

    async def body() -> None:
        now = d.clock.time()
        old = {"id": "old-both", "type": "curtail", **BOTH, "_ends_at": now + 3600}
        old["start"] = datetime.fromtimestamp(now - 60, UTC).isoformat()
        await d.store.add_signals([old], "simple", None, "{}", now + 3600)
        d.signals._book = None  # as on a restart: the book is read from the store
        caps.append(d.signals.cap_now(now)[0])

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    assert not [r for r in caplog.records if "no longer validates" in r.getMessage()]
    assert caps == [min(500.0, d.config.site.interconnect_kw)], caps


def test_the_cli_sends_to_the_daemon_s_listen_address_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The docs walk (session 23): ``gridsched run`` listens on ``$GRIDSCHED_LISTEN`` when
    set, and ``gridsched signal`` still sent to 127.0.0.1:8080. A wildcard host is sent to
    on loopback."""
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "whsec_" + "QUJD" * 8)
    for listen, url in (("127.0.0.1:9", "http://127.0.0.1:9"), ("0.0.0.0:9", "http://127.0.0.1:9")):
        monkeypatch.setenv("GRIDSCHED_LISTEN", listen)
        res = run_main("signal", "curtail", "--limit-kw", "5")
        assert res.returncode == 2 and f"{url}:" in res.stderr, res.stderr
