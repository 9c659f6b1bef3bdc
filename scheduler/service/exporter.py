"""``/metrics`` on a listener of its own (``[metrics] listen``), answered by a process of its
own so that nothing in the daemon's process can hold a scrape: not the event loop's
CPU-bound stretches (a sweep of thousands of devices, a curtail's commands), and not what
holds the GIL against a thread too (a full garbage collection took 0.7-1.3 s at the example
site's size on a loaded host; ``benchmarks/metrics_scrape.py``).

The daemon's state is read and rendered on its event loop only (the collector walks dicts the
loop changes; one render on the loop is one instant). The listener process
(:mod:`scheduler.service.metrics_child`) asks for a rendering on each scrape, one byte on a
socket pair; the loop renders (or finds the last rendering still current) and sends it back.
When the loop does not answer within ``[metrics] render_wait_s``, the scrape is answered with
the last rendering and says so (``gridsched_metrics_snapshot_age_seconds``,
``gridsched_metrics_stale_scrapes_total``): a stuck loop shows as an age that grows, not as
a scrape that times out.

The daemon binds the listening socket (a port in use is said at start, with the setting)
and hands it to the process; a process that dies is started again on the same socket.
Plain HTTP: bind it to loopback or a management network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from adapters.faults import in_words, traceback_once
from scheduler.service.metrics import Snapshot
from scheduler.service.metrics_child import ASK, HEADER

if TYPE_CHECKING:
    from models.site import Daemon as DaemonConfig

log = logging.getLogger("gridsched.metrics")


def bind(address: tuple[str, int]) -> socket.socket:
    """The listening socket for ``address`` (host, port); OSError when it cannot be had."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


class MetricsExporter:
    """The listening socket, the listener process, and the loop's side of the socket pair."""

    restart_after_s = 5.0  # a listener process that died is started again after this

    def __init__(
        self,
        snapshot: Snapshot,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        cfg: DaemonConfig,
        render_wait_s: float,
    ) -> None:
        self.snapshot = snapshot
        self.loop = loop
        self._listener: socket.socket | None = listener  # bound by bind(); closed at stop
        self.settings = json.dumps(
            {
                "render_wait_s": render_wait_s,
                "require_read_token": cfg.require_read_token,
                "rate_per_s": cfg.rate_per_s,
                "max_connections": cfg.max_connections,
                "request_timeout_s": cfg.request_timeout_s,
                "content_type": CONTENT_TYPE_LATEST,
            }
        )
        self.port = 0  # the port listened on (the OS's choice for port 0), once started
        self.restarts = 0
        self._pair: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sending = False
        self._again = False
        self._stopping = False

    def start(self) -> None:
        """Render once and start the listener process on the bound socket."""
        if self._listener is None:
            raise RuntimeError("the metrics listener was stopped")
        self.snapshot.render()  # a scrape never finds nothing to serve
        host, port = self._listener.getsockname()[:2]
        self.port = int(port)
        self._spawn()
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics on http://%s:%d/metrics (pid %d)", shown, self.port, self.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def _spawn(self) -> None:
        if self._listener is None:
            raise RuntimeError("the metrics listener is not bound: start() binds it")
        mine, theirs = socket.socketpair()
        fds = (self._listener.fileno(), theirs.fileno())
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler.service.metrics_child",
                 str(fds[0]), str(fds[1]), self.settings],
                pass_fds=fds, stdin=subprocess.DEVNULL, env=os.environ.copy(),
            )  # fmt: skip
        finally:
            theirs.close()
        mine.setblocking(False)
        self._pair = mine
        self.loop.add_reader(mine.fileno(), self._on_ask)
        self._send_rendering()  # the first, before any scrape asks

    def stop(self) -> None:
        self._stopping = True
        self._close_pair()  # the process sees the pair close and exits
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _close_pair(self) -> None:
        if self._pair is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._pair.fileno())
            self._pair.close()
            self._pair = None

    # -- on the loop -----------------------------------------------------------------------------

    def _on_ask(self) -> None:
        if self._pair is None:
            return
        try:
            data = self._pair.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
        elif ASK in data:
            if self._sending:
                self._again = True  # one rendering in flight at a time; then the next
            else:
                self._send_rendering()

    def _send_rendering(self) -> None:
        try:
            self.snapshot.render()
        except Exception as exc:  # the process serves the last rendering, its age growing
            log.error(
                "rendering /metrics failed; scrapes get the last rendering: %s",
                in_words(exc),
                exc_info=traceback_once(exc),  # a bug: its traceback once per place
            )
            return
        latest, pair = self.snapshot.latest, self._pair
        if latest is None or pair is None:
            return
        self._sending = True
        frame = HEADER.pack(len(latest.body)) + latest.body
        task = self.loop.create_task(self.loop.sock_sendall(pair, frame))
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending = False
        if task.cancelled() or task.exception() is not None:
            return  # the pair closed: _gone() or stop() says what comes next
        if self._again:
            self._again = False
            self._send_rendering()

    def _gone(self) -> None:
        self._close_pair()
        if self._stopping:
            return
        code = self._proc.poll() if self._proc is not None else None
        log.error(
            "the /metrics listener process ended (exit code %s); starting it again in %g s",
            code, self.restart_after_s,
        )  # fmt: skip
        if self._proc is not None:
            if code is None:
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1)  # reaped: it has exited, or been killed just now
        self.restarts += 1
        self.loop.call_later(self.restart_after_s, self._restart)

    def _restart(self) -> None:
        if not self._stopping and self._listener is not None and self._pair is None:
            self._sending = self._again = False
            self._spawn()
