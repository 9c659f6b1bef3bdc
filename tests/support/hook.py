"""The serving layer's capacity hook (``serving_hook_url``) as the tests stand it up: a real
HTTP server on 127.0.0.1 that answers every POST with 204 and hands its JSON body to the
test."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


@contextlib.contextmanager
def capacity_hook(on_post: Callable[[dict[str, Any]], object]) -> Iterator[str]:
    """Served until the block ends: its ``/capacity`` URL. Each POST's body goes to
    ``on_post`` before it is answered."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            on_post(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/capacity"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
