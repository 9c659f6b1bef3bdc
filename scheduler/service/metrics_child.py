"""The process that answers ``[metrics] listen`` (started by
:class:`scheduler.service.exporter.MetricsExporter`): HTTP in a process of its own, so that
nothing in the daemon's process (its loop's CPU-bound stretches, a full garbage collection,
a C call that keeps the GIL) holds a scrape.

It owns no state of the daemon: on a scrape it asks the daemon for a rendering (one byte on
a socket pair) and waits up to ``render_wait_s`` for it; otherwise it answers with the last
rendering received, its age said in ``gridsched_metrics_snapshot_age_seconds`` and counted
in ``gridsched_metrics_stale_scrapes_total``. The read check is the API's (the rate limit
per client, the bearer token from ``GRIDSCHED_READ_TOKENS`` when ``require_read_token``),
with ``max_connections`` (past it: 503) and ``request_timeout_s`` per read. One request per
connection (HTTP/1.0). It exits when the daemon's end of the socket pair closes.

    python -m scheduler.service.metrics_child LISTEN_FD PAIR_FD SETTINGS_JSON
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scheduler.service.security import (
    AuthError,
    RateLimiter,
    SecretConfigError,
    check_bearer,
    read_secret_list,
)

log = logging.getLogger("gridsched.metrics")

#: a rendering on the socket pair: its length, then the exposition text
HEADER = struct.Struct("!I")
ASK = b"?"


def tail_text(age_s: float, stale: int) -> bytes:
    """The families said at serve time, after a rendering (the API's /metrics adds them too,
    so that both endpoints give the same series)."""
    return (
        "# HELP gridsched_metrics_snapshot_age_seconds Seconds since the daemon's loop last "
        "confirmed the state this scrape shows (about 0 unless the loop was too busy to "
        "render it within [metrics] render_wait_s)\n"
        "# TYPE gridsched_metrics_snapshot_age_seconds gauge\n"
        f"gridsched_metrics_snapshot_age_seconds {max(0.0, age_s):.6f}\n"
        "# HELP gridsched_metrics_stale_scrapes_total Scrapes answered with an earlier "
        "rendering: the loop did not render in time\n"
        "# TYPE gridsched_metrics_stale_scrapes_total counter\n"
        f"gridsched_metrics_stale_scrapes_total {float(stale)}\n"
    ).encode()


@dataclass(frozen=True)
class Settings:
    render_wait_s: float
    require_read_token: bool
    rate_per_s: float
    max_connections: int
    request_timeout_s: float
    content_type: str  # prometheus_client's, as the API's /metrics sends it


@dataclass(frozen=True)
class Received:
    body: bytes
    at_s: float  # time.monotonic() in this process


class Renderings:
    """The daemon's renderings as they arrive, and the asking for a fresh one."""

    def __init__(self, pair: socket.socket, render_wait_s: float) -> None:
        self.pair = pair
        self.render_wait_s = render_wait_s
        self.latest: Received | None = None
        self.stale = 0
        self._lock = threading.Lock()
        self._pending: threading.Event | None = None
        self._asked_at = 0.0
        self.first = threading.Event()  # the daemon sends one at once

    def receive(self) -> None:
        """The reader thread: each rendering as it comes; the process ends with the pair."""
        try:
            while True:
                (size,) = HEADER.unpack(_exactly(self.pair, HEADER.size))
                body = _exactly(self.pair, size)
                with self._lock:
                    self.latest = Received(body, time.monotonic())
                    done, self._pending = self._pending, None
                self.first.set()
                if done is not None:
                    done.set()
        except (OSError, EOFError):
            pass
        os._exit(0)  # the daemon is gone or stopping: nothing left to serve

    def current(self) -> Received | None:
        """A rendering of the state now if the daemon gives one within ``render_wait_s``;
        the last one otherwise (counted stale). Concurrent scrapes share one request, and
        one that finds an earlier request already unanswered past ``render_wait_s`` does
        not wait again: the loop is known busy, and its answer still comes for the next."""
        now = time.monotonic()
        with self._lock:
            before = self.latest
            done, wait_s = self._pending, self.render_wait_s
            if done is None:
                done = self._pending = threading.Event()
                self._asked_at = now
                try:
                    self.pair.sendall(ASK)
                except OSError:
                    self._pending = None
                    done.set()
            else:
                wait_s = max(0.0, self._asked_at + self.render_wait_s - now)
        got = done.wait(wait_s)
        with self._lock:
            latest = self.latest
            if not got or latest is before:
                self.stale += 1
        return latest


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler in a slow client's read never holds up the exit

    def __init__(self, listener: socket.socket, renderings: Renderings, cfg: Settings) -> None:
        self.renderings = renderings
        self.cfg = cfg
        self.limiter = RateLimiter(rate=cfg.rate_per_s, burst=2 * cfg.rate_per_s)
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(cfg.max_connections)
        self.address_family = listener.family
        super().__init__(listener.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener  # bound and listening in the daemon: its errors said there

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # as uvicorn's limit_concurrency
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def check(self, client: str, authorization: str | None) -> None:
        """The API's read check: the rate limit, then the read token when asked for."""
        with self.lock:
            allowed = self.limiter.allow(client)
        if not allowed:
            raise AuthError(
                429, f"more than {self.cfg.rate_per_s:g} requests/s from {client}; slow down"
            )
        if self.cfg.require_read_token:
            tokens = read_secret_list("GRIDSCHED_READ_TOKENS", "GRIDSCHED_READ_TOKENS_FILE")
            check_bearer(tokens, authorization, "read access")


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"
    server_version = "gridsched"

    def setup(self) -> None:
        super().setup()
        # the deadline on each read of the request and each write of the answer
        self.connection.settimeout(self.server.cfg.request_timeout_s)

    def do_GET(self) -> None:  # http.server's name
        if self.path.split("?", 1)[0] != "/metrics":
            self._error(404, f"{self.path[:100]!r} is not served here; GET /metrics")
            return
        try:
            self.server.check(self.client_address[0], self.headers.get("authorization"))
        except AuthError as exc:
            self._error(exc.status, str(exc))
            return
        except SecretConfigError as exc:
            self._error(503, f"the daemon's secret configuration cannot be used: {exc}")
            return
        renderings = self.server.renderings
        got = renderings.current()
        if got is None:  # the daemon sends one before the first scrape can come
            self._error(503, "no rendering of the daemon's state yet")
            return
        body = got.body + tail_text(time.monotonic() - got.at_s, renderings.stale)
        self.send_response(200)
        self.send_header("Content-Type", self.server.cfg.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message, "detail": []}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


def main(argv: list[str]) -> None:
    listen_fd, pair_fd, settings = int(argv[0]), int(argv[1]), json.loads(argv[2])
    cfg = Settings(**settings)
    listener = socket.socket(fileno=listen_fd)
    pair = socket.socket(fileno=pair_fd)
    renderings = Renderings(pair, cfg.render_wait_s)
    threading.Thread(target=renderings.receive, name="renderings", daemon=True).start()
    renderings.first.wait()  # scrapes wait in the listen backlog until there is one to serve
    Server(listener, renderings, cfg).serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
