"""A real HTTP server on 127.0.0.1, on a port the OS picks, in a thread of its own: what the
tests stand up in place of a price feed, a serving layer's capacity hook or a signal
receiver. The test gives the request handler (what is answered is the test's); the server
is shut down and closed when the block ends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer


@contextlib.contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served until the block ends: the server's URL, ``http://127.0.0.1:PORT``."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
