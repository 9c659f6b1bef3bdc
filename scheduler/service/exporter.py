"""``/metrics`` on a listener of its own (``[metrics] listen``), answered from threads so
that a busy event loop cannot hold a scrape.

The daemon's state is read and rendered on its event loop only (the collector walks dicts
the loop changes; one render on the loop is one instant). A scrape here asks the loop for a
rendering of the state now and waits up to ``[metrics] render_wait_s`` for it; when the loop
is too busy to give one in time (a sweep of thousands of devices, a curtail's commands),
the scrape is answered with the last rendering, and says so: its age in
``gridsched_metrics_snapshot_age_seconds`` and ``gridsched_metrics_stale_scrapes_total``.
A loop that is stuck for good is seen as an age that grows, not as a scrape that times out.

The same read check as the API's (``[daemon] require_read_token``, a bearer token from
``GRIDSCHED_READ_TOKENS``; the per-client rate limit), the same bound on open connections
(``max_connections``: past it, 503) and a deadline on reading a request
(``request_timeout_s``). One request per connection (HTTP/1.0, as prometheus_client's own
exporter thread answers). Plain HTTP: bind it to loopback or a management network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from scheduler.service.metrics import Rendering, Snapshot
from scheduler.service.security import (
    AuthError,
    RateLimiter,
    SecretConfigError,
    check_bearer,
    read_secret_list,
)

if TYPE_CHECKING:
    from models.site import Daemon as DaemonConfig

log = logging.getLogger("gridsched.metrics")


class MetricsExporter:
    """The listener, its thread, and the hand-over of renderings from the loop."""

    def __init__(
        self,
        snapshot: Snapshot,
        loop: asyncio.AbstractEventLoop,
        address: tuple[str, int],
        cfg: DaemonConfig,
        render_wait_s: float,
    ) -> None:
        self.snapshot = snapshot
        self.loop = loop
        self.address = address
        self.cfg = cfg
        self.render_wait_s = render_wait_s
        self.limiter = RateLimiter(rate=cfg.rate_per_s, burst=2 * cfg.rate_per_s)
        self._lock = threading.Lock()  # the limiter, the pending render, the stale count
        self._pending: threading.Event | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the OS's choice for port 0)."""
        if self._server is None:
            raise RuntimeError("the metrics listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Render once (on the loop: the caller's), bind, and serve from a thread."""
        self.snapshot.render()  # a scrape never finds nothing to serve
        self._server = _Server(self.address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="gridsched-metrics",
            daemon=True,
        )
        self._thread.start()
        host, port = self.address[0], self.port
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # serve_forever returns within its poll interval
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    # -- the loop's side ----------------------------------------------------------------------

    def _render_on_loop(self, done: threading.Event) -> None:
        try:
            self.snapshot.render()
        except Exception:  # the last rendering is served, its age growing; said in the log
            log.exception("rendering /metrics failed; scrapes get the last rendering")
        finally:
            with self._lock:
                if self._pending is done:
                    self._pending = None
            done.set()

    # -- the scrape's side (a handler thread) ---------------------------------------------------

    def check(self, client: str, authorization: str | None) -> None:
        """The API's read check: the rate limit, then the read token when asked for."""
        with self._lock:
            allowed = self.limiter.allow(client)
        if not allowed:
            raise AuthError(
                429, f"more than {self.cfg.rate_per_s:g} requests/s from {client}; slow down"
            )
        if self.cfg.require_read_token:
            tokens = read_secret_list("GRIDSCHED_READ_TOKENS", "GRIDSCHED_READ_TOKENS_FILE")
            check_bearer(tokens, authorization, "read access")

    def current(self) -> Rendering | None:
        """A rendering of the state now when the loop gives one within ``render_wait_s``;
        the last one otherwise (counted stale). Concurrent scrapes share one request."""
        before = self.snapshot.latest
        with self._lock:
            done = self._pending
            if done is None:
                done = self._pending = threading.Event()
                try:
                    self.loop.call_soon_threadsafe(self._render_on_loop, done)
                except RuntimeError:  # the loop is closed: the daemon is stopping
                    self._pending = None
                    done.set()
        done.wait(self.render_wait_s)
        latest = self.snapshot.latest
        if latest is before or not done.is_set():
            with self._lock:
                self.snapshot.stale_scrapes += 1
        return latest


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler left in a slow client's read never holds up a stop

    def __init__(self, address: tuple[str, int], exporter: MetricsExporter) -> None:
        self.exporter = exporter
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(exporter.cfg.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # uvicorn's limit_concurrency answer
            with contextlib.suppress(OSError):
                request.sendall(_plain(503, b"Service Unavailable"))
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


def _plain(status: int, reason: bytes) -> bytes:
    return b"HTTP/1.0 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "gridsched"

    def setup(self) -> None:
        super().setup()
        # the deadline on each read of the request and each write of the answer
        self.connection.settimeout(self.server.exporter.cfg.request_timeout_s)

    def do_GET(self) -> None:  # http.server's name
        exporter = self.server.exporter
        if self.path.split("?", 1)[0] != "/metrics":
            self._error(404, f"{self.path[:100]!r} is not served here; GET /metrics")
            return
        try:
            exporter.check(self.client_address[0], self.headers.get("authorization"))
        except AuthError as exc:
            self._error(exc.status, str(exc))
            return
        except SecretConfigError as exc:
            log.error("secret configuration: %s", exc)
            self._error(503, f"the daemon's secret configuration cannot be used: {exc}")
            return
        rendering = exporter.current()
        if rendering is None:  # start() renders first: only a listener used before it
            self._error(503, "no rendering of the daemon's state yet")
            return
        body = rendering.body + exporter.snapshot.tail(rendering)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
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
