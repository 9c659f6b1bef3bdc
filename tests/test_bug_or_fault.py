"""One rule for "is this failure a bug?" (:func:`adapters.faults.is_bug`), used by every
place that catches a failure: a bug keeps its class name and its traceback is logged once
per place it was raised; an expected fault (a device, the disk, the network, a feed, bad
input) is one line in words. Each test below failed on the code before the rule, where
the places disagreed: what is logged (caplog: traceback or not, the words) and what the
operator sees (/v1/status, the API's answer)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from adapters.base import BadReply, ControlRejected, DeviceUnreachable, contain
from adapters.faults import file_refused, is_bug, named, traceback_once
from models.errors import DataError
from scheduler.planner.solvers import SolverError
from scheduler.service.api import create_app
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.feeds import feed_error
from tests.support.clock import FakeClock
from tests.support.httpserver import loopback_http
from tests.support.memfleet import run_open
from tests.support.webhook import signed_headers
from tests.test_daemon_parts import _daemon as parts_daemon
from tests.test_failsafe import _fill_the_disk

PY_NAMES = ("KeyError", "IndexError", "TypeError", "ValueError", "OperationalError")


def _ours(module: str, filename: str, source: str, name: str) -> Any:
    """A function compiled as if it were in one of gridsched's packages (``module``), at
    its own ``filename`` so that its place is this test's alone: a bug there is ours."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def _raised(fn: Any, *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:  # the test wants whatever it raised
        return exc
    raise AssertionError("nothing raised")


def _tracebacks(caplog: pytest.LogCaptureFixture, words: str) -> list[bool]:
    """For each log line that contains ``words``: whether it carries a traceback."""
    return [r.exc_info is not None for r in caplog.records if words in r.getMessage()]


# -- the rule itself, on real exceptions ----------------------------------------------------------


def _real_sqlite(tmp_path: Path) -> dict[str, sqlite3.Error]:
    full = sqlite3.connect(tmp_path / "full.db")
    full.execute("PRAGMA max_page_count = 2")
    errors: dict[str, sqlite3.Error] = {}
    with pytest.raises(sqlite3.Error) as err:
        full.execute("CREATE TABLE u (x)")
        full.execute("INSERT INTO u VALUES (zeroblob(100000))")
    errors["full"] = err.value
    with pytest.raises(sqlite3.Error) as err:
        full.execute("SELECT * FROM no_such_table")
    errors["sql"] = err.value
    full.close()
    with pytest.raises(sqlite3.Error) as err:
        full.execute("SELECT 1")
    errors["closed"] = err.value
    return errors


def test_the_rule_on_real_exceptions(tmp_path: Path) -> None:
    sql = _real_sqlite(tmp_path)
    assert not is_bug(sql["full"]) and file_refused(sql["full"])  # the disk
    assert is_bug(sql["sql"]) and is_bug(sql["closed"])  # our use of the file
    assert not is_bug(sqlite3.OperationalError("database or disk is full"))  # SQLite's words
    assert not is_bug(_raised(open, tmp_path / "none"))  # the disk: an OSError
    assert not is_bug(DeviceUnreachable("m/1", "connection refused"))  # ours, on purpose
    assert not is_bug(SolverError("HiGHS: out of memory"))
    assert not is_bug(DataError("p.csv", "no rows"))
    assert not is_bug(httpx.ConnectError("refused"))  # a library's own, on purpose
    assert not is_bug(_raised(json.loads, "{"))  # JSONDecodeError: json says what it met
    # a library choking on our data is our bug; on what the world sent, the world's
    numpy = _raised(np.add, np.zeros(2), np.zeros(3))
    assert is_bug(numpy) and not is_bug(numpy, reading=True)
    lib_key = _raised(_ours("pyasic._probe", "<pyasic>", "def f(d):\n    d['x']\n", "f"), {})
    assert is_bug(lib_key) and not is_bug(lib_key, reading=True)
    # raised in our code: a KeyError is a bug everywhere, a ValueError only off the reading
    key = _raised(_ours("scheduler._probe", "<key>", "def f(d):\n    d['x']\n", "f"), {})
    assert is_bug(key) and is_bug(key, reading=True)
    value = _raised(_ours("adapters._probe", "<value>", "def f(s):\n    float(s)\n", "f"), "a")
    assert is_bug(value) and not is_bug(value, reading=True)
    assert is_bug(ExceptionGroup("two", [OSError(5, "EIO"), KeyError("x")]))
    assert not is_bug(ExceptionGroup("two", [OSError(5, "EIO"), TimeoutError()]))
    assert named(KeyError("x")) == "KeyError: 'x'"


