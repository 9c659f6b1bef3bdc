"""The API against bodies that parse but cannot be meant, and clients that misbehave: a
daemon in the test's process served by uvicorn on loopback with ``gridsched run``'s server
settings (tests/support/serve.py), answers checked for status and the field they name."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.service.security import RateLimiter, RecentBodies, check_bearer, json_depth_over
from tests.support.cli import run_main
from tests.support.serve import Served
from tests.test_daemon import (
    MEMORY_SITE,
    OADR_TOKEN,
    SECRET,
    in_process,
    now_iso,
    post_signal,
    serving,
    signed,
)

AUTH = {"Authorization": f"Bearer {OADR_TOKEN}"}


def note(obj: dict[str, Any]) -> dict[str, Any]:
    base = {
        "id": "evt-h",
        "programID": "prog-1",
        "priority": 1,
        "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [150]}]}],
    }
    return {"objectType": "EVENT", "operation": "CREATE", "object": {**base, **obj}}


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A daemon of the test's own, in this process, its API on real HTTP with the settings
    ``gridsched run`` serves it with (tests/support/serve.py): what these tests check is the
    API's answer, and a fresh daemon each costs less than the process they shared (a start
    of 11 s on a loaded host), with nothing left from another test."""
    yield from in_process(tmp_path, monkeypatch)


def problems(r: httpx.Response) -> str:
    return json.dumps(r.json())


# -- bodies that parse but are absurd --------------------------------------------------------


def test_deeply_nested_json_is_422_not_500(daemon: Served) -> None:
    body = b"[" * 1800 + b"]" * 1800  # under the 4096-byte cap of the test site
    r = httpx.post(daemon.url + "/v1/signals", content=body, headers=signed(body), timeout=10)
    assert r.status_code == 422 and "deeper than 32" in r.text
    r = httpx.post(
        daemon.url + "/openadr3/notifications",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 422 and "deeper than 32" in r.text


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"start": "9999-12-31T23:00:00Z", "duration": "2h"}, "start"),
        ({"start": "2026-01-01T00:00:00Z", "end": "9999-12-31T23:00:00Z"}, "end"),
        ({"start": "2026-01-01T00:00:00Z", "duration": "99999999d"}, "duration"),
        ({"start": "2026-01-01T00:00:00Z", "priority": "5"}, "priority"),
        # int32's largest is 2**31 - 1 (the bad-input walk, session 23, L10: off by one)
        ({"start": "2026-01-01T00:00:00Z", "priority": 2**31}, "priority"),
    ],
    ids=["year-9999-start", "year-9999-end", "huge-duration", "priority-as-string", "prio-2^31"],
)
def test_absurd_simple_signal_is_422_naming_the_field(
    daemon: Served, event: dict[str, Any], field: str
) -> None:
    r = post_signal(daemon.url, {"id": f"abs-{field}", "type": "curtail", "limit_kw": 90, **event})
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]]


