"""Device, feed and store errors in words wherever an operator reads them (``fleet status``,
/v1/status, log lines), never a Python class name or repr: each error here comes from a
real part (a loopback port nobody listens on, a real SQLite file, a real HTTP server); a
bug (KeyError) keeps its name."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from adapters import webdigest
from adapters.base import DeviceUnreachable
from adapters.fleet_health import HealthBook
from adapters.neterrors import describe
from adapters.outcomes import DeviceStatus
from models.site import parse_site
from scheduler.service.daemon import Daemon
from tests.conftest import site_dict
from tests.support.httpserver import loopback_http
from tests.support.ports import closed_port
from tests.support.words import assert_no_python_names

_no_python_names = assert_no_python_names  # the shared list (tests/support/words.py)


# -- firmware adapters -----------------------------------------------------------------------


def test_a_web_request_to_a_closed_port_is_said_with_host_and_port() -> None:
    """Auradine, Epic and Antminer web requests (webdigest): before, the operator read
    ``ConnectionRefusedError: [Errno 111] Connect call failed ...``."""
    port = closed_port()

    async def main() -> str:
        client = webdigest.DigestClient("127.0.0.1", port, "", "")
        with pytest.raises(webdigest.Unreachable) as err:
            await client.request("GET", "/cgi-bin/summary.cgi", None)
        return str(err.value)

    text = asyncio.run(main())
    assert f"127.0.0.1:{port}" in text and "connection refused" in text, text
    assert "ECONNREFUSED" in text  # kept for a search
    _no_python_names(text)


def test_a_web_answer_cut_by_a_reset_is_said_in_words() -> None:
    """The connection ends with an OS error before any answer: its meaning, not its class."""
    got: asyncio.Future[webdigest.Reply]

    async def main() -> str:
        nonlocal got
        got = asyncio.get_running_loop().create_future()
        ex = webdigest._Exchange(b"", got, None)
        ex.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        with pytest.raises(webdigest.Unreachable) as err:
            await got
        return str(err.value)

    text = asyncio.run(main())
    assert "reset by the other end" in text and "ECONNRESET" in text, text
    _no_python_names(text)


def test_a_whatsminer_that_refuses_the_connection_is_said_with_host_and_port() -> None:
    from adapters.whatsminer import _exchange

    port = closed_port()

    async def main() -> str:
        with pytest.raises(DeviceUnreachable) as err:
            await _exchange("wm/1", "127.0.0.1", port, b"{}")
        return str(err.value)

    text = asyncio.run(main())
    assert text.startswith("wm/1:") and f"127.0.0.1:{port}" in text, text
    assert "connection refused" in text, text
    _no_python_names(text)


def test_a_grpc_connection_lost_and_an_unreadable_frame_are_said_in_words() -> None:
    from grpclib.exceptions import StreamTerminatedError

    from adapters.grpc_wire import Connection

    async def main() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        lost = Connection()
        call = lost.calls.setdefault(1, _call(loop))
        lost.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        with pytest.raises(StreamTerminatedError) as gone:
            await call.done
        bad = Connection()
        call = bad.calls.setdefault(1, _call(loop))
        # a HEADERS frame (type 1, END_HEADERS) whose block is one byte of an index that
        # the HPACK table does not have
        bad.data_received(b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\xff")
        with pytest.raises(StreamTerminatedError) as unreadable:
            await call.done
        return str(gone.value), str(unreadable.value)

    lost, unreadable = asyncio.run(main())
    assert lost.startswith("Connection lost") and "reset by the other end" in lost, lost
    _no_python_names(lost)
    assert "cannot be read" in unreadable and "HEADERS" in unreadable, unreadable
    assert "Error" not in unreadable and "<memory" not in unreadable, unreadable


def _call(loop: asyncio.AbstractEventLoop) -> Any:
    from adapters.grpc_wire import _Call

    return _Call(loop.create_future(), 65535)


def test_an_antminer_config_without_a_field_is_said_by_the_field() -> None:
    """pyasic's MinerConfig.from_am_modern on a configuration that lacks a field: before,
    ``configuration unusable: KeyError('user')``."""
    from adapters.antminer import SLEEP, set_work_mode
    from adapters.base import BadReply

    # a pool without its worker name, as pyasic's PoolConfig.from_am_modern reads it
    conf = {"pools": [{"url": "stratum+tcp://pool:3333"}], "bitmain-work-mode": "0"}

    class Web:  # the miner's answer as pyasic returns it; no miner needed to parse it
        async def get_miner_conf(self) -> dict[str, Any]:
            return conf

    class Miner:
        web = Web()

    async def main() -> str:
        with pytest.raises(BadReply) as err:
            await set_work_mode("s19/1", Miner(), SLEEP, False, 5.0)
        return str(err.value)

    text = asyncio.run(main())
    assert "configuration unusable" in text and "no 'user' field" in text, text
    assert "KeyError" not in text, text


# -- fleet -------------------------------------------------------------------------------------


def test_fleet_health_says_an_os_error_in_words_and_keeps_a_bugs_name() -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError) as refused, socket.socket() as s:
        s.connect(("127.0.0.1", port))
    book = HealthBook()
    st = DeviceStatus("gpu/1", "gpu")
    text = book.fail(st, refused.value)
    assert text.startswith("gpu/1: connection refused"), text
    _no_python_names(text)
    assert st.last_error == text
    assert book.fail(st, KeyError("power_w")) == "gpu/1: KeyError: 'power_w'"


def test_a_fleet_worker_answers_a_failed_request_in_words() -> None:
    from adapters.fleet_worker import Worker

    sent: list[tuple[int, bool, object]] = []

    class Probe(Worker):
        def __init__(self) -> None:  # only handle() and its answer are exercised
            self.writer = _NullWriter()  # type: ignore[assignment]

        async def _run(self, op: str, arg: Any) -> object:
            socket.create_connection(("127.0.0.1", closed_port()), timeout=5)
            return None

        def send(self, req_id: int, ok: bool, result: object) -> None:
            sent.append((req_id, ok, result))

    asyncio.run(Probe().handle(7, "read", None))
    (req_id, ok, result) = sent[0]
    assert req_id == 7 and not ok and str(result).startswith("read: connection refused"), result
    _no_python_names(str(result))


class _NullWriter:
    async def drain(self) -> None:
        return None


def test_an_orphan_library_task_is_logged_in_words(caplog: pytest.LogCaptureFixture) -> None:
    from adapters.aio import _quiet_orphans

    async def probe() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(probe())
        await asyncio.wait({task})
        _quiet_orphans(loop, {"exception": task.exception(), "task": task})
        _quiet_orphans(loop, {"message": "Task was destroyed but it is pending!"})

    caplog.set_level(logging.WARNING, "gridsched.fleet")
    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert "connection refused" in lines[0] and "probe" in lines[0], lines
    _no_python_names(lines[0])
    assert "Task was destroyed" in lines[1] and "NoneType" not in lines[1], lines


# -- daemon: feeds, store, background tasks ----------------------------------------------------


def _daemon(tmp_path: Path, daemon: dict[str, Any]) -> Daemon:
    d = site_dict()
    d["daemon"] = daemon
    return Daemon(parse_site(d, "x.toml", str(tmp_path)), tmp_path / "s.db")


@pytest.fixture
def http_404() -> Iterator[str]:
    class NotHere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    with loopback_http(NotHere) as url:
        yield url + "/prices.csv"


def test_price_feed_errors_in_status_say_the_feed_and_what_happened(
    tmp_path: Path, http_404: str
) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/prices.csv"
    d = _daemon(tmp_path, {"price_feed": {"kind": "http", "url": url, "column": "price"}})
    asyncio.run(d.feeds.refresh_prices())
    text = d.feeds.price_error or ""
    assert url in text and "connection refused" in text, text
    _no_python_names(text)

    d = _daemon(tmp_path, {"price_feed": {"kind": "http", "url": http_404, "column": "price"}})
    asyncio.run(d.feeds.refresh_prices())
    text = d.feeds.price_error or ""
    assert http_404 in text and "HTTP 404" in text, text
    _no_python_names(text)

    cmd = ["/nonexistent/price-script"]
    d = _daemon(tmp_path, {"price_feed": {"kind": "command", "command": cmd, "column": "p"}})
    asyncio.run(d.feeds.refresh_prices())
    text = d.feeds.price_error or ""
    assert "/nonexistent/price-script" in text and "No such file" in text, text
    _no_python_names(text)


def test_a_hashprice_file_that_is_gone_is_said_with_its_path(tmp_path: Path) -> None:
    feed = {"kind": "file", "path": "hp.json", "format": "json", "key": "hashprice"}
    d = _daemon(tmp_path, {"hashprice_feed": feed})
    asyncio.run(d.feeds.refresh_hashprice())
    text = d.feeds.hashprice_error or ""
    assert str(tmp_path / "hp.json") in text and "No such file" in text, text
    assert "ENOENT" in text
    _no_python_names(text)


def _real_sqlite_errors(tmp_path: Path) -> dict[str, sqlite3.Error]:
    """SQLite's own errors, each from a real file."""
    db = tmp_path / "e.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    errors: dict[str, sqlite3.Error] = {}
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as err:
        ro.execute("INSERT INTO t VALUES (1)")
    errors["read-only"] = err.value
    full = sqlite3.connect(tmp_path / "full.db")
    full.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.Error) as err:
        full.execute("CREATE TABLE u (x)")
        full.execute("INSERT INTO u VALUES (zeroblob(100000))")
    errors["full"] = err.value
    con.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.Error) as err:
        sqlite3.connect(db, timeout=0).execute("SELECT * FROM t")
    errors["locked"] = err.value
    con.rollback()
    (tmp_path / "bad.db").write_bytes(b"not a database" * 512)
    with pytest.raises(sqlite3.Error) as err:
        sqlite3.connect(tmp_path / "bad.db").execute("SELECT * FROM t")
    errors["corrupt"] = err.value
    for c in (con, ro, full):
        c.close()
    return errors


