"""pyasic's logging, imported after the daemon configured its own (issue 16: one line per
device per change of state, in the daemon's words).

pyasic 0.79 configures the root logger when it is first imported
(``pyasic/logger/__init__.py``: ``logging.basicConfig`` and ``setLevel(WARNING)``), and the
adapters import it lazily, at the first connect: after the daemon's ``--log-level``. Each
case runs in a fresh interpreter, since pyasic's set-up happens once per process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.sitefile import device_classes, site_text

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_daemons_info_lines_survive_pyasics_import() -> None:
    out = _run(
        """
        import logging
        from scheduler.cli.run import configure_logging
        configure_logging("info")
        logging.getLogger("gridsched.daemon").info("before pyasic")
        import pyasic  # as discovery does at the first connect
        logging.getLogger("gridsched.daemon").info("after pyasic")
        logging.getLogger("scheduler.service.ven").info("the VEN after pyasic")
        logging.getLogger("gridsched.fleet").debug("a debug line at info")
        """
    )
    assert out.returncode == 0, out.stderr
    assert "before pyasic" in out.stderr
    assert "after pyasic" in out.stderr
    assert "the VEN after pyasic" in out.stderr
    assert "a debug line at info" not in out.stderr


def test_debug_asked_for_is_debug_after_pyasics_import() -> None:
    out = _run(
        """
        import logging
        from scheduler.cli.run import configure_logging
        configure_logging("debug")
        import pyasic
        logging.getLogger("gridsched.fleet").debug("a debug line")
        """
    )
    assert out.returncode == 0, out.stderr
    assert "a debug line" in out.stderr


def _hung_miner() -> tuple[socket.socket, str]:
    """A listener on port 4028 of a loopback address of its own that accepts and never
    answers (pyasic's discovery pings port 4028 only)."""
    for last in range(10, 250):
        host = f"127.61.0.{last}"
        s = socket.socket()
        try:
            s.bind((host, 4028))
        except OSError:
            s.close()
            continue
        s.listen(8)
        return s, host
    raise RuntimeError("no free loopback address on port 4028")


_PING = """
    import asyncio, logging
    from scheduler.cli.run import configure_logging
    configure_logging("{level}")
    from pyasic import settings
    from pyasic.miners.factory import MinerFactory
    settings.update("factory_get_timeout", 1)
    print("answer", asyncio.run(MinerFactory._socket_ping("{host}", "version")))
    logging.getLogger("gridsched.fleet").warning("our own line")
"""


def _ping_a_hung_miner(level: str) -> subprocess.CompletedProcess[str]:
    """pyasic's discovery ping of a miner that never answers, the daemon's log at ``level``."""
    listener, host = _hung_miner()
    try:
        return _run(_PING.format(level=level, host=host))
    finally:
        listener.close()


def test_pyasics_per_attempt_warnings_are_not_the_daemons_lines() -> None:
    out = _ping_a_hung_miner("info")
    assert out.returncode == 0, out.stderr
    assert "answer None" in out.stdout  # the hung miner was pinged, and pyasic gave up
    assert "our own line" in out.stderr
    assert "Socket ping timeout" not in out.stderr
    assert "factory.py" not in out.stderr  # nor pyasic's own multi-line format


def test_pyasics_warnings_show_at_debug_under_its_own_name() -> None:
    out = _ping_a_hung_miner("debug")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stderr.splitlines() if "Socket ping timeout" in x)
    assert " pyasic: " in line  # named for the library, in the daemon's format
    assert "our own line" in out.stderr


def test_fleet_status_on_a_hung_miner_prints_no_pyasic_lines(tmp_path: Path) -> None:
    """The command line (no ``--log-level``): pyasic is imported while the command's parser
    is built, and its multi-line warnings per discovery attempt were printed."""
    listener, host = _hung_miner()
    site = tmp_path / "site.toml"
    stock = {"name": "stock", "power_kw": 3.25, "hashrate_ths": 104}
    adapter = {"kind": "pyasic", "hosts": [host], "timeout_s": 3}
    one = {"name": "s19", "kind": "asic", "model": "S19j Pro", "count": 1}
    site.write_text(
        site_text("hung", devices=device_classes({**one, "modes": [stock], "adapter": adapter}))
    )
    try:
        out = _run(
            f"""
            import sys
            from scheduler.cli.main import main
            sys.exit(main(["fleet", "status", "--config", {str(site)!r}]))
            """
        )
    finally:
        listener.close()
    assert "no miner identified" in out.stdout  # the fleet's own line for it
    assert "Socket ping timeout" not in out.stderr
    assert "factory.py" not in out.stderr


def test_a_library_says_nothing_at_info_with_or_without_pyasic() -> None:
    """httpx logs every request at INFO ("HTTP Request: GET ..."): the price, hashprice
    and demand feeds, the VEN's polls and the serving engines' metrics would fill the
    journal on a site without pyasic, and vanish on one with it (pyasic's import set the
    root logger to WARNING). Libraries log from WARNING up below --log-level debug."""
    out = _run(
        """
        import http.server, logging, threading
        import httpx
        from scheduler.cli.run import configure_logging

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        configure_logging("info")
        httpx.get(f"http://127.0.0.1:{srv.server_port}/feed")
        logging.getLogger("gridsched.feeds").info("our own line")
        srv.shutdown()
        """
    )
    assert out.returncode == 0, out.stderr
    assert "our own line" in out.stderr
    assert "HTTP Request" not in out.stderr