def test_openadr_duration_past_year_9999_is_422(daemon: Served) -> None:
    body = note({"id": "evt-long", "intervalPeriod": {"start": now_iso(), "duration": "P9998Y"}})
    r = httpx.post(daemon.url + "/openadr3/notifications", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 422, r.text
    assert "duration" in problems(r)


def test_openadr_priority_as_a_string_is_422(daemon: Served) -> None:
    body = note({"id": "evt-prio", "priority": "1"})
    r = httpx.post(daemon.url + "/openadr3/notifications", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 422 and "object.priority" in problems(r), r.text


@pytest.mark.parametrize("prio", [2**31, 10**40, 1e30])
def test_openadr_priority_beyond_int32_is_taken_as_the_spec_allows(
    daemon: Served, prio: float
) -> None:
    """The bad-input walk (session 23, L7): `priority: 1e30` was refused with "expected an
    integer", and 2**31 + 1 with "priority: Input should be greater than or equal to
    -2147483648" (the internal negated priority). The 3.1.0 schema's priority is an integer
    >= 0 with no maximum (JSON Schema counts 1e30 as one), so each is taken: as the lowest
    priority a number gives, still above null's."""
    body = note({"id": "evt-prio-big", "priority": prio})
    r = httpx.post(daemon.url + "/openadr3/notifications", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text


def test_duplicate_ids_in_one_request_are_refused(daemon: Served) -> None:
    ev = {"id": "dup-1", "type": "alert", "level": 1, "start": now_iso()}
    r = post_signal(daemon.url, [ev, {**ev, "level": 2}])
    assert r.status_code == 422 and "appears 2 times" in r.text
    intervals = [
        {"id": 3, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [150]}]},
        {"id": 3, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [90]}]},
    ]
    r = httpx.post(
        daemon.url + "/openadr3/notifications",
        json=note({"id": "evt-dup", "intervals": intervals}),
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 422 and "appears 2 times" in r.text, r.text


# -- what a sender means, accepted ------------------------------------------------------------


def test_lowercase_bearer_and_z_suffix_are_accepted(daemon: Served) -> None:
    start = now_iso().replace("Z", "z")
    r = httpx.post(
        daemon.url + "/openadr3/notifications",
        json=note({"id": "evt-lower", "intervalPeriod": {"start": start, "duration": "PT1H"}}),
        headers={"Authorization": f"bearer {OADR_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    r = post_signal(daemon.url, {"id": "z-1", "type": "alert", "level": 1, "start": start})
    assert r.status_code == 202, r.text


def test_bearer_scheme_is_case_insensitive_and_token_exact() -> None:
    check_bearer(["tok"], "bearer tok", "x")
    check_bearer(["tok"], "BEARER tok", "x")
    with pytest.raises(Exception, match="not valid"):
        check_bearer(["tok"], "bearer TOK", "x")


# -- ids: replays, cancels, namespaces ------------------------------------------------------


def test_webhook_id_reused_with_another_body_is_409(daemon: Served) -> None:
    msg_id = f"msg-{uuid.uuid4()}"
    first = {"id": "wh-1", "type": "alert", "level": 1, "start": now_iso()}
    assert post_signal(daemon.url, first, msg_id=msg_id).status_code == 202
    assert post_signal(daemon.url, first, msg_id=msg_id).status_code == 200  # a retry
    other = {**first, "level": 3}
    r = post_signal(daemon.url, other, msg_id=msg_id)
    assert r.status_code == 409 and "another body" in r.text
    # a refused body does not take the id: corrected, it is accepted
    bad_id = f"msg-{uuid.uuid4()}"
    assert post_signal(daemon.url, {**first, "priority": "x"}, msg_id=bad_id).status_code == 422
    assert post_signal(daemon.url, {**first, "id": "wh-2"}, msg_id=bad_id).status_code == 202


def test_cancel_of_an_unknown_id_is_404(daemon: Served) -> None:
    r = post_signal(daemon.url, {"id": "never-sent", "type": "cancel"})
    assert r.status_code == 404 and "never-sent" in r.text
    ev = {"id": "to-cancel", "type": "alert", "level": 1, "start": now_iso()}
    assert post_signal(daemon.url, ev).status_code == 202
    assert post_signal(daemon.url, {"id": "to-cancel", "type": "cancel"}).status_code == 202
    # cancelling again is not an error: the id is known
    assert post_signal(daemon.url, {"id": "to-cancel", "type": "cancel"}).status_code == 202


def test_simple_sender_cannot_touch_openadr_events(daemon: Served) -> None:
    r = httpx.post(
        daemon.url + "/openadr3/notifications",
        json=note({"id": "evt-ns"}),
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 202, r.text
    for ev in (
        {"id": "oadr:evt-ns:0", "type": "cancel"},
        {"id": "oadr:evt-ns:*", "type": "cancel"},
        {"id": "oadr:evt-ns:0", "type": "curtail", "limit_kw": 10000, "start": now_iso()},
    ):
        r = post_signal(daemon.url, ev)
        assert r.status_code == 422 and "openadr3" in r.text, r.text
    signals = httpx.get(daemon.url + "/v1/signals", timeout=10).json()["signals"]
    mine = [s for s in signals if s["id"] == "oadr:evt-ns:0"]
    assert mine and mine[0]["stored"]["source"] == "openadr3" and mine[0]["limit_kw"] == 150


def test_stored_signals_are_shown_without_the_stores_own_fields(daemon: Served) -> None:
    """GET /v1/signals showed the store's bookkeeping under its own names (``_received_at``
    as epoch seconds, ``_source``, ``_ends_at`` 4e11 for "until cancelled"); a reader gets
    the event as sent and, apart, when it came, from which intake and until when it holds."""
    ev = {"id": "shown", "type": "curtail", "limit_kw": 40, "start": now_iso()}
    assert post_signal(daemon.url, ev).status_code == 202
    ends = {"id": "shown-2", "type": "curtail", "limit_kw": 40, "start": now_iso()}
    assert post_signal(daemon.url, {**ends, "duration": "1h"}).status_code == 202
    signals = httpx.get(daemon.url + "/v1/signals", timeout=10).json()["signals"]
    got = {s["id"]: s for s in signals if s["id"] in ("shown", "shown-2")}
    assert not [k for s in got.values() for k in s if k.startswith("_")], got
    first, second = got["shown"]["stored"], got["shown-2"]["stored"]
    assert first["source"] == "simple" and first["ends_at"] is None, first
    received = datetime.fromisoformat(first["received_at"])
    assert abs(received.timestamp() - time.time()) < 3600, first
    ends_at = datetime.fromisoformat(second["ends_at"])
    assert 0 < ends_at.timestamp() - time.time() <= 3600, second


def test_signal_command_cancel_needs_an_id_and_a_known_one(
    daemon: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", SECRET)
    cmd = ("signal", "cancel", "--url", daemon.url)  # run by main, in this process
    res = run_main(*cmd)
    assert res.returncode == 2 and "cancel needs --id" in res.stderr
    res = run_main(*cmd, "--id", "no-such-event")
    assert res.returncode == 1 and res.stdout.startswith("404"), res.stdout + res.stderr


# -- clients that misbehave -----------------------------------------------------------------


# rate 0.5/s, burst 1: a client's second request within 2 s is refused (at 1/s a loaded
# host took a second per request, the bucket refilled as fast and no request was refused)
LIMITED = """
rate_per_s = 0.5
max_connections = 8
request_timeout_s = 1
keep_alive_s = 1
"""


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """``daemon`` with the limits above: its own rate limiter, so no test spends another's
    budget. It has planned, as a started process has: its /healthz answers 200, so a 503
    is the connection limit's alone."""
    text = MEMORY_SITE.replace("[daemon]\n", "[daemon]" + LIMITED, 1)
    with serving(tmp_path, monkeypatch, text) as served:
        assert served.call(served.daemon.replan("start")) is not None
        yield served


def test_x_forwarded_for_is_not_believed_without_a_configured_proxy(limited: Served) -> None:
    def get(i: int) -> int:
        headers = {"X-Forwarded-For": f"10.9.0.{i}"}
        return httpx.get(limited.url + "/v1/status", headers=headers, timeout=30).status_code

    # four at a time (under max_connections): they reach the limiter back to back however
    # slow each request is on a loaded host
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(get, range(8)))
    assert 429 in codes, codes  # one client, however many addresses it claims


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (within a generous limit)."""
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_idle_and_slow_connections_are_closed(limited: Served) -> None:
    host, port = "127.0.0.1", int(limited.url.rsplit(":", 1)[1])
    idle = socket.create_connection((host, port))
    slow = socket.create_connection((host, port))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    body = socket.create_connection((host, port))
    body.sendall(b"POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    keep = socket.create_connection((host, port))
    keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in (idle, slow, body, keep):
        assert _closed_by_server(s)
        s.close()


def test_connections_past_the_limit_get_503(limited: Served) -> None:
    port = int(limited.url.rsplit(":", 1)[1])
    codes = []
    for _ in range(5):  # the held sockets are idle: the 1 s request deadline may close them
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        try:
            r = httpx.get(limited.url + "/healthz", timeout=10)
        finally:
            for s in held:
                s.close()
        codes.append(r.status_code)
        if r.status_code == 503:  # uvicorn's own answer, before the app
            assert "json" not in r.headers.get("content-type", ""), r.text  # not the app's
            break
    assert 503 in codes, codes


# -- bounded state ----------------------------------------------------------------------------


def test_rate_limiter_state_is_bounded_and_keeps_active_clients() -> None:
    lim = RateLimiter(rate=1.0, burst=2.0, max_clients=100)
    assert lim.allow("busy", now=0.0) and lim.allow("busy", now=0.0)
    assert not lim.allow("busy", now=0.0)
    for i in range(10_000):
        lim.allow(f"10.0.{i // 256}.{i % 256}", now=0.0)
        if i % 50 == 0:
            assert not lim.allow("busy", now=0.0)  # still limited while others come and go
    assert len(lim) <= 100


def test_recent_bodies_tell_a_retry_from_a_reuse() -> None:
    seen = RecentBodies(keep_s=10, max_ids=3)
    assert seen.check("a", b"1", now=0) and seen.check("a", b"1", now=1)
    assert not seen.check("a", b"2", now=2)
    assert seen.check("a", b"2", now=20)  # forgotten after keep_s
    for k in "bcde":
        seen.check(k, b"x", now=21)
    assert seen.check("a", b"3", now=21)  # beyond max_ids, the oldest is forgotten


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert not json_depth_over(b'{"a": "[[[[[[[[[[[["}', 3)
    assert json_depth_over(b"[[[[1]]]]", 3)
    assert not json_depth_over(b'[["\\"["]]', 2)


# -- the container ----------------------------------------------------------------------------


def test_container_binds_what_the_operator_chooses() -> None:
    text = (Path(__file__).resolve().parent.parent / "deploy/container/Containerfile").read_text()
    cmd = text.split("\nCMD", 1)[1]
    assert "--listen" not in cmd  # the address comes from $GRIDSCHED_LISTEN
    assert "ENV GRIDSCHED_LISTEN=127.0.0.1:8080" in text  # the default, documented in it
    assert "-c constraints.txt" in text  # the versions the tests passed with


def test_webhook_id_reuse_is_409_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon closed and another opened on its state file (in this process: the first
    one's in-memory digests go with it, as a process's restart loses them)."""
    msg_id = f"msg-{uuid.uuid4()}"
    ev = {"id": "restart-1", "type": "alert", "level": 1, "start": now_iso()}
    with serving(tmp_path, monkeypatch) as daemon:
        assert post_signal(daemon.url, ev, msg_id=msg_id).status_code == 202
    with serving(tmp_path, monkeypatch) as daemon:  # the stored digest still tells
        # the same ids with other values is another body, first thing after the restart
        r = post_signal(daemon.url, {**ev, "level": 2}, msg_id=msg_id)
        assert r.status_code == 409, r.text
        r = post_signal(daemon.url, {**ev, "id": "restart-2"}, msg_id=msg_id)
        assert r.status_code == 409, r.text
        assert post_signal(daemon.url, ev, msg_id=msg_id).status_code == 200  # a retry


def test_a_client_gone_before_its_body_ended_is_said_without_a_traceback() -> None:
    """The bad-input walk (session 23): a client that dropped mid-body had the ASGI
    server log "Exception in ASGI application" with a traceback (ClientDisconnect out of
    the body reader): any client could fill the log. It is a 400 in words."""
    import asyncio as _asyncio

    from starlette.requests import Request as _Request

    from models.config_daemon import Daemon as _DaemonConfig
    from scheduler.service.api_guards import Guards
    from scheduler.service.security import AuthError

    sent = iter([{"type": "http.request", "body": b'{"id":', "more_body": True}])

    async def receive() -> dict[str, object]:
        return next(sent, {"type": "http.disconnect"})

    scope = {"type": "http", "method": "POST", "path": "/v1/signals", "headers": []}
    guards = Guards(_DaemonConfig())
    with pytest.raises(AuthError) as err:
        _asyncio.run(guards.body_of(_Request(scope, receive)))
    assert err.value.status == 400 and "disconnected" in str(err.value), err.value


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/v1/nothing-here", 404, "no such endpoint: GET /v1/nothing-here"),
        ("DELETE", "/v1/signals", 405, "DELETE is not allowed on /v1/signals"),
        ("GET", "/openadr3/notifications", 422, "echo"),
    ],
)
def test_every_refusal_has_the_api_s_own_shape(
    daemon: Served, method: str, path: str, status: int, words: str
) -> None:
    """The bad-input walk (session 23, L8): 404, 405 and a missing query parameter were
    FastAPI's own bodies ({"detail": "Not Found"}, {"detail": [{"type": "missing", "loc":
    ["query", "echo"], ...}]}), not the {"error", "detail": [{field, problem}]} that every
    other refusal of the API has and docs/daemon.md promises."""
    r = httpx.request(method, daemon.url + path, headers=AUTH, timeout=10)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert words in body["error"] + json.dumps(body["detail"]), body
    for item in body["detail"]:
        assert set(item) >= {"field", "problem"}, body