def test_a_bugs_traceback_is_logged_once_per_place() -> None:
    bug = _ours("scheduler._probe_once", "<once>", "def f(d):\n    return d['x']\n", "f")
    first, second = _raised(bug, {}), _raised(bug, {})
    assert traceback_once(first) is first
    assert traceback_once(second) is None  # the same file and line
    assert traceback_once(OSError(5, "EIO")) is None  # a fault has none
    never_raised = KeyError("x")
    assert traceback_once(never_raised) is never_raised  # no place: always said


# -- a device call: a RuntimeError in our own code ------------------------------------------------


def test_a_runtime_error_in_our_adapter_code_is_a_bug_not_an_odd_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: ``BadReply: telemetry: dictionary changed size during iteration``, as if the
    miner had answered oddly, and no traceback."""
    source = (
        "async def read(d):\n"
        "    for k in d:\n"
        "        d[k + 'x'] = 1\n"  # grows the dict it walks: RuntimeError, a bug
    )
    buggy = _ours("adapters._probe_runtime", "<runtime bug>", source, "read")

    async def main() -> BaseException:
        try:
            await contain("m/1", "telemetry", buggy({"a": 1}), 5.0)
        except BadReply as exc:
            return exc
        raise AssertionError("contain did not raise")

    caplog.set_level(logging.ERROR, "gridsched.adapters")
    err = asyncio.run(main())
    assert str(err).startswith("m/1: telemetry: RuntimeError: dictionary changed size"), err
    assert _tracebacks(caplog, "a bug in gridsched") == [True]


# -- the re-plan ----------------------------------------------------------------------------------


def test_a_bug_in_a_re_plan_is_named_and_its_traceback_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every re-plan that met the same bug logged its traceback again (a re-plan
    runs every few minutes and after every signal)."""
    d, _ = parts_daemon(tmp_path, FakeClock(), hashprice=1.0)
    source = "def plan(inputs, *a):\n    return {}['cap_kw']\n"
    buggy = _ours("scheduler._probe_replan", "<bug in the planner>", source, "plan")

    async def body() -> None:
        monkeypatch.setattr(d.planning.planner, "plan", buggy)
        for _ in range(3):
            assert await d.replan("test") is None
            assert d.status()["plan"]["error"] == "KeyError: 'cap_kw'"

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    assert _tracebacks(caplog, "re-plan (test) failed") == [True, False, False]


# -- background tasks -----------------------------------------------------------------------------


def test_a_device_or_network_fault_in_a_background_task_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a device's refusal (ControlRejected) or httpx's ConnectError ending a
    background task logged a traceback, as a bug does (issue 16: no tracebacks for device
    faults); and a bug's traceback was logged at every failure."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    bug = _ours("scheduler._probe_task", "<bug in a task>", "async def t():\n    {}['x']\n", "t")

    async def raises(exc: BaseException) -> None:
        raise exc

    async def main() -> None:
        d.tasks.spawn(raises(ControlRejected("m/1", "profileset refused: busy")), "fast-path")
        d.tasks.spawn(raises(httpx.ConnectError("All connection attempts failed")), "ven")
        d.tasks.spawn(bug(), "replan")
        d.tasks.spawn(bug(), "replan")
        while d.tasks.running:
            await asyncio.sleep(0.01)

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    asyncio.run(main())
    assert _tracebacks(caplog, "task fast-path failed") == [False]
    assert _tracebacks(caplog, "task ven failed") == [False]
    assert _tracebacks(caplog, "task replan failed") == [True, False]
    line = next(r.getMessage() for r in caplog.records if "fast-path" in r.getMessage())
    assert "profileset refused: busy" in line, line


# -- the feeds ------------------------------------------------------------------------------------