def test_store_errors_say_what_the_store_refused(tmp_path: Path) -> None:
    words = {k: describe(e) for k, e in _real_sqlite_errors(tmp_path).items()}
    assert "disk is full" in words["full"] and "SQLITE_FULL" in words["full"], words
    assert "read-only" in words["read-only"] and "SQLITE_READONLY" in words["read-only"]
    assert "locked" in words["locked"] and "SQLITE_BUSY" in words["locked"], words
    assert "corrupt" in words["corrupt"] and "SQLITE_NOTADB" in words["corrupt"], words
    for text in words.values():
        _no_python_names(text)


def test_a_failed_signal_write_is_logged_by_what_the_store_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from scheduler.service.daemon.signals import _log_write_failure

    full = _real_sqlite_errors(tmp_path)["full"]

    async def main() -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_exception(full)
        _log_write_failure(fut)

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    asyncio.run(main())
    line = next(r.getMessage() for r in caplog.records if "signal write" in r.getMessage())
    assert "disk is full" in line and "SQLITE_FULL" in line, line
    _no_python_names(line)


def test_a_background_task_failing_on_the_store_is_one_line_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _daemon(tmp_path, {})
    caplog.set_level(logging.ERROR, "gridsched.daemon")
    d.tasks.failed("record", _real_sqlite_errors(tmp_path)["read-only"])
    d.tasks.failed("plan", KeyError("power_w"))
    lines = [(r.getMessage(), r.exc_info) for r in caplog.records]
    assert "read-only" in lines[0][0] and lines[0][1] is None, lines
    _no_python_names(lines[0][0])
    assert lines[1][1] is not None  # a bug keeps its traceback


