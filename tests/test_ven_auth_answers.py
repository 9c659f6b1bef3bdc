"""What the VEN says when the VTN's token endpoint answers badly: the call named, the
answer shown, and a hint that fits (the aggregator's walk, session 24, N1 and N2). A real
HTTP server on loopback answers."""

from __future__ import annotations

import asyncio
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from scheduler.service.ven_auth import AuthError, TokenSource
from tests.support.httpserver import loopback_http


def _serving(
    status: int, body: bytes, path_ok: str = "/auth/token"
) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /auth/server
            self.send_response(status if self.path == path_ok else 200)
            self.end_headers()
            self.wfile.write(body if self.path == path_ok else b'{"tokenURL": ""}')

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    return H


def _error(status: int, body: bytes, discover: bool = False, path: str = "/auth/token") -> str:
    with loopback_http(_serving(status, body, path)) as url:

        async def go() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                token_url = None if discover else f"{url}/auth/token"
                await TokenSource(http, url, "ven-1", "s", token_url=token_url).token()

        with pytest.raises(AuthError) as exc:
            asyncio.run(go())
    return str(exc.value)


def test_a_token_answer_that_is_not_json_names_the_call() -> None:
    """N1: 200 with malformed JSON was "Expecting property name enclosed in double quotes:
    line 1 column 2 (char 1)", naming neither the call nor the answer."""
    said = _error(200, b"{oops")
    assert "POST http" in said and "/auth/token" in said and "not JSON" in said, said


def test_a_server_error_is_not_blamed_on_the_credentials() -> None:
    """N2: HTTP 500 said "(check the client id and secret the utility issued)", which
    misleads for the VTN's own failure."""
    said = _error(500, b"boom")
    assert "HTTP 500" in said and "client id" not in said and "the VTN's" in said, said
    assert "client id and secret" in _error(401, b'{"error": "invalid_client"}')


def test_a_discovery_answer_that_is_not_json_names_the_call() -> None:
    said = _error(200, b"<html>", discover=True, path="/auth/server")
    assert "GET http" in said and "/auth/server" in said and "not JSON" in said, said