@pytest.fixture
def header_only_csv() -> Iterator[str]:
    """A price feed that answers a header and no rows (a day not yet published)."""

    class HeaderOnly(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"interval_start_utc,price\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    with loopback_http(HeaderOnly) as url:
        yield url + "/prices.csv"


def test_a_feed_with_a_header_and_no_rows_is_said_in_words(
    tmp_path: Path, header_only_csv: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A CSV with a header and no rows (a day not yet published). Before: pandas raised
    IndexError inside itself and /v1/status said ``IndexError: single positional indexer is
    out-of-bounds`` with a traceback in the log, as for a bug in gridsched; then the
    library's words behind the feed's URL; now what is wrong, named after the feed (not the
    scratch file it was parsed from)."""
    feed = {"kind": "http", "url": header_only_csv, "column": "price"}
    d, _ = parts_daemon(tmp_path, FakeClock(), daemon_extra={"price_feed": feed})
    caplog.set_level(logging.WARNING, "gridsched.daemon")
    for _ in range(2):
        asyncio.run(d.feeds.refresh_prices())
    error = d.status()["prices"]["error"] or ""
    assert error.startswith(header_only_csv) and "no rows under the header" in error, error
    assert not [n for n in PY_NAMES if n in error] and "tmp" not in error, error
    # one line for the two refreshes (the same error is logged once), with no traceback
    assert _tracebacks(caplog, "price feed (http)") == [False]


def test_a_library_choking_on_a_feeds_body_is_the_feeds_fault() -> None:
    """A builtin exception raised inside a library reading the feed's body (pandas'
    IndexError on an empty column) is the feed's fault, in words, not a bug of ours."""
    try:
        pd.Series([], dtype=str).iloc[0]
    except IndexError as exc:
        error = feed_error(exc, "http://feed.example/prices.csv")
    assert error.startswith("http://feed.example/prices.csv: the answer cannot be read"), error
    assert "IndexError" not in error, error


# -- the audit trail's writer ---------------------------------------------------------------------


def test_an_audit_record_on_a_closed_connection_is_a_bug_not_the_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writing on a closed SQLite connection is our use of the file (ProgrammingError).
    Before: /v1/status said ``Cannot operate on a closed database.`` as if the state file
    had refused, with no traceback."""
    from scheduler.service.daemon.counters import Counters
    from scheduler.service.daemon.recorder import Recorder

    con = sqlite3.connect(tmp_path / "s.db")
    con.close()

    class Closed:
        async def record(self, kind: str, payload: Any, at: float | None = None) -> int:
            con.execute("INSERT INTO records VALUES (1)")
            return 0

    recorder = Recorder(Closed(), Counters())  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, "gridsched.daemon")
    assert not asyncio.run(recorder.audit("note", {}))
    assert recorder.error == "ProgrammingError: Cannot operate on a closed database.", recorder
    assert _tracebacks(caplog, "not written") == [True]


# -- the signal writer and the API's answer -------------------------------------------------------


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "whsec_" + base64.b64encode(b"bug-or-fault-test-secret").decode()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", value)
    return value


async def _post(d: Daemon, secret: str, msg_id: str) -> httpx.Response:
    body = json.dumps(
        {"id": msg_id, "type": "curtail", "start": "2020-01-01T00:00:00Z", "limit_kw": 0}
    ).encode()
    headers = signed_headers(secret, msg_id, body)
    transport = httpx.ASGITransport(app=create_app(d))
    async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
        return await c.post("/v1/signals", content=body, headers=headers)


def test_a_bug_in_the_signal_writer_is_not_the_state_file_refusing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    secret: str,
) -> None:
    """Before: a KeyError in the write was logged as ``signal write failed: the state file
    refused it: KeyError: 'ids'`` and answered ``the state file refused the write``."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    source = "async def add_signals(*a, **k):\n    return {}['ids']\n"
    buggy = _ours("scheduler._probe_signals", "<bug in the signal writer>", source, "add_signals")
    answers: list[httpx.Response] = []

    async def body() -> None:
        monkeypatch.setattr(d.store, "add_signals", buggy)
        answers.append(await _post(d, secret, "bug-1"))
        answers.append(await _post(d, secret, "bug-2"))

    caplog.set_level(logging.ERROR, "gridsched")
    run_open(d, body)
    for r in answers:
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert "state file" not in error and "KeyError: 'ids'" in error, error
        assert "send it again" in error, error
    lines = [r.getMessage() for r in caplog.records if "signal" in r.getMessage()]
    assert lines and not [x for x in lines if "state file" in x], lines
    assert any("a bug in gridsched" in x and "KeyError: 'ids'" in x for x in lines), lines
    # one traceback for the place, over both signals and both loggers (writer and API)
    assert [r.exc_info is not None for r in caplog.records].count(True) == 1, caplog.records


def test_a_full_state_file_is_said_in_words_and_the_resent_signal_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: str
) -> None:
    """A real full disk (the state file at its size limit): the writer's line and the
    API's answer say so in words without a traceback; once there is room, the signal sent
    again is stored and in the event book."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    answers: list[httpx.Response] = []

    async def body() -> None:
        await _fill_the_disk(d)
        answers.append(await _post(d, secret, "full-1"))
        await d.store.write(lambda con: con.execute("PRAGMA max_page_count = 1000000"))
        answers.append(await _post(d, secret, "full-1"))
        assert "full-1" in {e.id for e in d.signals.active_events(time.time())}

    caplog.set_level(logging.ERROR, "gridsched")
    run_open(d, body)
    refused, kept = answers
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert "the state file refused the write (the disk is full" in error, error
    assert "SQLITE_FULL" in error and "OperationalError" not in error, error
    assert kept.status_code == 202, kept.text
    writer = [r for r in caplog.records if "signal write failed" in r.getMessage()]
    assert writer and "the state file refused it: the disk is full" in writer[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records), caplog.records


def test_a_bug_after_the_signal_is_stored_answers_stored_and_keeps_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    secret: str,
) -> None:
    """A bug in keeping the event book after the store took the signal. Before: answered
    503 ``not stored``, though it was; its resend was a duplicate, so the event stayed out
    of the book (and out of the cap) until a restart."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    source = "def remember(events):\n    return {}['book']\n"
    buggy = _ours("scheduler._probe_remember", "<bug in the event book>", source, "remember")
    answers: list[httpx.Response] = []
    ids: list[set[str]] = []

    async def body() -> None:
        monkeypatch.setattr(d.signals, "_remember", buggy)
        answers.append(await _post(d, secret, "kept-1"))
        # the daemon's own clock: at wall time, months past its fake start, a price feed
        # never read counts as silent (the fail-safe's cap would be among the events)
        ids.append({e.id for e in d.signals.active_events(d.clock.time())})

    caplog.set_level(logging.ERROR, "gridsched")
    run_open(d, body)
    assert answers[0].status_code == 202, answers[0].text
    assert ids == [{"kept-1"}], ids
    lines = [r for r in caplog.records if "event book" in r.getMessage()]
    assert lines and "KeyError: 'book'" in lines[0].getMessage(), caplog.records
    assert lines[0].exc_info is not None


