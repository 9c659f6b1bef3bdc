"""The serving layer's capacity hook (``serving_hook_url``) as the tests stand it up: a real
HTTP server on 127.0.0.1 (``loopback_http``) that answers every POST with 204 and hands its
JSON body to the test."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.httpserver import loopback_http


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

    with loopback_http(Handler) as url:
        yield url + "/capacity"
