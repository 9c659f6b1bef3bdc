"""A signal the state file refuses is answered 503 in words: what refused it and what to
do, not the database driver's exception class (``OperationalError``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.service.api import create_app
from tests.support.daemon import running
from tests.support.webhook import signed_headers
from tests.test_dispatch import _daemon


def test_a_signal_the_disk_refuses_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "whsec_" + base64.b64encode(b"not-stored-test-secret").decode()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", secret)
    d = _daemon(tmp_path, 1000.0)

    async def full_disk(*args: Any, **kwargs: Any) -> Any:
        # SQLite's own words for a full disk (sqlite3_errstr(SQLITE_FULL)); a real full
        # disk cannot be made in a test
        raise sqlite3.OperationalError("database or disk is full")

    async def go() -> dict[str, Any]:
        async with running(d):
            monkeypatch.setattr(d.store, "add_signals", full_disk)
            body = json.dumps(
                {"id": "dr", "type": "curtail", "start": "2020-01-01T00:00:00Z", "limit_kw": 0}
            ).encode()
            headers = signed_headers(secret, "msg-1", body)
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
                r = await c.post("/v1/signals", content=body, headers=headers)
            assert r.status_code == 503, r.text
            answer: dict[str, Any] = r.json()
            return answer

    caplog.set_level(logging.ERROR, "gridsched.api")
    error = asyncio.run(go())["error"]
    assert error == (
        "signal not stored: the state file refused the write (database or disk is full); "
        "send it again"
    ), error
    logged = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert logged and "OperationalError" not in logged[0], logged


def test_an_api_without_a_webhook_secret_says_so_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The docs walk (session 23): a daemon started without GRIDSCHED_WEBHOOK_SECRET logged
    nothing, and answered every signal 403. It now says so once, when the API is made;
    with a secret, nothing is said."""
    monkeypatch.delenv("GRIDSCHED_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("GRIDSCHED_WEBHOOK_SECRET_FILE", raising=False)
    d = _daemon(tmp_path, 1000.0)
    caplog.set_level(logging.WARNING, "gridsched.api")
    create_app(d)
    said = [r.getMessage() for r in caplog.records if "GRIDSCHED_WEBHOOK_SECRET" in r.getMessage()]
    assert len(said) == 1 and "403" in said[0], said
    caplog.clear()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"x" * 24).decode())
    create_app(d)
    assert not [r for r in caplog.records if "GRIDSCHED_WEBHOOK_SECRET" in r.getMessage()]