# -- the fleet worker process ---------------------------------------------------------------------


def test_a_fleet_worker_logs_a_bugs_traceback_once_and_a_device_fault_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: anything but an OSError (a device's refusal raised past the fleet, a bug)
    logged a traceback at every request: a bug in a sweep, one every poll."""
    from adapters.fleet_worker import Worker

    sent: list[tuple[int, bool, object]] = []
    source = "async def run(op, arg):\n    return {}['power_w']\n"
    bug = _ours("adapters._probe_worker", "<bug in a worker>", source, "run")

    class NullWriter:
        async def drain(self) -> None:
            return None

    class Probe(Worker):
        def __init__(self, run: Any) -> None:  # only handle() and its answer are exercised
            self.writer = NullWriter()  # type: ignore[assignment]
            self._run = run  # type: ignore[method-assign]

        def send(self, req_id: int, ok: bool, result: object) -> None:
            sent.append((req_id, ok, result))

    async def refused(op: str, arg: Any) -> object:
        raise ControlRejected("m/1", "profileset refused: busy")

    async def main() -> None:
        await Probe(refused).handle(1, "apply", None)
        await Probe(bug).handle(2, "read", None)
        await Probe(bug).handle(3, "read", None)

    caplog.set_level(logging.ERROR, "gridsched.fleet")
    asyncio.run(main())
    assert [r[2] for r in sent] == [
        "apply: m/1: profileset refused: busy",
        "read: KeyError: 'power_w'",
        "read: KeyError: 'power_w'",
    ], sent
    assert _tracebacks(caplog, "fleet worker") == [False, True, False]


# -- the cap in force -----------------------------------------------------------------------------


def test_a_bug_computing_the_cap_keeps_the_fallback_and_logs_its_traceback_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a KeyError in the cap computation was enforced at the fall-back cap and
    named in ``cap_error``, but its traceback was never logged."""
    import scheduler.service.daemon.signals as signals_module
    from models.signals import EventType, GridEvent

    d, _ = parts_daemon(tmp_path, FakeClock())
    source = "def event_caps(config, grid, events, base_kw):\n    return {}['limit_kw']\n"
    buggy = _ours("scheduler._probe_caps", "<bug in the cap>", source, "event_caps")
    caps: list[float] = []

    async def body() -> None:
        now = d.clock.time()
        start = datetime.fromtimestamp(now - 60, UTC)
        ev = GridEvent(id="dr", type=EventType.CURTAIL, start=start, duration="1h", limit_kw=9)
        d.signals.book().put(ev)
        monkeypatch.setattr(signals_module, "event_caps", buggy)
        caps.append(d.cap_now()[0])
        caps.append(d.cap_now()[0])

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    assert caps == [d.config.daemon.failsafe_cap_kw] * 2, caps
    assert "KeyError: 'limit_kw'" in (d.signals.cap_error or ""), d.signals.cap_error
    assert [r.exc_info is not None for r in caplog.records].count(True) == 1, caplog.records


def test_a_stored_event_that_no_longer_validates_is_one_line_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored event a newer gridsched no longer takes (here a negative cap) is the stored
    data's fault, said by what pydantic refused. Before: logged with a traceback."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    ids: list[set[str]] = []

    async def body() -> None:
        now = d.clock.time()
        bad = {"id": "old", "type": "curtail", "limit_kw": -5, "_ends_at": now + 3600}
        bad["start"] = datetime.fromtimestamp(now - 60, UTC).isoformat()
        await d.store.add_signals([bad], "test", None, "{}", now + 3600)
        d.signals._book = None  # as on a restart: the book is read from the store
        ids.append({e.id for e in d.signals.active_events(now)})

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    assert ids == [set()], ids
    lines = [r for r in caplog.records if "no longer validates" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, caplog.records
    assert "old" in lines[0].getMessage() and "limit_kw" in lines[0].getMessage(), lines


# -- staging the coming wakes ---------------------------------------------------------------------


def test_a_bug_staging_the_coming_wakes_is_named_and_its_traceback_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every staging (each plan step) that met the same bug logged its traceback
    again, and the line did not say what failed."""
    d, _ = parts_daemon(tmp_path, FakeClock())
    source = "def stage_requests(now):\n    return {}['profile']\n"
    buggy = _ours("scheduler._probe_stage", "<bug in staging>", source, "stage_requests")

    async def body() -> None:
        monkeypatch.setattr(d.dispatcher, "stage_requests", buggy)
        for _ in range(2):
            assert await d.dispatcher.stage_ahead() == []

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    lines = [r for r in caplog.records if "staging the coming wakes" in r.getMessage()]
    assert [r.exc_info is not None for r in lines] == [True, False], lines
    assert all("KeyError: 'profile'" in r.getMessage() for r in lines), lines


# -- rendering /metrics ---------------------------------------------------------------------------


def test_a_bug_rendering_metrics_is_named_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: each failed rendering (one per scrape) logged its traceback again."""
    import socket

    from models.config_daemon import Daemon as DaemonConfig
    from scheduler.service.exporter import MetricsExporter

    source = "def render():\n    return {}['gridsched_site_import_watts']\n"
    buggy = _ours("scheduler._probe_render", "<bug in rendering>", source, "render")

    class Snapshot:
        render = staticmethod(buggy)
        latest = None

    loop = asyncio.new_event_loop()
    listener = socket.socket()
    try:
        exporter = MetricsExporter(Snapshot(), loop, listener, DaemonConfig(), 1.0)  # type: ignore[arg-type]
        caplog.set_level(logging.ERROR, "gridsched")
        exporter._send_rendering()
        exporter._send_rendering()
    finally:
        listener.close()
        loop.close()
    lines = [r for r in caplog.records if "rendering /metrics failed" in r.getMessage()]
    assert [r.exc_info is not None for r in lines] == [True, False], lines
    assert all("KeyError: 'gridsched_site_import_watts'" in r.getMessage() for r in lines)