def test_a_failed_re_plan_is_said_without_the_exceptions_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """/v1/status's plan error: before, ``SolverError: HiGHS: out of memory``; a solver
    failure is one log line, a bug (KeyError) keeps its name and its traceback."""
    from scheduler.planner.solvers import SolverError
    from tests.support.clock import FakeClock
    from tests.support.memfleet import run_open
    from tests.test_daemon_parts import _daemon as parts_daemon

    d, _ = parts_daemon(tmp_path, FakeClock(), hashprice=1.0)
    raised: list[Exception] = [SolverError("HiGHS: out of memory"), KeyError("cap_kw")]

    def broken(*a: Any, **k: Any) -> Any:  # the solver cannot be made to fail for real
        raise raised.pop(0)

    async def body() -> None:
        monkeypatch.setattr(d.planning.planner, "plan", broken)
        assert await d.replan("test") is None
        assert d.plans.error == "HiGHS: out of memory", d.plans.error
        assert await d.replan("test") is None
        assert d.plans.error == "KeyError: 'cap_kw'", d.plans.error

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    run_open(d, body)
    failed = [r for r in caplog.records if "re-plan (test) failed" in r.getMessage()]
    assert [r.exc_info is not None for r in failed] == [False, True], failed
    assert "SolverError" not in failed[0].getMessage()


def test_a_fleet_worker_lost_after_an_unreadable_frame_says_what_was_wrong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: ``fleet worker 0 ... after an unreadable frame (UnpicklingError)``."""
    from adapters.fleet_procs import WorkerProc
    from adapters.fleet_wire import HEADER

    lost: list[str] = []

    async def on_lost(what: str) -> None:
        lost.append(what)

    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(HEADER.pack(5) + b"garba")  # a frame whose body is no pickle
        reader.feed_eof()
        await WorkerProc(0, [], lambda sync: None, on_lost)._read(reader)

    caplog.set_level(logging.ERROR, "gridsched.fleet")
    asyncio.run(main())
    assert lost and "unreadable frame (pickle data was truncated)" in lost[0], lost
    assert "Error" not in lost[0], lost
